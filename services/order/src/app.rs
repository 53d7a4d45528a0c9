//! Wiring of the order service.

use std::net::SocketAddr;

use jetmart_kit::{Service, ServiceError, StartError};
use jetmart_proto::order::v1::order_service_server::OrderServiceServer;
use jetmart_runtime::catalog;
use jetmart_runtime::consumer::{ConsumerRunner, PgProcessor, RunnerConfig};
use jetmart_runtime::outbox::RelayConfig;
use jetmart_runtime::provision::ConsumerSpec;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::grpc::OrderApi;
use crate::handlers::SagaHandler;
use crate::projection::{self, ProjectionHandler};
use crate::{CONSUMES, NAME, PROJECTION_CONSUMES};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub struct App {
    service: Service,
    api: OrderApi,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("grpc", &self.grpc_addr())
            .finish_non_exhaustive()
    }
}

pub async fn migrate(config: &Config) -> Result<(), StartError> {
    let pool = jetmart_kit::db::pool(&config.database_url, 2)?;
    jetmart_runtime::migrate(&pool, &MIGRATOR).await?;
    Ok(())
}

pub async fn rebuild_projection(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let pool = jetmart_kit::db::pool(&config.database_url, 2)?;
    let done = projection::rebuild(&pool).await?;
    tracing::info!(
        orders = done.orders,
        caught_up = done.caught_up,
        "read model rebuilt"
    );
    println!(
        "order read model rebuilt: {} orders ({} caught up during the swap)",
        done.orders, done.caught_up
    );
    Ok(())
}

pub async fn build(config: Config) -> Result<App, StartError> {
    let pool: PgPool = jetmart_kit::db::pool(&config.database_url, 16)?;
    jetmart_runtime::migrate(&pool, &MIGRATOR).await?;
    let mut service = Service::bind(NAME, &config.common, Some(pool.clone()), None).await?;
    service.streams(&[
        catalog::ORDER,
        catalog::INVENTORY,
        catalog::PAYMENT,
        catalog::DEADLETTER,
    ]);
    // Both handlers write only to this database (event store, outbox, read model): batchable.
    let batched = |spec: ConsumerSpec| RunnerConfig {
        batch: usize::from(config.common.consumer_batch),
        ..RunnerConfig::new(spec)
    };
    let runner = |spec: ConsumerSpec, service: &Service| {
        ConsumerRunner::new(
            service.js.clone(),
            batched(spec),
            PgProcessor::new(pool.clone(), SagaHandler),
            service.metrics.clone(),
        )
    };
    let inventory = runner(CONSUMES.consumer(&catalog::INVENTORY, NAME), &service);
    let payment = runner(CONSUMES.consumer(&catalog::PAYMENT, NAME), &service);
    let projection = ConsumerRunner::new(
        service.js.clone(),
        batched(PROJECTION_CONSUMES.consumer(&catalog::ORDER, projection::CONSUMER)),
        PgProcessor::new(pool.clone(), ProjectionHandler),
        service.metrics.clone(),
    );
    service
        .consumer(inventory)
        .consumer(payment)
        .consumer(projection)
        .relay(RelayConfig::default());
    let api = OrderApi::new(pool, config.limits());
    Ok(App { service, api })
}

impl App {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.service.grpc_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.service.http_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let (health, router) = jetmart_kit::grpc::base(&["jetmart.order.v1.OrderService"]);
        health.set_serving::<OrderServiceServer<OrderApi>>().await;
        let router = router.add_service(OrderServiceServer::new(self.api));
        self.service.run(router, shutdown).await
    }
}
