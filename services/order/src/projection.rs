//! The read model behind GetOrder and ListOrders (CQRS).
//!
//! Fed from the ORDER stream by its own durable consumer: each order event refreshes that
//! order's row from the event store, guarded by version, so duplicates, reordering and replays
//! converge on the same row. [`rebuild`] builds a fresh table beside the live one and swaps it
//! in while the service keeps running.

use chrono::{DateTime, Utc};
use jetmart_proto::order::v1 as pb;
use jetmart_runtime::IncomingEvent;
use jetmart_runtime::consumer::{HandlerError, PgHandler};
use prost::Message;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::convert;
use crate::domain::{Order, OrderId};
use crate::store::{self, StoreError};

/// Durable consumer name of the projection.
pub const CONSUMER: &str = "order-projection";

async fn upsert(conn: &mut PgConnection, table: &str, order: &Order) -> Result<(), sqlx::Error> {
    let body = convert::order(order).encode_to_vec();
    let updated_at = order
        .history()
        .last()
        .map(|c| c.at)
        .unwrap_or_else(|| order.placed_at());
    let sql = format!(
        "INSERT INTO {table} (order_id, customer_id, status, version, placed_at, updated_at, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, version = EXCLUDED.version,
             updated_at = EXCLUDED.updated_at, body = EXCLUDED.body
         WHERE {table}.version < EXCLUDED.version"
    );
    sqlx::query(&sql)
        .bind(order.id().0)
        .bind(order.customer_id())
        .bind(order.status().as_str())
        .bind(order.version() as i32)
        .bind(order.placed_at())
        .bind(updated_at)
        .bind(body)
        .execute(conn)
        .await?;
    Ok(())
}

/// Recomputes one order's row from the event store.
pub async fn refresh(conn: &mut PgConnection, id: OrderId) -> Result<(), StoreError> {
    refresh_into(conn, "order_view", id).await
}

async fn refresh_into(conn: &mut PgConnection, table: &str, id: OrderId) -> Result<(), StoreError> {
    if let Some(order) = store::load(conn, id).await? {
        upsert(conn, table, &order).await?;
    }
    Ok(())
}

/// Keeps the read model current from the ORDER stream.
#[derive(Debug, Clone, Copy)]
pub struct ProjectionHandler;

impl PgHandler for ProjectionHandler {
    fn handles(&self, event_type: &str) -> bool {
        crate::PROJECTION_CONSUMES.handles(event_type)
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &IncomingEvent,
    ) -> Result<(), HandlerError> {
        let id = Uuid::parse_str(&event.meta.aggregate_id).map_err(|_| {
            HandlerError::permanent(format!(
                "aggregate id {:?} is not a UUID",
                event.meta.aggregate_id
            ))
        })?;
        refresh(tx, OrderId(id)).await?;
        Ok(())
    }
}

/// An order as the read model holds it.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<pb::Order>, StoreError> {
    let row = sqlx::query("SELECT body FROM order_view WHERE order_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.map(|r| decode(id, r.get("body"))).transpose()
}

fn decode(id: Uuid, body: Vec<u8>) -> Result<pb::Order, StoreError> {
    pb::Order::decode(body.as_slice()).map_err(|e| StoreError::Corrupt {
        order_id: OrderId(id),
        problem: format!("read model row: {e}"),
    })
}

/// Opaque keyset page token: where the previous page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    pub placed_at: DateTime<Utc>,
    pub order_id: Uuid,
}

impl PageToken {
    pub fn encode(&self) -> String {
        hex::encode(format!(
            "{}|{}",
            self.placed_at.timestamp_micros(),
            self.order_id
        ))
    }

    pub fn decode(token: &str) -> Option<Self> {
        let raw = String::from_utf8(hex::decode(token).ok()?).ok()?;
        let (micros, id) = raw.split_once('|')?;
        Some(Self {
            placed_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            order_id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// A customer's orders, newest first, `page_size` at a time.
pub async fn list(
    pool: &PgPool,
    customer_id: &str,
    page_size: i64,
    after: Option<PageToken>,
) -> Result<(Vec<pb::Order>, Option<PageToken>), StoreError> {
    let rows = sqlx::query(
        "SELECT order_id, placed_at, body FROM order_view
         WHERE customer_id = $1 AND ($2::timestamptz IS NULL OR (placed_at, order_id) < ($2, $3))
         ORDER BY placed_at DESC, order_id DESC LIMIT $4",
    )
    .bind(customer_id)
    .bind(after.map(|t| t.placed_at))
    .bind(after.map(|t| t.order_id))
    .bind(page_size + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() as i64 > page_size;
    let mut orders = Vec::with_capacity(rows.len());
    let mut last = None;
    for row in rows.into_iter().take(page_size as usize) {
        let id: Uuid = row.get("order_id");
        last = Some(PageToken {
            placed_at: row.get("placed_at"),
            order_id: id,
        });
        orders.push(decode(id, row.get("body"))?);
    }
    Ok((orders, if more { last } else { None }))
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub orders: usize,
    /// Orders that changed while the new table was built, applied under the swap lock.
    pub caught_up: usize,
}

/// Builds `order_view_next` from the event store while the live view keeps serving, then swaps
/// it in under a short exclusive lock after catching up with what committed meanwhile.
pub async fn rebuild(pool: &PgPool) -> Result<Rebuilt, StoreError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("DROP TABLE IF EXISTS order_view_next")
        .execute(&mut *conn)
        .await?;
    sqlx::query("CREATE TABLE order_view_next (LIKE order_view INCLUDING ALL)")
        .execute(&mut *conn)
        .await?;
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT order_id FROM order_events")
        .fetch_all(&mut *conn)
        .await?;
    for id in &ids {
        refresh_into(&mut conn, "order_view_next", OrderId(*id)).await?;
    }
    let mut tx = pool.begin().await?;
    // Readers and the projection wait for the swap; projection writes that were waiting fail
    // and are retried by the consumer against the new table.
    sqlx::query("LOCK TABLE order_view IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let behind: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT e.order_id FROM order_events e
         WHERE NOT EXISTS (SELECT 1 FROM order_view_next v WHERE v.order_id = e.order_id AND v.version >= e.version)",
    )
    .fetch_all(&mut *tx)
    .await?;
    for id in &behind {
        refresh_into(&mut tx, "order_view_next", OrderId(*id)).await?;
    }
    sqlx::query("ALTER TABLE order_view RENAME TO order_view_old")
        .execute(&mut *tx)
        .await?;
    sqlx::query("ALTER TABLE order_view_next RENAME TO order_view")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DROP TABLE order_view_old")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Rebuilt {
        orders: ids.len(),
        caught_up: behind.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let t = PageToken {
            placed_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            order_id: Uuid::now_v7(),
        };
        assert_eq!(PageToken::decode(&t.encode()), Some(t));
        assert_eq!(PageToken::decode("zz"), None);
        assert_eq!(PageToken::decode(&hex::encode("nope")), None);
    }
}
