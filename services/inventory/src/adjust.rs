//! AdjustStock: a restock (delta > 0) or write-off (delta < 0) of available units, idempotent on
//! a client key, with its ledger entry and `inventory.adjusted` (+ `inventory.low` on a downward
//! crossing) in the same transaction. Used by the gRPC API and by `seed-demo`.

use chrono::Utc;
use jetmart_kit::error::FieldViolation;
use jetmart_runtime::outbox;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{LowStockRule, MAX_REASON_LEN, Movement, MovementError};
use crate::error::ApiError;
use crate::events;
use crate::store::{self, AdjustmentRecord, LedgerRef, MAX_SKU_LEN, StockRow, valid_sku};

/// Largest |delta| of one adjustment.
pub const MAX_ADJUST_DELTA: i64 = 1_000_000_000;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// A validated-on-use AdjustStock request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustRequest {
    pub sku: String,
    pub delta: i64,
    pub reason: String,
    pub idempotency_key: String,
    /// Low-stock threshold of the SKU if this adjustment creates it.
    pub new_sku_threshold: i64,
    /// Correlation id for the events (from the caller's metadata), if any.
    pub correlation_id: Option<String>,
}

/// What an adjustment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustOutcome {
    /// The SKU's stock now.
    pub stock: StockRow,
    /// False when the key had been used by the same request before (nothing changed now).
    pub applied: bool,
    pub adjustment_id: Uuid,
}

/// Every field violation of `req`; empty when it is valid.
pub fn violations(req: &AdjustRequest) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    if req.sku.is_empty() {
        v.push(FieldViolation::new("sku", "required"));
    } else if !valid_sku(&req.sku) {
        v.push(FieldViolation::new(
            "sku",
            format!("must be 1 to {MAX_SKU_LEN} characters of A-Z, a-z, 0-9, '-' and '_'"),
        ));
    }
    if req.delta == 0 {
        v.push(FieldViolation::new(
            "delta",
            "must not be 0 (positive restocks, negative writes off)",
        ));
    } else if req.delta.unsigned_abs() > MAX_ADJUST_DELTA.unsigned_abs() {
        v.push(FieldViolation::new(
            "delta",
            format!("must be within ±{MAX_ADJUST_DELTA}"),
        ));
    }
    if req.reason.trim().is_empty() {
        v.push(FieldViolation::new("reason", "required"));
    } else if req.reason.len() > MAX_REASON_LEN {
        v.push(FieldViolation::new(
            "reason",
            format!("at most {MAX_REASON_LEN} bytes"),
        ));
    }
    if req.idempotency_key.trim().is_empty() {
        v.push(FieldViolation::new("idempotency_key", "required"));
    } else if req.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        v.push(FieldViolation::new(
            "idempotency_key",
            format!("at most {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
        ));
    }
    v
}

/// Validates and applies `req` in one transaction. The caller refreshes the cache with
/// the returned row after this returns (the commit is done).
pub async fn adjust_stock(pool: &PgPool, req: &AdjustRequest) -> Result<AdjustOutcome, ApiError> {
    let invalid = violations(req);
    if !invalid.is_empty() {
        return Err(ApiError::InvalidArgument(invalid));
    }
    let mut tx = pool.begin().await?;
    // The ledger and the adjustment record reference the SKU's row, so it exists first; a
    // refused adjustment rolls the creation back with everything else.
    store::create_stock_row(&mut tx, &req.sku, req.new_sku_threshold).await?;
    // Lock the row before claiming the key: the claim's foreign-key check takes a KEY SHARE
    // lock on it, and two adjustments upgrading that to FOR UPDATE would deadlock each other.
    let row = store::lock_stock(&mut tx, std::slice::from_ref(&req.sku))
        .await?
        .pop()
        .ok_or_else(|| ApiError::Aborted(format!("stock row of {} vanished", req.sku)))?;
    let record = AdjustmentRecord {
        adjustment_id: Uuid::now_v7(),
        sku: req.sku.clone(),
        delta: req.delta,
        reason: req.reason.clone(),
    };
    if let Some(existing) = store::claim_adjustment(&mut tx, &req.idempotency_key, &record).await? {
        let same = existing.sku == record.sku
            && existing.delta == record.delta
            && existing.reason == record.reason;
        if !same {
            return Err(ApiError::AlreadyExists {
                key: req.idempotency_key.clone(),
            });
        }
        // Nothing changes: the transaction rolls back; the row read under the lock is current.
        return Ok(AdjustOutcome {
            stock: row,
            applied: false,
            adjustment_id: existing.adjustment_id,
        });
    }

    let movement = Movement::Adjust {
        delta: req.delta,
        reason: req.reason.clone(),
    };
    let after = match store::apply(
        &mut tx,
        &row,
        &movement,
        LedgerRef::Adjustment(record.adjustment_id),
    )
    .await
    {
        Ok(after) => after,
        Err(store::StoreError::Movement(e @ MovementError::InsufficientAvailable { .. })) => {
            return Err(ApiError::FailedPrecondition {
                subject: req.sku.clone(),
                description: format!(
                    "write-off of {} from {}: {e}",
                    req.delta.unsigned_abs(),
                    req.sku
                ),
            });
        }
        Err(store::StoreError::Movement(MovementError::Overflow)) => {
            return Err(ApiError::FailedPrecondition {
                subject: req.sku.clone(),
                description: format!(
                    "restock of {} would overflow the stock of {}",
                    req.delta, req.sku
                ),
            });
        }
        Err(e) => return Err(e.into()),
    };

    let now = Utc::now();
    let mut out = vec![events::adjusted(
        &req.sku,
        req.delta,
        &req.reason,
        after.level.available,
        record.adjustment_id,
        now,
    )];
    if let Some(low) = (LowStockRule {
        threshold: row.low_stock_threshold,
    })
    .check(&row.level, &after.level)
    {
        out.push(events::low(&req.sku, &low, now));
    }
    if let Some(correlation) = &req.correlation_id {
        out = out
            .into_iter()
            .map(|e| e.with_correlation_id(correlation))
            .collect();
    }
    outbox::enqueue(&mut tx, &out).await?;
    tx.commit().await?;
    tracing::info!(sku = %req.sku, delta = req.delta, available = after.level.available, "stock adjusted");
    Ok(AdjustOutcome {
        stock: after,
        applied: true,
        adjustment_id: record.adjustment_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> AdjustRequest {
        AdjustRequest {
            sku: "SKU-1".into(),
            delta: 5,
            reason: "restock".into(),
            idempotency_key: "k1".into(),
            new_sku_threshold: 0,
            correlation_id: None,
        }
    }

    fn fields(r: &AdjustRequest) -> Vec<String> {
        violations(r).into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn valid_requests_have_no_violations() {
        assert!(violations(&req()).is_empty());
        assert!(
            violations(&AdjustRequest {
                delta: -MAX_ADJUST_DELTA,
                ..req()
            })
            .is_empty()
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = AdjustRequest {
            sku: "bad sku".into(),
            delta: 0,
            reason: " ".into(),
            idempotency_key: String::new(),
            ..req()
        };
        assert_eq!(fields(&bad), ["sku", "delta", "reason", "idempotency_key"]);
        assert_eq!(
            fields(&AdjustRequest {
                sku: String::new(),
                ..req()
            }),
            ["sku"]
        );
        assert_eq!(
            fields(&AdjustRequest {
                delta: i64::MIN,
                ..req()
            }),
            ["delta"]
        );
        assert_eq!(
            fields(&AdjustRequest {
                delta: MAX_ADJUST_DELTA + 1,
                ..req()
            }),
            ["delta"]
        );
        assert_eq!(
            fields(&AdjustRequest {
                reason: "x".repeat(MAX_REASON_LEN + 1),
                ..req()
            }),
            ["reason"]
        );
        assert_eq!(
            fields(&AdjustRequest {
                idempotency_key: "k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1),
                ..req()
            }),
            ["idempotency_key"]
        );
    }
}
