//! The skeleton every service runs: listeners bound up front (port 0 in tests), NATS connected,
//! metrics registry and readiness shared, then gRPC, ops HTTP, stream provisioning, consumers and
//! the outbox relay as one [`Tasks`] set with one drain deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use async_nats::jetstream;
use jetmart_runtime::catalog::StreamSpec;
use jetmart_runtime::consumer::{ConsumerRunner, Processor, RunnerError};
use jetmart_runtime::metrics::RuntimeMetrics;
use jetmart_runtime::outbox::{Relay, RelayConfig};
use jetmart_runtime::provision::{self, StreamSettings};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::CommonArgs;
use crate::ops::Readiness;
use crate::tasks::{ServiceError, Tasks};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Nats(#[from] crate::nats::NatsError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

type ConsumerTask = Box<
    dyn FnOnce(CancellationToken) -> Pin<Box<dyn Future<Output = Result<(), RunnerError>> + Send>>
        + Send,
>;

/// A service between start-up and run: connections made, listeners bound.
pub struct Service {
    pub name: &'static str,
    pub common: CommonArgs,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub metrics: Arc<RuntimeMetrics>,
    pub registry: Registry,
    pub readiness: Readiness,
    pool: Option<sqlx::PgPool>,
    grpc: TcpListener,
    http: TcpListener,
    streams: Vec<StreamSpec>,
    consumers: Vec<ConsumerTask>,
    relay: Option<RelayConfig>,
    pages: Option<axum::Router>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Binds the gRPC and HTTP listeners and connects to NATS (retrying in the background).
    pub async fn bind(
        name: &'static str,
        common: &CommonArgs,
        pool: Option<sqlx::PgPool>,
        redis: Option<redis::aio::ConnectionManager>,
    ) -> Result<Self, StartError> {
        let grpc = TcpListener::bind(common.grpc_addr)
            .await
            .map_err(|source| StartError::Bind {
                what: "gRPC",
                addr: common.grpc_addr,
                source,
            })?;
        let http = TcpListener::bind(common.http_addr)
            .await
            .map_err(|source| StartError::Bind {
                what: "HTTP",
                addr: common.http_addr,
                source,
            })?;
        let nats = crate::nats::connect(name, common).await?;
        let js = jetstream::new(nats.clone());
        let mut registry = Registry::default();
        let metrics = RuntimeMetrics::register(&mut registry);
        let readiness = Readiness::new(Some(nats.clone()), pool.clone(), redis);
        Ok(Self {
            name,
            common: common.clone(),
            nats,
            js,
            metrics,
            registry,
            readiness,
            pool,
            grpc,
            http,
            streams: Vec::new(),
            consumers: Vec::new(),
            relay: None,
            pages: None,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("bound listener")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound listener")
    }

    pub fn stream_settings(&self) -> StreamSettings {
        StreamSettings {
            replicas: usize::from(self.common.stream_replicas),
            ..Default::default()
        }
    }

    /// Streams this service publishes to or consumes from; provisioned before consumers start.
    pub fn streams(&mut self, streams: &[StreamSpec]) -> &mut Self {
        self.streams.extend_from_slice(streams);
        self
    }

    /// A consumer to run once the streams exist.
    pub fn consumer<P: Processor>(&mut self, runner: ConsumerRunner<P>) -> &mut Self {
        self.consumers
            .push(Box::new(move |shutdown| Box::pin(runner.run(shutdown))));
        self
    }

    /// Runs the outbox relay (the service must have a database).
    pub fn relay(&mut self, config: RelayConfig) -> &mut Self {
        self.relay = Some(config);
        self
    }

    /// Extra HTTP routes served beside /healthz, /readyz and /metrics.
    pub fn pages(&mut self, router: axum::Router) -> &mut Self {
        self.pages = Some(router);
        self
    }

    /// Serves until `shutdown`, then drains within the configured deadline.
    pub async fn run(
        self,
        grpc: crate::grpc::GrpcRouter,
        shutdown: CancellationToken,
    ) -> Result<(), ServiceError> {
        let deadline = self.common.shutdown_deadline();
        let settings = self.stream_settings();
        let mut tasks = Tasks::new();
        let readiness = self.readiness.clone();

        let drain_flag = readiness.clone();
        let s = shutdown.clone();
        tokio::spawn(async move {
            s.cancelled().await;
            drain_flag.set_draining();
        });

        let mut http = crate::ops::router(Arc::new(self.registry), readiness.clone());
        if let Some(pages) = self.pages {
            http = http.merge(pages);
        }
        tasks.spawn("http", crate::ops::serve(self.http, http, shutdown.clone()));
        tasks.spawn(
            "grpc",
            crate::grpc::serve(grpc, self.grpc, shutdown.clone()),
        );

        let js = self.js.clone();
        let streams = self.streams;
        let consumers = self.consumers;
        let s = shutdown.clone();
        tasks.spawn("events", async move {
            let provisioned = crate::retry::until_ok("provision streams", &s, || {
                provision::ensure_streams(&js, &streams, &settings)
            })
            .await;
            if provisioned.is_none() {
                return Ok(());
            }
            readiness.set_provisioned();
            let runs = consumers.into_iter().map(|start| start(s.clone()));
            futures::future::try_join_all(runs).await.map(|_| ())
        });

        if let (Some(config), Some(pool)) = (self.relay, self.pool) {
            let relay = Relay::new(pool, self.js.clone(), config, self.metrics.clone());
            let late = tasks.late_token();
            tasks.spawn_late("relay", async move {
                relay.run(late).await;
                Ok::<(), std::convert::Infallible>(())
            });
        }
        tracing::info!(service = self.name, "running");
        tasks.run(shutdown, deadline).await
    }
}
