//! Wiring: the kit's Service skeleton with the order-event consumer, the outbox relay, the
//! availability cache and the gRPC API.

use std::net::SocketAddr;

use jetmart_kit::{Service, StartError};
use jetmart_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use jetmart_runtime::catalog as streams;
use jetmart_runtime::consumer::{ConsumerRunner, PgProcessor, RunnerConfig};
use jetmart_runtime::outbox::RelayConfig;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::cache::{CacheMetrics, StockCache};
use crate::config::Config;
use crate::error::ApiError;
use crate::grpc::InventoryApi;
use crate::handlers::{CacheRefreshing, InventoryHandler};
use crate::seed::{self, Seeded};
use crate::{CONSUMES, NAME};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A started, not yet running inventory service.
pub struct App {
    service: Service,
    api: InventoryApi,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

fn missing_redis() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "REDIS_URL is not set",
    ))
}

async fn migrated_pool(config: &Config) -> Result<PgPool, StartError> {
    let pool = jetmart_kit::db::pool(&config.database_url, config.database_max_connections)?;
    // Idempotent; sqlx's advisory lock makes racing replicas safe.
    jetmart_runtime::migrate(&pool, &MIGRATOR).await?;
    Ok(pool)
}

/// Connects, migrates, binds the listeners and wires the consumer, relay and API.
pub async fn build(config: Config) -> Result<App, StartError> {
    let pool = migrated_pool(&config).await?;
    let redis_url = config.redis_url.as_deref().ok_or_else(missing_redis)?;
    // Redis is not passed to readiness: inventory answers from Postgres while Redis is away,
    // so a Redis outage must not take the replicas out of service.
    let mut service = Service::bind(NAME, &config.common, Some(pool.clone()), None).await?;
    let cache = StockCache::connect(
        redis_url,
        config.cache_ttl(),
        CacheMetrics::register(&mut service.registry),
    )?;
    service.streams(&[streams::ORDER, streams::INVENTORY, streams::DEADLETTER]);
    let processor = CacheRefreshing {
        inner: PgProcessor::new(pool.clone(), InventoryHandler),
        pool: pool.clone(),
        cache: cache.clone(),
    };
    let runner = ConsumerRunner::new(
        service.js.clone(),
        // The handler's effect is all in this database (the cache is refreshed after commit).
        RunnerConfig {
            batch: usize::from(config.common.consumer_batch),
            ..RunnerConfig::new(CONSUMES.consumer(&streams::ORDER, NAME))
        },
        processor,
        service.metrics.clone(),
    );
    service.consumer(runner);
    service.relay(RelayConfig::default());
    let api = InventoryApi {
        pool,
        cache,
        new_sku_threshold: config.low_stock_threshold,
    };
    Ok(App { service, api })
}

impl App {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.service.grpc_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.service.http_addr()
    }

    /// Serves until `shutdown`, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), jetmart_kit::ServiceError> {
        let (health, router) = jetmart_kit::grpc::base(&["jetmart.inventory.v1.InventoryService"]);
        health
            .set_serving::<InventoryServiceServer<InventoryApi>>()
            .await;
        let router = router.add_service(InventoryServiceServer::new(self.api));
        self.service.run(router, shutdown).await
    }
}

/// `jetmart-inventory migrate`.
pub async fn migrate(config: &Config) -> Result<(), StartError> {
    migrated_pool(config).await.map(|_| ())
}

/// [`migrate`], then a line saying so on stdout.
pub async fn migrate_command(config: &Config) -> Result<(), StartError> {
    migrate(config).await?;
    println!("migrate: inventory database is up to date");
    Ok(())
}

/// [`seed_demo`], then what it did on stdout: the summary first (the local stack shows the
/// first line), then one line per SKU.
pub async fn seed_demo_command(config: &Config) -> Result<(), SeedError> {
    let seeded = seed_demo(config).await?;
    let added = seeded.iter().filter(|s| s.added > 0).count();
    println!(
        "seed-demo: {} SKUs, {added} seeded now, {} already seeded",
        seeded.len(),
        seeded.len() - added
    );
    for line in &seeded {
        println!("  {line}");
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Seed(#[from] ApiError),
}

/// `jetmart-inventory seed-demo`: migrations, then the demo catalog (idempotent). With
/// REDIS_URL set, the cache entries of the seeded SKUs are refreshed too.
pub async fn seed_demo(config: &Config) -> Result<Vec<Seeded>, SeedError> {
    let pool = migrated_pool(config).await?;
    let cache = match config.redis_url.as_deref() {
        Some(url) => Some(
            StockCache::connect(url, config.cache_ttl(), CacheMetrics::default())
                .map_err(StartError::from)?,
        ),
        None => None,
    };
    let seeded = seed::seed_demo(&pool, cache.as_ref()).await?;
    pool.close().await;
    Ok(seeded)
}
