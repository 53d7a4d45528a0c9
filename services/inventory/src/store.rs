//! Postgres access of the inventory service. Every stock change goes through [`apply`], which
//! asks the pure domain for the new level and writes it together with its ledger entry.
//!
//! Locking (so no unit is ever sold twice, with any number of replicas):
//! - events of one order are serialized by a transaction-scoped advisory lock on the order id
//!   ([`lock_order`]), taken first;
//! - stock rows are then locked with `SELECT ... ORDER BY sku FOR UPDATE` ([`lock_stock`]), the
//!   same order in every transaction, so two multi-SKU reservations cannot deadlock;
//! - the write itself is a compare-and-set on the locked levels, and CHECK constraints refuse a
//!   negative bucket even if all of the above were bypassed.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::{Movement, MovementError, RequestedLine, StockLevel, apply_movement};

/// Longest SKU accepted.
pub const MAX_SKU_LEN: usize = 64;

/// SKUs are 1..=64 of `[A-Za-z0-9_-]`: they become the last token of NATS subjects
/// (`inventory.low.<sku>`), so dots, wildcards and spaces are out. The table checks the same.
pub fn valid_sku(sku: &str) -> bool {
    !sku.is_empty()
        && sku.len() <= MAX_SKU_LEN
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Movement(#[from] MovementError),
    /// The locked row changed under us or holds an impossible value; the transaction is retried.
    #[error("stock row of {sku} changed concurrently or is inconsistent")]
    Conflict { sku: String },
}

/// One SKU's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRow {
    pub sku: String,
    pub level: StockLevel,
    pub low_stock_threshold: u64,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

impl StockRow {
    fn from_row(row: &PgRow) -> Result<Self, StoreError> {
        let sku: String = row.try_get("sku")?;
        let unsigned = |name: &str| -> Result<u64, StoreError> {
            let v: i64 = row.try_get(name)?;
            // The table's CHECKs make this unreachable; refuse rather than wrap.
            u64::try_from(v).map_err(|_| StoreError::Conflict { sku: sku.clone() })
        };
        Ok(Self {
            level: StockLevel {
                available: unsigned("available")?,
                reserved: unsigned("reserved")?,
                sold: unsigned("sold")?,
            },
            low_stock_threshold: unsigned("low_stock_threshold")?,
            version: row.try_get("version")?,
            updated_at: row.try_get("updated_at")?,
            sku,
        })
    }

    pub fn to_proto(&self) -> jetmart_proto::inventory::v1::StockLevel {
        jetmart_proto::inventory::v1::StockLevel {
            sku: self.sku.clone(),
            available: as_i64(self.level.available),
            reserved: as_i64(self.level.reserved),
            sold: as_i64(self.level.sold),
            low_stock_threshold: as_i64(self.low_stock_threshold),
            version: self.version,
            updated_at: Some(jetmart_kit::time::timestamp(self.updated_at)),
        }
    }
}

/// Levels read from BIGINT columns always fit; saturate instead of panicking anyway.
pub(crate) fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const STOCK_COLUMNS: &str =
    "sku, available, reserved, sold, low_stock_threshold, version, updated_at";

// ---------------------------------------------------------------------------------------------
// Stock

/// Locks the rows of `skus` (that exist) in SKU order and returns them in that order.
pub async fn lock_stock(
    conn: &mut PgConnection,
    skus: &[String],
) -> Result<Vec<StockRow>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {STOCK_COLUMNS} FROM inventory_stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE"
    ))
    .bind(skus)
    .fetch_all(conn)
    .await?;
    rows.iter().map(StockRow::from_row).collect()
}

/// Reads one SKU (no lock).
pub async fn get_stock(pool: &PgPool, sku: &str) -> Result<Option<StockRow>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {STOCK_COLUMNS} FROM inventory_stock WHERE sku = $1"
    ))
    .bind(sku)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(StockRow::from_row).transpose()
}

/// Reads several SKUs (no lock), ordered by SKU.
pub async fn get_stocks(pool: &PgPool, skus: &[String]) -> Result<Vec<StockRow>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {STOCK_COLUMNS} FROM inventory_stock WHERE sku = ANY($1) ORDER BY sku"
    ))
    .bind(skus)
    .fetch_all(pool)
    .await?;
    rows.iter().map(StockRow::from_row).collect()
}

/// Up to `limit` SKUs after `after` (exclusive), ordered by SKU.
pub async fn list_stock(
    pool: &PgPool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<StockRow>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {STOCK_COLUMNS} FROM inventory_stock
         WHERE $1::text IS NULL OR sku > $1::text COLLATE \"C\"
         ORDER BY sku LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(StockRow::from_row).collect()
}

/// Creates an empty row for `sku` unless it exists. Returns whether it was created.
pub async fn create_stock_row(
    conn: &mut PgConnection,
    sku: &str,
    low_stock_threshold: i64,
) -> Result<bool, StoreError> {
    let created = sqlx::query(
        "INSERT INTO inventory_stock (sku, low_stock_threshold) VALUES ($1, $2) ON CONFLICT (sku) DO NOTHING",
    )
    .bind(sku)
    .bind(low_stock_threshold)
    .execute(conn)
    .await?
    .rows_affected()
        == 1;
    Ok(created)
}

/// What a ledger entry refers to.
#[derive(Debug, Clone, Copy)]
pub enum LedgerRef<'a> {
    Order(&'a str),
    Adjustment(Uuid),
}

/// Applies `movement` to the locked `row`: the domain computes the new level (or refuses), the
/// row is updated only if it still holds the locked values, and the movement is appended to the
/// ledger. Returns the new row.
pub async fn apply(
    conn: &mut PgConnection,
    row: &StockRow,
    movement: &Movement,
    reference: LedgerRef<'_>,
) -> Result<StockRow, StoreError> {
    let before = row.level;
    let after = apply_movement(before, movement)?;
    let conflict = || StoreError::Conflict {
        sku: row.sku.clone(),
    };
    let col = |v: u64| i64::try_from(v).map_err(|_| MovementError::Overflow);
    let (a, r, s) = (
        col(after.available)?,
        col(after.reserved)?,
        col(after.sold)?,
    );
    let (a0, r0, s0) = (
        col(before.available)?,
        col(before.reserved)?,
        col(before.sold)?,
    );
    let updated = sqlx::query(
        "UPDATE inventory_stock
         SET available = $2, reserved = $3, sold = $4, version = version + 1, updated_at = now()
         WHERE sku = $1 AND available = $5 AND reserved = $6 AND sold = $7 AND version = $8
         RETURNING version, updated_at",
    )
    .bind(&row.sku)
    .bind(a)
    .bind(r)
    .bind(s)
    .bind(a0)
    .bind(r0)
    .bind(s0)
    .bind(row.version)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(conflict)?;

    let (order_id, adjustment_id, reason) = match (reference, movement) {
        (LedgerRef::Order(order), _) => (Some(order), None, None),
        (LedgerRef::Adjustment(id), Movement::Adjust { reason, .. }) => {
            (None, Some(id), Some(reason.as_str()))
        }
        (LedgerRef::Adjustment(_), _) => return Err(conflict()),
    };
    sqlx::query(
        "INSERT INTO inventory_ledger
           (sku, kind, available_delta, reserved_delta, sold_delta,
            available_after, reserved_after, sold_after, order_id, adjustment_id, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&row.sku)
    .bind(movement.kind())
    .bind(a - a0)
    .bind(r - r0)
    .bind(s - s0)
    .bind(a)
    .bind(r)
    .bind(s)
    .bind(order_id)
    .bind(adjustment_id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;

    Ok(StockRow {
        sku: row.sku.clone(),
        level: after,
        low_stock_threshold: row.low_stock_threshold,
        version: updated.try_get("version")?,
        updated_at: updated.try_get("updated_at")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Orders and reservations

/// What inventory did for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// Every line is reserved.
    Reserved,
    /// Nothing was reserved (short stock).
    Rejected,
    /// The reservation was given back (order cancelled).
    Released,
    /// The reservation became sold stock (order confirmed).
    Committed,
    /// Cancelled with nothing reserved; as the first record of an order, the tombstone of a
    /// cancel that overtook its placement.
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Rejected => "rejected",
            Self::Released => "released",
            Self::Committed => "committed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "reserved" => Self::Reserved,
            "rejected" => Self::Rejected,
            "released" => Self::Released,
            "committed" => Self::Committed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// Serializes every event of one order across replicas until the transaction ends.
pub async fn lock_order(conn: &mut PgConnection, order_id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('jetmart.inventory.order:' || $1, 0))",
    )
    .bind(order_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// [`lock_order`] for several orders, in key order (so that two callers cannot deadlock).
pub async fn lock_orders(conn: &mut PgConnection, order_ids: &[String]) -> Result<(), StoreError> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k) FROM (
             SELECT DISTINCT hashtextextended('jetmart.inventory.order:' || id, 0) AS k
             FROM unnest($1::text[]) AS id ORDER BY k) keys",
    )
    .bind(order_ids)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn order_status(
    conn: &mut PgConnection,
    order_id: &str,
) -> Result<Option<OrderStatus>, StoreError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM inventory_orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(conn)
            .await?;
    Ok(status.as_deref().and_then(OrderStatus::parse))
}

pub async fn insert_order(
    conn: &mut PgConnection,
    order_id: &str,
    status: OrderStatus,
    customer_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO inventory_orders (order_id, status, customer_id) VALUES ($1, $2, $3)")
        .bind(order_id)
        .bind(status.as_str())
        .bind(customer_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_order_status(
    conn: &mut PgConnection,
    order_id: &str,
    status: OrderStatus,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE inventory_orders SET status = $2, updated_at = now() WHERE order_id = $1")
        .bind(order_id)
        .bind(status.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Records the reserved lines of an order (one row per distinct SKU).
pub async fn insert_reservations(
    conn: &mut PgConnection,
    order_id: &str,
    lines: &[RequestedLine],
) -> Result<(), StoreError> {
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let quantities = lines
        .iter()
        .map(|l| i64::try_from(l.quantity).map_err(|_| MovementError::Overflow))
        .collect::<Result<Vec<i64>, _>>()?;
    sqlx::query(
        "INSERT INTO inventory_reservations (order_id, sku, quantity, status)
         SELECT $1, sku, quantity, 'reserved' FROM UNNEST($2::text[], $3::bigint[]) AS t(sku, quantity)",
    )
    .bind(order_id)
    .bind(&skus)
    .bind(&quantities)
    .execute(conn)
    .await?;
    Ok(())
}

/// The order's reservation lines still held, ordered by SKU.
pub async fn held_reservations(
    conn: &mut PgConnection,
    order_id: &str,
) -> Result<Vec<RequestedLine>, StoreError> {
    let rows = sqlx::query(
        "SELECT sku, quantity FROM inventory_reservations
         WHERE order_id = $1 AND status = 'reserved' ORDER BY sku",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let sku: String = row.try_get("sku")?;
            let quantity: i64 = row.try_get("quantity")?;
            let quantity =
                u64::try_from(quantity).map_err(|_| StoreError::Conflict { sku: sku.clone() })?;
            Ok(RequestedLine { sku, quantity })
        })
        .collect()
}

/// Moves the order's held reservation lines to `status` (released or committed).
pub async fn close_reservations(
    conn: &mut PgConnection,
    order_id: &str,
    status: OrderStatus,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE inventory_reservations SET status = $2, updated_at = now()
         WHERE order_id = $1 AND status = 'reserved'",
    )
    .bind(order_id)
    .bind(status.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// SKUs an order's reservation touched (any status), for refreshing the cache after commit.
/// The SKUs reserved by any of these orders, each once.
pub async fn skus_of_orders<'e>(
    db: impl sqlx::PgExecutor<'e>,
    order_ids: &[String],
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT sku FROM inventory_reservations WHERE order_id = ANY($1) ORDER BY sku",
    )
    .bind(order_ids)
    .fetch_all(db)
    .await?)
}

// ---------------------------------------------------------------------------------------------
// Adjustments

/// A recorded AdjustStock request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustmentRecord {
    pub adjustment_id: Uuid,
    pub sku: String,
    pub delta: i64,
    pub reason: String,
}

/// Claims `key` for a new adjustment. `Ok(None)` when claimed now (the caller goes on in the same
/// transaction); `Ok(Some(existing))` when a committed request already holds it. A concurrent
/// claim of the same key waits here until the first transaction ends.
pub async fn claim_adjustment(
    conn: &mut PgConnection,
    key: &str,
    record: &AdjustmentRecord,
) -> Result<Option<AdjustmentRecord>, StoreError> {
    let claimed = sqlx::query(
        "INSERT INTO inventory_adjustments (idempotency_key, adjustment_id, sku, delta, reason)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(key)
    .bind(record.adjustment_id)
    .bind(&record.sku)
    .bind(record.delta)
    .bind(&record.reason)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT adjustment_id, sku, delta, reason FROM inventory_adjustments WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_one(conn)
    .await?;
    Ok(Some(AdjustmentRecord {
        adjustment_id: row.try_get("adjustment_id")?,
        sku: row.try_get("sku")?,
        delta: row.try_get("delta")?,
        reason: row.try_get("reason")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_charset_and_length() {
        assert!(valid_sku("SKU-0001"));
        assert!(valid_sku("a_b-C9"));
        assert!(valid_sku(&"x".repeat(MAX_SKU_LEN)));
        for bad in ["", "SKU.1", "SKU*", "SKU>", "SKU 1", "SKÜ", "a/b"] {
            assert!(!valid_sku(bad), "{bad:?}");
        }
        assert!(!valid_sku(&"x".repeat(MAX_SKU_LEN + 1)));
    }

    #[test]
    fn order_status_round_trips() {
        for s in [
            OrderStatus::Reserved,
            OrderStatus::Rejected,
            OrderStatus::Released,
            OrderStatus::Committed,
            OrderStatus::Cancelled,
        ] {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(OrderStatus::parse("nope"), None);
    }
}
