//! The dashboard over HTTP, served beside /healthz, /readyz and /metrics:
//!
//! - `GET /`: the live page (HTML, its script and styles embedded in the binary; no CDN).
//! - `GET /assets/dashboard.js`, `GET /assets/dashboard.css`.
//! - `GET /api/dashboard[?series_minutes=N&top_skus_limit=N]`: the page's numbers as JSON: the
//!   same read as GetDashboard, plus the operational panels.
//! - `GET /events`: server-sent events; a `dashboard` event with that JSON when anything changed,
//!   checked every second, and `unavailable` while the read model cannot be read.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query as QueryParams, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::dashboard::{self, Dashboards, View};
use crate::error::ApiError;
use crate::ops::Ops;
use crate::read_model::Query;

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");
const INITIAL_PLACEHOLDER: &str = "__INITIAL_JSON__";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// How often the live page's data is checked for changes.
pub const TICK: Duration = Duration::from_secs(1);
/// Frames shared by every open page are this fresh at most.
const FRAME_FRESH: Duration = Duration::from_millis(500);

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageData {
    #[serde(flatten)]
    pub view: View,
    pub ops: Ops,
}

async fn page_data(dashboards: &Dashboards, query: Query) -> Result<PageData, ApiError> {
    let (view, ops) = tokio::join!(dashboards.read(query), dashboards.ops());
    Ok(PageData { view: view?, ops })
}

/// One serialized state of the page; `key` leaves out the time, to tell real changes.
struct Frame {
    json: String,
    key: String,
}

/// The last frame and when it was made.
type FrameCache = Arc<tokio::sync::Mutex<Option<(Instant, Arc<Frame>)>>>;

#[derive(Clone)]
struct Web {
    dashboards: Dashboards,
    frames: FrameCache,
    shutdown: CancellationToken,
    tick: Duration,
}

impl Web {
    /// The latest frame, recomputed at most every [`FRAME_FRESH`] however many pages are open.
    async fn frame(&self) -> Result<Arc<Frame>, ApiError> {
        let mut cached = self.frames.lock().await;
        if let Some((at, frame)) = &*cached
            && at.elapsed() < FRAME_FRESH
        {
            return Ok(frame.clone());
        }
        let data = page_data(&self.dashboards, Query::default()).await?;
        let json = serde_json::to_string(&data).unwrap_or_default();
        let key = serde_json::to_string(&(&data.view.snapshot, &data.view.streams, &data.ops))
            .unwrap_or_default();
        let frame = Arc::new(Frame { json, key });
        *cached = Some((Instant::now(), frame.clone()));
        Ok(frame)
    }
}

/// The routes; SSE streams end when `shutdown` is cancelled so the server can drain.
pub fn router(dashboards: Dashboards, shutdown: CancellationToken, tick: Duration) -> Router {
    let web = Web {
        dashboards,
        frames: Arc::default(),
        shutdown,
        tick,
    };
    Router::new()
        .route("/", get(index))
        .route("/assets/dashboard.js", get(script))
        .route("/assets/dashboard.css", get(style))
        .route("/api/dashboard", get(api))
        .route("/events", get(events))
        .with_state(web)
}

fn with_headers(mut response: Response, content_type: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// JSON safe inside a `<script type="application/json">` element.
fn embeddable(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

async fn index(State(web): State<Web>) -> Response {
    // The page renders at once from the embedded data, then follows /events.
    let initial = match page_data(&web.dashboards, Query::default()).await {
        Ok(data) => serde_json::to_string(&data).unwrap_or_else(|_| "null".into()),
        Err(e) => {
            tracing::warn!(error = %e, "dashboard page without initial data");
            "null".into()
        }
    };
    let html = INDEX.replace(INITIAL_PLACEHOLDER, &embeddable(&initial));
    let mut response = with_headers(Html(html).into_response(), "text/html; charset=utf-8");
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn script() -> Response {
    with_headers(SCRIPT.into_response(), "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    with_headers(STYLE.into_response(), "text/css; charset=utf-8")
}

#[derive(Debug, Deserialize)]
struct ApiParams {
    #[serde(default)]
    series_minutes: i32,
    #[serde(default)]
    top_skus_limit: i32,
}

async fn api(
    State(web): State<Web>,
    params: Result<QueryParams<ApiParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let QueryParams(p) = params.map_err(|e| (StatusCode::BAD_REQUEST, e.body_text()))?;
        let query = dashboard::query(p.series_minutes, p.top_skus_limit)
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        page_data(&web.dashboards, query)
            .await
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
    }
    .await;
    match result {
        Ok(data) => with_headers(axum::Json(data).into_response(), "application/json"),
        Err((status, message)) => with_headers(
            (status, format!("{message}\n")).into_response(),
            "text/plain; charset=utf-8",
        ),
    }
}

async fn events(State(web): State<Web>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let shutdown = web.shutdown.clone();
    let updates = futures::stream::unfold(
        (web, None::<String>, true),
        |(web, mut last, first)| async move {
            if !first {
                tokio::time::sleep(web.tick).await;
            }
            loop {
                match web.frame().await {
                    Ok(frame) if last.as_deref() != Some(frame.key.as_str()) => {
                        last = Some(frame.key.clone());
                        let event = Event::default().event("dashboard").data(frame.json.clone());
                        return Some((Ok(event), (web, last, false)));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        last = None;
                        let event = Event::default().event("unavailable").data(e.to_string());
                        return Some((Ok(event), (web, last, false)));
                    }
                }
                tokio::time::sleep(web.tick).await;
            }
        },
    );
    Sse::new(updates.take_until(shutdown.cancelled_owned())).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_json_cannot_close_the_script_element() {
        let json = serde_json::to_string(&serde_json::json!({"sku": "</script><b>&"})).unwrap();
        let safe = embeddable(&json);
        assert!(!safe.contains('<') && !safe.contains('>') && !safe.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["sku"], "</script><b>&");
        assert!(INDEX.contains(INITIAL_PLACEHOLDER));
    }
}
