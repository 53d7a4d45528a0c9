//! The ops HTTP endpoints: `/healthz` (alive), `/readyz` (dependencies reachable and streams
//! provisioned; false while draining) and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What `/readyz` checks.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    nats: Option<async_nats::Client>,
    pool: Option<sqlx::PgPool>,
    redis: Option<redis::aio::ConnectionManager>,
    provisioned: AtomicBool,
    draining: AtomicBool,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field(
                "provisioned",
                &self.inner.provisioned.load(Ordering::Relaxed),
            )
            .field("draining", &self.inner.draining.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Readiness {
    pub fn new(
        nats: Option<async_nats::Client>,
        pool: Option<sqlx::PgPool>,
        redis: Option<redis::aio::ConnectionManager>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                nats,
                pool,
                redis,
                ..Default::default()
            }),
        }
    }
    /// Streams and consumers exist.
    pub fn set_provisioned(&self) {
        self.inner.provisioned.store(true, Ordering::Relaxed);
    }
    /// Shutting down: stop receiving traffic.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// Each check with its result.
    pub async fn check(&self) -> Vec<(&'static str, bool)> {
        let i = &self.inner;
        let mut out = vec![
            ("provisioned", i.provisioned.load(Ordering::Relaxed)),
            ("not_draining", !i.draining.load(Ordering::Relaxed)),
        ];
        if let Some(nats) = &i.nats {
            out.push((
                "nats",
                nats.connection_state() == async_nats::connection::State::Connected,
            ));
        }
        if let Some(pool) = &i.pool {
            let ok = tokio::time::timeout(
                Duration::from_secs(2),
                sqlx::query("SELECT 1").execute(pool),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            out.push(("postgres", ok));
        }
        if let Some(redis) = &i.redis {
            let mut conn = redis.clone();
            let ping = async move { redis::cmd("PING").query_async::<String>(&mut conn).await };
            let ok = tokio::time::timeout(Duration::from_secs(2), ping)
                .await
                .is_ok_and(|r| r.is_ok());
            out.push(("redis", ok));
        }
        out
    }

    pub async fn is_ready(&self) -> bool {
        self.check().await.iter().all(|(_, ok)| *ok)
    }
}

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// `/healthz`, `/readyz`, `/metrics`; merge service pages into it with [`Router::merge`].
pub fn router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState {
            registry,
            readiness,
        })
}

async fn readyz(State(s): State<OpsState>) -> impl IntoResponse {
    let checks = s.readiness.check().await;
    let ready = checks.iter().all(|(_, ok)| *ok);
    let body: String = checks
        .iter()
        .map(|(name, ok)| format!("{name}: {}\n", if *ok { "ok" } else { "FAIL" }))
        .collect();
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

async fn metrics(State(s): State<OpsState>) -> impl IntoResponse {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        );
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
