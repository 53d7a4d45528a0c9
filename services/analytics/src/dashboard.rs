//! One dashboard read, shared by GetDashboard, `/api/dashboard` and the live page: the read
//! model's snapshot plus how far the analytics consumers have read each stream.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde::Serialize;

use crate::domain::{self, Snapshot};
use crate::error::{ApiError, FieldViolation};
use crate::ops::{self, Ops, StreamProgress};
use crate::read_model::{self, Query};

/// A dashboard at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    pub as_of: DateTime<Utc>,
    #[serde(flatten)]
    pub snapshot: Snapshot,
    pub streams: Vec<StreamProgress>,
}

/// Reads dashboards.
#[derive(Clone)]
pub struct Dashboards {
    redis: ConnectionManager,
    js: jetstream::Context,
}

impl std::fmt::Debug for Dashboards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboards").finish_non_exhaustive()
    }
}

impl Dashboards {
    pub fn new(redis: ConnectionManager, js: jetstream::Context) -> Self {
        Self { redis, js }
    }

    pub async fn read(&self, query: Query) -> Result<View, ApiError> {
        let as_of = Utc::now();
        let (snapshot, streams) = tokio::join!(
            read_model::snapshot(&self.redis, query, as_of),
            ops::progress(&self.js)
        );
        Ok(View {
            as_of,
            snapshot: snapshot?,
            streams,
        })
    }

    pub async fn ops(&self) -> Ops {
        ops::collect(&self.js).await
    }
}

/// Validates the request's sizes: 0 means the default, above the cap means the cap, below 0 is
/// an error.
pub fn query(series_minutes: i32, top_skus_limit: i32) -> Result<Query, ApiError> {
    let mut violations = Vec::new();
    let mut pick = |field: &'static str, value: i32, default: u32, max: u32| match value {
        0 => default,
        v if v < 0 => {
            violations.push(FieldViolation {
                field,
                description: format!("must be 0 (default {default}) or positive (at most {max})"),
            });
            default
        }
        v => (v as u32).min(max),
    };
    let query = Query {
        series_minutes: pick(
            "series_minutes",
            series_minutes,
            domain::DEFAULT_SERIES_MINUTES,
            domain::MAX_SERIES_MINUTES,
        ),
        top_skus: pick(
            "top_skus_limit",
            top_skus_limit,
            domain::DEFAULT_TOP_SKUS,
            domain::MAX_TOP_SKUS,
        ),
    };
    if violations.is_empty() {
        Ok(query)
    } else {
        Err(ApiError::Invalid(violations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_cap_and_refuse_negatives() {
        assert_eq!(query(0, 0).unwrap(), Query::default());
        let q = query(5000, 500).unwrap();
        assert_eq!((q.series_minutes, q.top_skus), (1440, 100));
        assert_eq!(
            query(3, 2).unwrap(),
            Query {
                series_minutes: 3,
                top_skus: 2
            }
        );
        match query(-1, -2) {
            Err(ApiError::Invalid(v)) => assert_eq!(v.len(), 2),
            other => panic!("{other:?}"),
        }
    }
}
