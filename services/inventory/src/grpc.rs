//! `jetmart.inventory.v1.InventoryService`.
//!
//! - GetStock: hot read from Redis; on a miss (or with Redis away) read from Postgres and put it
//!   back. INVALID_ARGUMENT for a malformed SKU, NOT_FOUND for one never stocked.
//! - ListStock: from Postgres, ordered by SKU, paginated with opaque page tokens.
//! - AdjustStock: see [`crate::adjust`]; the cache entry is rewritten after the commit.

use jetmart_kit::error::FieldViolation;
use jetmart_proto::inventory::v1::inventory_service_server::InventoryService;
use jetmart_proto::inventory::v1::{
    AdjustStockRequest, AdjustStockResponse, GetStockRequest, GetStockResponse, ListStockRequest,
    ListStockResponse,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::adjust::{self, AdjustRequest};
use crate::cache::StockCache;
use crate::error::ApiError;
use crate::store::{self, valid_sku};

/// ListStock page size when the request gives none, and the most it may ask for.
pub const DEFAULT_PAGE_SIZE: i32 = 100;
pub const MAX_PAGE_SIZE: i32 = 1000;

const TOKEN_PREFIX: &str = "v1:";

/// The page token after `sku`: opaque to clients (hex of a versioned cursor).
pub fn page_token(last_sku: &str) -> String {
    hex::encode(format!("{TOKEN_PREFIX}{last_sku}"))
}

/// The SKU a page token continues after.
pub fn parse_page_token(token: &str) -> Option<String> {
    let bytes = hex::decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let sku = text.strip_prefix(TOKEN_PREFIX)?;
    valid_sku(sku).then(|| sku.to_owned())
}

#[derive(Debug, Clone)]
pub struct InventoryApi {
    pub pool: PgPool,
    pub cache: StockCache,
    /// Threshold of SKUs that AdjustStock creates.
    pub new_sku_threshold: i64,
}

impl InventoryApi {
    async fn get_stock_row(&self, sku: &str) -> Result<store::StockRow, ApiError> {
        match self.cache.get(sku).await {
            Ok(Some(row)) => {
                self.cache.metrics.hits.inc();
                return Ok(row);
            }
            Ok(None) => {
                self.cache.metrics.misses.inc();
            }
            Err(e) => {
                self.cache.metrics.errors.inc();
                tracing::warn!(sku, error = %e, "cache read failed, reading Postgres");
            }
        }
        let row = store::get_stock(&self.pool, sku)
            .await?
            .ok_or_else(|| ApiError::NotFound(sku.to_owned()))?;
        self.cache.refresh(std::slice::from_ref(&row)).await;
        Ok(row)
    }
}

fn correlation_id<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("jetmart-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn get_stock(
        &self,
        request: Request<GetStockRequest>,
    ) -> Result<Response<GetStockResponse>, Status> {
        let sku = request.into_inner().sku;
        if !valid_sku(&sku) {
            let what = if sku.is_empty() {
                "required"
            } else {
                "not a valid SKU"
            };
            return Err(ApiError::InvalidArgument(vec![FieldViolation::new("sku", what)]).into());
        }
        let row = self.get_stock_row(&sku).await?;
        Ok(Response::new(GetStockResponse {
            stock_level: Some(row.to_proto()),
        }))
    }

    async fn list_stock(
        &self,
        request: Request<ListStockRequest>,
    ) -> Result<Response<ListStockResponse>, Status> {
        let req = request.into_inner();
        let mut violations = Vec::new();
        if req.page_size < 0 {
            violations.push(FieldViolation::new("page_size", "must not be negative"));
        }
        let after = if req.page_token.is_empty() {
            None
        } else {
            let parsed = parse_page_token(&req.page_token);
            if parsed.is_none() {
                violations.push(FieldViolation::new(
                    "page_token",
                    "not a token from a previous ListStock response",
                ));
            }
            parsed
        };
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations).into());
        }
        let size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        // One extra row tells whether another page follows.
        let mut rows = store::list_stock(&self.pool, after.as_deref(), i64::from(size) + 1)
            .await
            .map_err(ApiError::from)?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => page_token(&last.sku),
            _ => String::new(),
        };
        Ok(Response::new(ListStockResponse {
            stock_levels: rows.iter().map(store::StockRow::to_proto).collect(),
            next_page_token,
        }))
    }

    async fn adjust_stock(
        &self,
        request: Request<AdjustStockRequest>,
    ) -> Result<Response<AdjustStockResponse>, Status> {
        let correlation_id = correlation_id(&request);
        let req = request.into_inner();
        let req = AdjustRequest {
            sku: req.sku,
            delta: req.delta,
            reason: req.reason,
            idempotency_key: req.idempotency_key,
            new_sku_threshold: self.new_sku_threshold,
            correlation_id,
        };
        let outcome = adjust::adjust_stock(&self.pool, &req).await?;
        self.cache
            .refresh(std::slice::from_ref(&outcome.stock))
            .await;
        Ok(Response::new(AdjustStockResponse {
            stock_level: Some(outcome.stock.to_proto()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        assert_eq!(
            parse_page_token(&page_token("SKU-0007")).as_deref(),
            Some("SKU-0007")
        );
        for bad in [
            "",
            "zz",
            "00",
            &hex::encode("v2:SKU-1"),
            &hex::encode("v1:bad sku"),
        ] {
            assert_eq!(parse_page_token(bad), None, "{bad:?}");
        }
    }
}
