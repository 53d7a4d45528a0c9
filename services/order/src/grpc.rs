//! The `OrderService` gRPC API. Commands (PlaceOrder, CancelOrder) go to the event store;
//! queries (GetOrder, ListOrders) read the projection, with an optional wait for a version.

use std::time::Duration;

use chrono::Utc;
use jetmart_proto::order::v1 as pb;
use jetmart_proto::order::v1::order_service_server::OrderService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::convert;
use crate::domain::{
    Cancellation, IdempotencyCheck, Limits, Order, OrderId, OrderStatus, RequestFingerprint,
    check_idempotency, validate,
};
use crate::error::ApiError;
use crate::projection::{self, PageToken};
use crate::store::{self, StoreError};

const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;
const MAX_REASON_LEN: usize = 500;
/// How long GetOrder waits for `min_version` when the caller set no deadline.
const DEFAULT_READ_WAIT: Duration = Duration::from_secs(5);
const READ_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct OrderApi {
    pool: PgPool,
    limits: Limits,
}

impl OrderApi {
    pub fn new(pool: PgPool, limits: Limits) -> Self {
        Self { pool, limits }
    }

    async fn place(&self, req: pb::PlaceOrderRequest) -> Result<Order, ApiError> {
        let validated =
            validate(&convert::place_input(&req), &self.limits).map_err(ApiError::Invalid)?;
        let fingerprint = RequestFingerprint::of(&validated);
        let new_id = OrderId(Uuid::now_v7());
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let existing =
            store::claim_key(&mut tx, validated.idempotency_key(), &fingerprint, new_id).await?;
        match check_idempotency(existing.as_ref().map(|(id, f)| (*id, f)), &fingerprint) {
            IdempotencyCheck::Replay(id) => {
                drop(tx);
                let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
                let order = store::load(&mut conn, id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(id.to_string()))?;
                tracing::info!(order_id = %id, "idempotent replay");
                Ok(order)
            }
            IdempotencyCheck::Conflict => Err(ApiError::KeyReused),
            IdempotencyCheck::New => {
                let events = Order::place(validated, new_id, Utc::now());
                let order = store::append(&mut tx, new_id, None, &events, None).await?;
                tx.commit().await.map_err(StoreError::from)?;
                tracing::info!(order_id = %new_id, lines = order.lines().len(), total = %order.total(), "order placed");
                Ok(order)
            }
        }
    }

    async fn cancel(&self, id: OrderId, reason: String) -> Result<Order, ApiError> {
        // A saga reaction may append concurrently; decide again on the fresh state.
        for _ in 0..3 {
            let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
            let order = store::load(&mut tx, id)
                .await?
                .ok_or_else(|| ApiError::NotFound(id.to_string()))?;
            if order.status() == OrderStatus::Cancelled {
                return Ok(order);
            }
            let events = order.cancel(Cancellation::customer(reason.clone()), Utc::now())?;
            match store::append(&mut tx, id, Some(order), &events, None).await {
                Ok(order) => {
                    tx.commit().await.map_err(StoreError::from)?;
                    tracing::info!(order_id = %id, "order cancelled by customer");
                    return Ok(order);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict(id).into())
    }
}

fn parse_order_id(raw: &str) -> Result<OrderId, ApiError> {
    Uuid::parse_str(raw)
        .map(OrderId)
        .map_err(|_| ApiError::field("order_id", "must be a UUID"))
}

/// The caller's deadline from `grpc-timeout` (e.g. `5S`, `250m`), capped.
fn caller_deadline<T>(req: &Request<T>) -> Duration {
    let parsed = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (n, unit) = v.split_at(v.len().checked_sub(1)?);
            let n: u64 = n.parse().ok()?;
            Some(match unit {
                "H" => Duration::from_secs(n * 3600),
                "M" => Duration::from_secs(n * 60),
                "S" => Duration::from_secs(n),
                "m" => Duration::from_millis(n),
                "u" => Duration::from_micros(n),
                "n" => Duration::from_nanos(n),
                _ => return None,
            })
        });
    parsed
        .unwrap_or(DEFAULT_READ_WAIT)
        .min(Duration::from_secs(30))
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let order = self.place(request.into_inner()).await?;
        Ok(Response::new(pb::PlaceOrderResponse {
            order: Some(convert::order(&order)),
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let wait = caller_deadline(&request);
        let req = request.into_inner();
        let id = parse_order_id(&req.order_id)?;
        if let Some(v) = req.min_version
            && v < 1
        {
            return Err(ApiError::field("min_version", "must be at least 1").into());
        }
        // Leave the caller a little time to receive the answer.
        let deadline = tokio::time::Instant::now() + wait.mul_f64(0.9);
        loop {
            let found = projection::get(&self.pool, id.0)
                .await
                .map_err(ApiError::from)?;
            let at = found.as_ref().map_or(0, |o| o.version);
            match (found, req.min_version) {
                (Some(order), None) => {
                    return Ok(Response::new(pb::GetOrderResponse { order: Some(order) }));
                }
                (Some(order), Some(min)) if at >= min => {
                    return Ok(Response::new(pb::GetOrderResponse { order: Some(order) }));
                }
                (None, None) => return Err(ApiError::NotFound(req.order_id).into()),
                (_, Some(min)) if tokio::time::Instant::now() >= deadline => {
                    return Err(ApiError::NotYet { wanted: min, at }.into());
                }
                _ => tokio::time::sleep(READ_POLL).await,
            }
        }
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let req = request.into_inner();
        let mut violations = Vec::new();
        if req.customer_id.trim().is_empty() {
            violations.push(("customer_id", "is required"));
        }
        let page_size = match i64::from(req.page_size) {
            0 => DEFAULT_PAGE,
            n if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                violations.push(("page_size", "must be between 0 and 100"));
                DEFAULT_PAGE
            }
        };
        let after = if req.page_token.is_empty() {
            None
        } else {
            let t = PageToken::decode(&req.page_token);
            if t.is_none() {
                violations.push(("page_token", "is not a token this service issued"));
            }
            t
        };
        if !violations.is_empty() {
            return Err(ApiError::Invalid(
                violations
                    .into_iter()
                    .map(|(f, d)| crate::domain::FieldViolation::new(f, d))
                    .collect(),
            )
            .into());
        }
        let (orders, next) = projection::list(&self.pool, &req.customer_id, page_size, after)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListOrdersResponse {
            orders,
            next_page_token: next.map(|t| t.encode()).unwrap_or_default(),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let req = request.into_inner();
        let id = parse_order_id(&req.order_id)?;
        if req.reason.len() > MAX_REASON_LEN {
            return Err(
                ApiError::field("reason", format!("at most {MAX_REASON_LEN} bytes")).into(),
            );
        }
        let reason = if req.reason.trim().is_empty() {
            "cancelled by the customer".to_owned()
        } else {
            req.reason
        };
        let order = self.cancel(id, reason).await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(convert::order(&order)),
        }))
    }
}
