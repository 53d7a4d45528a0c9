//! Wiring of the notification service.

use std::net::SocketAddr;

use jetmart_kit::{Service, ServiceError};
use jetmart_proto::notification::v1::notification_service_server::NotificationServiceServer;
use jetmart_runtime::catalog;
use jetmart_runtime::consumer::{ConsumerRunner, PgProcessor, RunnerConfig};
use jetmart_runtime::outbox::RelayConfig;
use jetmart_runtime::provision::ConsumerSpec;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::StartError;
use crate::grpc::NotificationApi;
use crate::handlers::{EmailHandler, EmailMetrics};
use crate::mailer::Mailer;
use crate::{CONSUMES, NAME};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Concurrent emails per consumer. Each holds a database connection for its SMTP exchange (the
/// row and the send commit together), so the pool is sized from it.
const LANES: usize = 8;
const POOL_SIZE: u32 = 2 * LANES as u32 + 8;

pub struct App {
    service: Service,
    api: NotificationApi,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("grpc", &self.grpc_addr())
            .finish_non_exhaustive()
    }
}

pub async fn migrate(config: &Config) -> Result<(), StartError> {
    let pool =
        jetmart_kit::db::pool(config.database_url()?, 2).map_err(jetmart_kit::StartError::from)?;
    jetmart_runtime::migrate(&pool, &MIGRATOR)
        .await
        .map_err(jetmart_kit::StartError::from)?;
    Ok(())
}

fn runner_config(spec: ConsumerSpec) -> RunnerConfig {
    let mut config = RunnerConfig::new(spec);
    config.lanes = LANES;
    // An email whose relay is away is retried until the relay returns, however long that takes:
    // a delivery limit would dead-letter (lose) it. Permanent failures never get here: they are
    // recorded as failed and acknowledged.
    config.max_deliver = i64::MAX;
    config
}

pub async fn build(config: Config) -> Result<App, StartError> {
    let smtp = config.smtp()?;
    let pool: PgPool = jetmart_kit::db::pool(config.database_url()?, POOL_SIZE)
        .map_err(jetmart_kit::StartError::from)?;
    jetmart_runtime::migrate(&pool, &MIGRATOR)
        .await
        .map_err(jetmart_kit::StartError::from)?;
    let mailer = Mailer::new(&smtp)?;
    let mut service = Service::bind(NAME, &config.common, Some(pool.clone()), None).await?;
    service.streams(&[
        catalog::ORDER,
        catalog::SURVEY,
        catalog::NOTIFICATION,
        catalog::DEADLETTER,
    ]);
    let metrics = EmailMetrics::register(&mut service.registry);
    let handler = EmailHandler::new(mailer, metrics);
    let runner = |spec: ConsumerSpec, service: &Service| {
        ConsumerRunner::new(
            service.js.clone(),
            runner_config(spec),
            PgProcessor::new(pool.clone(), handler.clone()),
            service.metrics.clone(),
        )
    };
    let orders = runner(CONSUMES.consumer(&catalog::ORDER, NAME), &service);
    let surveys = runner(CONSUMES.consumer(&catalog::SURVEY, NAME), &service);
    service
        .consumer(orders)
        .consumer(surveys)
        .relay(RelayConfig::default());
    tracing::info!(host = %smtp.host, port = smtp.port, security = ?smtp.security, auth = smtp.credentials.is_some(), "SMTP relay");
    Ok(App {
        service,
        api: NotificationApi::new(pool),
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
        let (health, router) =
            jetmart_kit::grpc::base(&["jetmart.notification.v1.NotificationService"]);
        health
            .set_serving::<NotificationServiceServer<NotificationApi>>()
            .await;
        let router = router.add_service(NotificationServiceServer::new(self.api));
        self.service.run(router, shutdown).await
    }
}
