//! Postgres queries of the payment service (runtime-checked sqlx queries: no database at build
//! time).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::{Amount, AuthorizationId, Payment};

/// A payment row: the domain [`Payment`] plus what only storage and the API need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPayment {
    pub payment: Payment,
    pub decline_message: Option<String>,
    /// Set before the first authorize call (see the migration).
    pub authorize_requested_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub authorized_at: Option<DateTime<Utc>>,
    pub declined_at: Option<DateTime<Utc>>,
    pub captured_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
}

impl StoredPayment {
    pub fn new(payment: Payment) -> StoredPayment {
        StoredPayment {
            payment,
            decline_message: None,
            authorize_requested_at: None,
            cancelled_at: None,
            authorized_at: None,
            declined_at: None,
            captured_at: None,
            voided_at: None,
        }
    }
}

const COLUMNS: &str = "payment_id, order_id, status, amount_minor, currency, authorization_id, \
     decline_reason, decline_message, authorize_requested_at, cancelled_at, created_at, updated_at, \
     authorized_at, declined_at, captured_at, voided_at";

fn corrupt(column: &str, e: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.into(),
        source: e.into(),
    }
}

fn from_row(row: &PgRow) -> Result<StoredPayment, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let reason: Option<String> = row.try_get("decline_reason")?;
    let payment = Payment {
        id: row.try_get("payment_id")?,
        order_id: row.try_get("order_id")?,
        amount: Amount::new(
            row.try_get("amount_minor")?,
            row.try_get::<String, _>("currency")?,
        ),
        status: status.parse().map_err(|e| corrupt("status", e))?,
        authorization_id: row
            .try_get::<Option<String>, _>("authorization_id")?
            .map(AuthorizationId),
        decline_reason: reason
            .map(|r| r.parse())
            .transpose()
            .map_err(|e| corrupt("decline_reason", e))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    };
    Ok(StoredPayment {
        payment,
        decline_message: row.try_get("decline_message")?,
        authorize_requested_at: row.try_get("authorize_requested_at")?,
        cancelled_at: row.try_get("cancelled_at")?,
        authorized_at: row.try_get("authorized_at")?,
        declined_at: row.try_get("declined_at")?,
        captured_at: row.try_get("captured_at")?,
        voided_at: row.try_get("voided_at")?,
    })
}

/// Inserts `p` unless the order already has a payment (then nothing changes).
pub async fn insert_if_absent(
    conn: &mut PgConnection,
    p: &StoredPayment,
) -> Result<(), sqlx::Error> {
    let pay = &p.payment;
    sqlx::query(
        "INSERT INTO payments (payment_id, order_id, status, amount_minor, currency, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(pay.id)
    .bind(pay.order_id)
    .bind(pay.status.as_str())
    .bind(pay.amount.minor_units)
    .bind(&pay.amount.currency)
    .bind(pay.created_at)
    .bind(pay.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The committed payment of an order.
pub async fn get(pool: &PgPool, order_id: Uuid) -> Result<Option<StoredPayment>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payments WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// The payment of an order, row-locked until the transaction ends: every transition of one
/// payment is serialized through this lock.
pub async fn lock(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<StoredPayment>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payments WHERE order_id = $1 FOR UPDATE"
    ))
    .bind(order_id)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Writes every mutable column of a locked payment.
pub async fn save(conn: &mut PgConnection, p: &StoredPayment) -> Result<(), sqlx::Error> {
    let pay = &p.payment;
    sqlx::query(
        "UPDATE payments SET status = $2, authorization_id = $3, decline_reason = $4,
             decline_message = $5, cancelled_at = $6, updated_at = $7, authorized_at = $8,
             declined_at = $9, captured_at = $10, voided_at = $11
         WHERE order_id = $1",
    )
    .bind(pay.order_id)
    .bind(pay.status.as_str())
    .bind(pay.authorization_id.as_ref().map(|a| a.0.as_str()))
    .bind(pay.decline_reason.map(|r| r.as_str()))
    .bind(&p.decline_message)
    .bind(p.cancelled_at)
    .bind(pay.updated_at)
    .bind(p.authorized_at)
    .bind(p.declined_at)
    .bind(p.captured_at)
    .bind(p.voided_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Notes, committed on its own, that an authorize call is about to be made.
pub async fn mark_authorize_requested(pool: &PgPool, order_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payments SET authorize_requested_at = COALESCE(authorize_requested_at, now())
         WHERE order_id = $1",
    )
    .bind(order_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether the order's cancel has been recorded (committed).
pub async fn is_cancelled(pool: &PgPool, order_id: Uuid) -> Result<bool, sqlx::Error> {
    let cancelled: Option<bool> =
        sqlx::query_scalar("SELECT cancelled_at IS NOT NULL FROM payments WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(pool)
            .await?;
    Ok(cancelled.unwrap_or(false))
}

/// One gateway call, for the attempts log.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub order_id: Uuid,
    pub operation: &'static str,
    pub attempt: u32,
    pub event_id: Uuid,
    pub delivery: i64,
    pub outcome: &'static str,
    pub detail: Option<&'a str>,
    pub latency: Duration,
    pub started_at: DateTime<Utc>,
}

pub async fn record_attempt(pool: &PgPool, a: &Attempt<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_gateway_attempts
             (order_id, operation, attempt, event_id, delivery, outcome, detail, latency_us, started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(a.order_id)
    .bind(a.operation)
    .bind(i32::try_from(a.attempt).unwrap_or(i32::MAX))
    .bind(a.event_id)
    .bind(a.delivery)
    .bind(a.outcome)
    .bind(a.detail)
    .bind(i64::try_from(a.latency.as_micros()).unwrap_or(i64::MAX))
    .bind(a.started_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gateway calls made for an order.
pub async fn attempt_count(pool: &PgPool, order_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM payment_gateway_attempts WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
}
