//! Wiring of the survey service.

use std::net::SocketAddr;
use std::time::Duration;

use jetmart_kit::{Service, ServiceError, StartError};
use jetmart_proto::survey::v1::survey_service_server::SurveyServiceServer;
use jetmart_runtime::catalog;
use jetmart_runtime::consumer::{ConsumerRunner, PgProcessor, RunnerConfig};
use jetmart_runtime::outbox::RelayConfig;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::grpc::SurveyApi;
use crate::handlers::ConfirmedOrderHandler;
use crate::store;
use crate::surveys::Surveys;
use crate::{CONSUMES, NAME};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub struct App {
    service: Service,
    api: SurveyApi,
    pool: PgPool,
    scrub_every: Duration,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("grpc", &self.grpc_addr())
            .field("http", &self.http_addr())
            .finish_non_exhaustive()
    }
}

pub async fn migrate(config: &Config) -> Result<(), StartError> {
    let pool = jetmart_kit::db::pool(&config.database_url, 2)?;
    jetmart_runtime::migrate(&pool, &MIGRATOR).await?;
    Ok(())
}

pub async fn build(config: Config) -> Result<App, StartError> {
    let pool: PgPool = jetmart_kit::db::pool(&config.database_url, 16)?;
    jetmart_runtime::migrate(&pool, &MIGRATOR).await?;
    let mut service = Service::bind(NAME, &config.common, Some(pool.clone()), None).await?;
    service.streams(&[catalog::ORDER, catalog::SURVEY, catalog::DEADLETTER]);

    // The first-order and cool-down rules depend on which of a customer's orders came first, so
    // order.confirmed is handled strictly in stream order: one message in flight across all
    // replicas and one lane. That is what makes a replay decide the same; survey's volume (one
    // small transaction per confirmed order) allows it.
    let mut spec = CONSUMES.consumer(&catalog::ORDER, NAME);
    spec.max_ack_pending = 1;
    let mut runner = RunnerConfig::new(spec);
    runner.lanes = 1;
    let handler = ConfirmedOrderHandler {
        rules: config.rules(),
        token_ttl: config.token_ttl.as_delta(),
        public_base: config.public_base(),
    };
    let consumer = ConsumerRunner::new(
        service.js.clone(),
        runner,
        PgProcessor::new(pool.clone(), handler),
        service.metrics.clone(),
    );

    let surveys = Surveys::new(
        pool.clone(),
        config.public_base(),
        config.max_comment_chars as usize,
    );
    service
        .consumer(consumer)
        .relay(RelayConfig::default())
        .pages(crate::pages::router(surveys.clone()));
    Ok(App {
        service,
        api: SurveyApi::new(surveys),
        pool,
        scrub_every: config.outbox_scrub_interval.0,
    })
}

impl App {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.service.grpc_addr()
    }

    /// Where `/s/<token>` and the ops endpoints are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.service.http_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let (health, router) = jetmart_kit::grpc::base(&["jetmart.survey.v1.SurveyService"]);
        health.set_serving::<SurveyServiceServer<SurveyApi>>().await;
        let router = router.add_service(SurveyServiceServer::new(self.api));
        let stop_scrub = shutdown.child_token();
        let scrub = tokio::spawn(scrub_tokens(
            self.pool.clone(),
            self.scrub_every,
            stop_scrub.clone(),
        ));
        let result = self.service.run(router, shutdown).await;
        stop_scrub.cancel();
        let _ = scrub.await;
        result
    }
}

/// Keeps tokens out of the database once published (the runtime's relay keeps published outbox
/// rows for a day; it has no per-subject retention).
async fn scrub_tokens(pool: PgPool, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let result = match pool.acquire().await {
            Ok(mut conn) => store::scrub_published_tokens(&mut conn).await,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "published survey tokens removed from the outbox"),
            Err(e) => tracing::warn!(error = %e, "outbox token scrub failed"),
        }
    }
}
