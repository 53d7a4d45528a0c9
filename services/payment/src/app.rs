//! Wiring: database, gateway, consumers, outbox relay, gRPC.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jetmart_kit::{Service, StartError};
use jetmart_proto::payment::v1::payment_service_server::PaymentServiceServer;
use jetmart_runtime::catalog;
use jetmart_runtime::consumer::{ConsumerRunner, PgProcessor, RunnerConfig};
use jetmart_runtime::outbox::RelayConfig;
use jetmart_runtime::provision::ConsumerSpec;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, GatewayKind};
use crate::domain::{BreakerState, PaymentGateway, SimulatedGateway};
use crate::gateway::{GatewayMetrics, GuardedGateway};
use crate::grpc::PaymentApi;
use crate::handlers::PaymentHandler;
use crate::{CONSUMES, NAME};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Concurrent handlers per consumer.
const LANES: usize = 16;
/// Each handler holds its transaction's connection while it also writes attempts on a second
/// one: two consumers' lanes, plus room for those writes and the API.
const POOL_SIZE: u32 = 2 * LANES as u32 + 8;

/// Runs the runtime's and the service's migrations.
pub async fn migrate(config: &Config) -> Result<(), StartError> {
    let pool = jetmart_kit::db::pool(&config.database_url, 2)?;
    jetmart_runtime::migrate(&pool, &MIGRATOR).await?;
    Ok(())
}

/// The gateway `config` selects.
pub fn gateway(config: &Config) -> Arc<dyn PaymentGateway> {
    match config.gateway.kind {
        GatewayKind::Simulated => Arc::new(SimulatedGateway::new(config.simulated_gateway())),
    }
}

/// A started, not yet running, payment service.
pub struct App {
    service: Service,
    pool: PgPool,
    gateway: Arc<GuardedGateway>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Builds the service with the gateway its configuration selects.
pub async fn build(config: Config) -> Result<App, StartError> {
    let gateway = gateway(&config);
    build_with_gateway(config, gateway).await
}

/// Builds the service around `gateway` (a provider chosen by the caller, e.g. one with injected
/// faults in a test).
pub async fn build_with_gateway(
    config: Config,
    gateway: Arc<dyn PaymentGateway>,
) -> Result<App, StartError> {
    let pool = jetmart_kit::db::pool(&config.database_url, POOL_SIZE)?;
    // Idempotent; sqlx's advisory lock makes racing replicas safe.
    jetmart_runtime::migrate(&pool, &MIGRATOR).await?;
    let mut service = Service::bind(NAME, &config.common, Some(pool.clone()), None).await?;
    service.streams(&[
        catalog::INVENTORY,
        catalog::ORDER,
        catalog::PAYMENT,
        catalog::DEADLETTER,
    ]);
    let gateway_metrics = GatewayMetrics::register(&mut service.registry);
    let guarded = Arc::new(GuardedGateway::new(
        gateway,
        config.breaker(),
        config.retry_policy(),
        pool.clone(),
        gateway_metrics,
    ));
    let handler = PaymentHandler::new(
        pool.clone(),
        guarded.clone(),
        Duration::from_millis(config.authorize_deadline_ms),
    );
    let runner = |spec: ConsumerSpec| {
        let mut rc = RunnerConfig::new(spec);
        rc.lanes = LANES;
        rc.max_deliver = config.redelivery.max_deliver;
        rc.retry_initial = Duration::from_millis(config.redelivery.redelivery_initial_ms);
        rc.retry_max = Duration::from_millis(config.redelivery.redelivery_max_ms);
        rc
    };
    let metrics = service.metrics.clone();
    service.consumer(ConsumerRunner::new(
        service.js.clone(),
        runner(CONSUMES.consumer(&catalog::INVENTORY, NAME)),
        PgProcessor::new(pool.clone(), handler.clone()),
        metrics.clone(),
    ));
    service.consumer(ConsumerRunner::new(
        service.js.clone(),
        runner(CONSUMES.consumer(&catalog::ORDER, NAME)),
        PgProcessor::new(pool.clone(), handler),
        metrics,
    ));
    service.relay(RelayConfig::default());
    Ok(App {
        service,
        pool,
        gateway: guarded,
    })
}

impl App {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.service.grpc_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.service.http_addr()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A handle on the gateway's circuit breaker state, usable while the app runs.
    pub fn breaker(&self) -> BreakerProbe {
        BreakerProbe(self.gateway.clone())
    }

    /// Serves until `shutdown`, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), jetmart_kit::ServiceError> {
        let (health, router) = jetmart_kit::grpc::base(&["jetmart.payment.v1.PaymentService"]);
        health
            .set_serving::<PaymentServiceServer<PaymentApi>>()
            .await;
        let router = router.add_service(PaymentServiceServer::new(PaymentApi::new(self.pool)));
        self.service.run(router, shutdown).await
    }
}

/// Reads the circuit breaker's state.
#[derive(Debug, Clone)]
pub struct BreakerProbe(Arc<GuardedGateway>);

impl BreakerProbe {
    /// The gateway-wide breaker.
    pub fn state(&self) -> BreakerState {
        self.0.breaker_state()
    }

    /// The breaker of one card (payment token).
    pub fn card_state(&self, token: &str) -> BreakerState {
        self.0.card_breaker_state(token)
    }
}
