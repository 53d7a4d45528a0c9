//! Wiring of the analytics service.

use std::net::SocketAddr;
use std::time::Duration;

use jetmart_kit::{Service, ServiceError, StartError};
use jetmart_proto::analytics::v1::analytics_service_server::AnalyticsServiceServer;
use jetmart_runtime::catalog;
use jetmart_runtime::consumer::{ConsumerRunner, RunnerConfig};
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dashboard::Dashboards;
use crate::grpc::AnalyticsApi;
use crate::live::{Generations, LiveProcessor, Recovery};
use crate::rebuild::{self, Progress, RebuildOptions, RebuildReport};
use crate::web;
use crate::{CONSUMES, NAME};

pub struct App {
    service: Service,
    api: AnalyticsApi,
    pages_shutdown: CancellationToken,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("grpc", &self.grpc_addr())
            .field("http", &self.http_addr())
            .finish_non_exhaustive()
    }
}

/// A Redis connection that connects lazily and reconnects on its own, so the service starts
/// (not ready) while Redis is away.
pub fn connect_redis(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_lazy_with_config(client, config)
}

pub async fn build(config: Config) -> Result<App, StartError> {
    let redis = connect_redis(&config.redis_url)?;
    let mut service = Service::bind(NAME, &config.common, None, Some(redis.clone())).await?;
    service.streams(catalog::BUSINESS_STREAMS);
    service.streams(&[catalog::DEADLETTER]);
    crate::live::start_empty_without_history(&service.js, &redis).await;
    let generations = Generations::new(redis.clone(), config.marker_ttl());
    let recovery = Recovery::new(
        service.js.clone(),
        redis.clone(),
        RebuildOptions {
            marker_ttl: config.marker_ttl(),
            ..Default::default()
        },
    );
    for spec in CONSUMES.consumers(NAME) {
        let runner = ConsumerRunner::new(
            service.js.clone(),
            RunnerConfig::new(spec),
            LiveProcessor::new(generations.clone(), recovery.clone()),
            service.metrics.clone(),
        );
        service.consumer(runner);
    }
    let dashboards = Dashboards::new(redis, service.js.clone());
    let pages_shutdown = CancellationToken::new();
    tokio::spawn(recovery.clone().watch(pages_shutdown.clone()));
    service.pages(web::router(
        dashboards.clone(),
        pages_shutdown.clone(),
        web::TICK,
    ));
    Ok(App {
        service,
        api: AnalyticsApi::new(dashboards),
        pages_shutdown,
    })
}

impl App {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.service.grpc_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.service.http_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        // Open event streams must end for the HTTP server to drain.
        let (outer, pages) = (shutdown.clone(), self.pages_shutdown.clone());
        tokio::spawn(async move {
            outer.cancelled().await;
            pages.cancel();
        });
        let (health, router) = jetmart_kit::grpc::base(&["jetmart.analytics.v1.AnalyticsService"]);
        health
            .set_serving::<AnalyticsServiceServer<AnalyticsApi>>()
            .await;
        let router = router.add_service(AnalyticsServiceServer::new(self.api));
        self.service.run(router, shutdown).await
    }
}

/// `jetmart-analytics migrate`: the read model lives in Redis and needs no schema.
pub fn migrate(_config: &Config) {
    tracing::info!("analytics keeps no database; nothing to migrate");
}

/// `jetmart-analytics rebuild` as a command: [`rebuild`] with its progress on stderr and the
/// report on stdout.
pub async fn rebuild_command(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let report = rebuild(config, |p| match p {
        Progress::Started {
            previous,
            generation,
            targets,
        } => {
            let total: u64 = targets.iter().map(|(_, n)| n).sum();
            eprintln!(
                "rebuilding generation {generation} beside {previous}: up to {total} messages"
            );
        }
        Progress::Replaying {
            stream,
            phase,
            sequence,
            last,
        } => eprintln!("  {stream} {phase:?}: #{sequence} of #{last}"),
        Progress::Swapped {
            previous,
            generation,
        } => eprintln!("swapped: generation {generation} is live (was {previous})"),
        Progress::Deleted { keys } => eprintln!("deleted {keys} keys of old generations"),
    })
    .await?;
    println!(
        "analytics read model rebuilt: generation {} ({} events replayed, {} caught up, {} skipped, {} old keys deleted)",
        report.generation,
        report.replayed.applied,
        report.caught_up.applied,
        report.replayed.skipped + report.caught_up.skipped,
        report.deleted_keys
    );
    Ok(())
}

/// `jetmart-analytics rebuild`: see [`rebuild::rebuild`] (which the operator CLI calls directly).
pub async fn rebuild(
    config: &Config,
    progress: impl FnMut(&Progress) + Send,
) -> Result<RebuildReport, Box<dyn std::error::Error>> {
    let nats = jetmart_kit::nats::connect(NAME, &config.common).await?;
    let js = async_nats::jetstream::new(nats);
    let redis = connect_redis(&config.redis_url)?;
    let options = RebuildOptions {
        marker_ttl: config.marker_ttl(),
        ..Default::default()
    };
    Ok(rebuild::rebuild(&js, &redis, &options, progress).await?)
}
