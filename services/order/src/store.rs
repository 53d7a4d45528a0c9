//! The event store (source of truth), idempotency keys, and appending with the outbox in the
//! same transaction.

use jetmart_runtime::EventMeta;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::convert;
use crate::domain::{Order, OrderEvent, OrderId, ReplayError, RequestFingerprint};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Someone appended to the order first (optimistic concurrency); reload and decide again.
    #[error("order {0} changed concurrently")]
    Conflict(OrderId),
    #[error("order {order_id} history is unreadable: {problem}")]
    Corrupt { order_id: OrderId, problem: String },
}

impl From<StoreError> for jetmart_runtime::consumer::HandlerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt { .. } => Self::permanent(e),
            other => Self::transient(other),
        }
    }
}

/// Rebuilds an order from its events; `None` when it has none.
pub async fn load(conn: &mut PgConnection, id: OrderId) -> Result<Option<Order>, StoreError> {
    let rows = sqlx::query("SELECT event FROM order_events WHERE order_id = $1 ORDER BY version")
        .bind(id.0)
        .fetch_all(&mut *conn)
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let corrupt = |problem: String| StoreError::Corrupt {
        order_id: id,
        problem,
    };
    let events = rows
        .iter()
        .map(|r| {
            serde_json::from_value::<OrderEvent>(r.get("event")).map_err(|e| corrupt(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Order::from_events(&events)
        .map(Some)
        .map_err(|e: ReplayError| corrupt(e.to_string()))
}

/// Appends `events` after `order`'s current version (0 for a new order) and writes their stream
/// events to the outbox, on the caller's transaction, linked to the event that caused them if
/// any. Returns the order with the events applied.
pub async fn append(
    conn: &mut PgConnection,
    id: OrderId,
    current: Option<Order>,
    events: &[OrderEvent],
    cause: Option<&EventMeta>,
) -> Result<Order, StoreError> {
    let corrupt = |problem: String| StoreError::Corrupt {
        order_id: id,
        problem,
    };
    let mut version = current.as_ref().map_or(0, |o| o.version());
    let mut order = current;
    let mut outgoing = Vec::with_capacity(events.len());
    for event in events {
        version += 1;
        let json = serde_json::to_value(event).map_err(|e| corrupt(e.to_string()))?;
        let inserted = sqlx::query(
            "INSERT INTO order_events (order_id, version, kind, event) VALUES ($1, $2, $3, $4)
             ON CONFLICT (order_id, version) DO NOTHING",
        )
        .bind(id.0)
        .bind(version as i32)
        .bind(event.kind())
        .bind(json)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Conflict(id));
        }
        order = Some(match order {
            None => {
                Order::from_events(std::iter::once(event)).map_err(|e| corrupt(e.to_string()))?
            }
            Some(mut o) => {
                o.apply(event).map_err(|e| corrupt(e.to_string()))?;
                o
            }
        });
        let now = order.as_ref().expect("set above");
        let out = convert::outgoing(now, event);
        outgoing.push(match cause {
            Some(cause) => out.caused_by(cause),
            None => out,
        });
    }
    jetmart_runtime::outbox::enqueue(conn, &outgoing).await?;
    order.ok_or_else(|| corrupt("no events to append to a new order".into()))
}

/// What the store holds for an idempotency key.
pub async fn claim_key(
    conn: &mut PgConnection,
    key: &str,
    fingerprint: &RequestFingerprint,
    new_id: OrderId,
) -> Result<Option<(OrderId, RequestFingerprint)>, StoreError> {
    // A concurrent PlaceOrder with the same key waits here for the first to commit.
    let inserted = sqlx::query(
        "INSERT INTO order_idempotency (idempotency_key, fingerprint, order_id) VALUES ($1, $2, $3)
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(key)
    .bind(fingerprint.as_str())
    .bind(new_id.0)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT fingerprint, order_id FROM order_idempotency WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    let id: Uuid = row.get("order_id");
    let stored: String = row.get("fingerprint");
    let stored = RequestFingerprint::parse(&stored).map_err(|e| StoreError::Corrupt {
        order_id: OrderId(id),
        problem: e.to_string(),
    })?;
    Ok(Some((OrderId(id), stored)))
}
