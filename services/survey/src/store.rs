//! Postgres queries of the survey service: customer history, invitations and responses.
//! Only token hashes are ever bound here, never tokens.

use chrono::{DateTime, Utc};
use jetmart_runtime::consumer::HandlerError;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::{
    CustomerHistory, Decision, Ineligible, NpsCategory, NpsSummary, OrderFacts, Score, TokenHash,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored survey {survey_id} is unreadable: {problem}")]
    Corrupt { survey_id: Uuid, problem: String },
}

impl StoreError {
    /// The database is unreachable or saturated (worth retrying), as opposed to a bug.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
            )
        )
    }
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt { .. } => Self::permanent(e),
            other => Self::transient(other),
        }
    }
}

/// The short code of a decision, as stored in `survey_orders.decision`.
pub fn decision_code(decision: &Decision) -> &'static str {
    match decision {
        Decision::Eligible => "invited",
        Decision::NotEligible(why) => match why {
            Ineligible::CurrencyNotConfigured { .. } => "currency_not_configured",
            Ineligible::BelowMinimum { .. } => "below_minimum",
            Ineligible::NotFirstOrder { .. } => "not_first_order",
            Ineligible::RecentlyInvited { .. } => "recently_invited",
            Ineligible::NotSampled => "not_sampled",
        },
    }
}

/// Whether the rules already decided on this order (under any event id).
pub async fn order_decided(conn: &mut PgConnection, order_id: Uuid) -> Result<bool, StoreError> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM survey_orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

/// The customer's history before this order, with the customer's row locked until the
/// transaction ends so that two decisions for one customer never interleave.
pub async fn lock_customer(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<CustomerHistory, StoreError> {
    // A concurrent first insert of the same customer waits here for the other to commit.
    sqlx::query("INSERT INTO survey_customers (customer_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query(
        "SELECT confirmed_orders, last_invited_at FROM survey_customers
         WHERE customer_id = $1 FOR UPDATE",
    )
    .bind(customer_id)
    .fetch_one(&mut *conn)
    .await?;
    let orders: i32 = row.try_get("confirmed_orders")?;
    Ok(CustomerHistory {
        earlier_confirmed_orders: u64::try_from(orders).unwrap_or(0),
        last_invited_at: row.try_get("last_invited_at")?,
    })
}

/// Records the order, what was decided, and the customer's updated history. An invited order
/// moves the customer's last invitation to the order's (event) time.
pub async fn record_decision(
    conn: &mut PgConnection,
    order: &OrderFacts,
    decision: &Decision,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO survey_orders (order_id, customer_id, currency, total_minor, confirmed_at, decision)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(order.order_id)
    .bind(&order.customer_id)
    .bind(&order.currency)
    .bind(order.total_minor)
    .bind(order.confirmed_at)
    .bind(decision_code(decision))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE survey_customers SET
             confirmed_orders = confirmed_orders + 1,
             first_order_id = COALESCE(first_order_id, $2),
             first_confirmed_at = COALESCE(first_confirmed_at, $3),
             last_invited_at = CASE WHEN $4 THEN GREATEST(last_invited_at, $3) ELSE last_invited_at END,
             updated_at = now()
         WHERE customer_id = $1",
    )
    .bind(&order.customer_id)
    .bind(order.order_id)
    .bind(order.confirmed_at)
    .bind(*decision == Decision::Eligible)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A new invitation for an invited order.
#[derive(Debug, Clone)]
pub struct NewInvitation<'a> {
    pub survey_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: &'a str,
    pub token_hash: &'a TokenHash,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub correlation_id: Option<&'a str>,
}

pub async fn insert_invitation(
    conn: &mut PgConnection,
    i: &NewInvitation<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO survey_invitations
             (survey_id, order_id, customer_id, token_hash, requested_at, expires_at, correlation_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(i.survey_id)
    .bind(i.order_id)
    .bind(i.customer_id)
    .bind(i.token_hash.as_str())
    .bind(i.requested_at)
    .bind(i.expires_at)
    .bind(i.correlation_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An answer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub score: Score,
    pub comment: Option<String>,
    pub answered_at: DateTime<Utc>,
}

/// An invitation and its answer, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurveyRecord {
    pub survey_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: String,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub correlation_id: Option<String>,
    pub response: Option<StoredResponse>,
}

const SELECT_SURVEY: &str =
    "SELECT i.survey_id, i.order_id, i.customer_id, i.requested_at, i.expires_at,
            i.used_at, i.correlation_id, r.score, r.comment, r.answered_at
     FROM survey_invitations i LEFT JOIN survey_responses r ON r.survey_id = i.survey_id";

fn survey_from_row(row: &PgRow) -> Result<SurveyRecord, StoreError> {
    let survey_id: Uuid = row.try_get("survey_id")?;
    let score: Option<i16> = row.try_get("score")?;
    let response = match score {
        None => None,
        Some(s) => Some(StoredResponse {
            score: Score::new(i64::from(s)).ok_or_else(|| StoreError::Corrupt {
                survey_id,
                problem: format!("score {s} out of range"),
            })?,
            comment: row.try_get("comment")?,
            answered_at: row.try_get("answered_at")?,
        }),
    };
    Ok(SurveyRecord {
        survey_id,
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        requested_at: row.try_get("requested_at")?,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
        correlation_id: row.try_get("correlation_id")?,
        response,
    })
}

pub async fn survey_by_id(
    conn: &mut PgConnection,
    survey_id: Uuid,
) -> Result<Option<SurveyRecord>, StoreError> {
    let row = sqlx::query(&format!("{SELECT_SURVEY} WHERE i.survey_id = $1"))
        .bind(survey_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(survey_from_row).transpose()
}

pub async fn survey_by_token(
    conn: &mut PgConnection,
    hash: &TokenHash,
) -> Result<Option<SurveyRecord>, StoreError> {
    let row = sqlx::query(&format!("{SELECT_SURVEY} WHERE i.token_hash = $1"))
        .bind(hash.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(survey_from_row).transpose()
}

/// The invitation behind a token, locked until the transaction ends: a concurrent answer with
/// the same token waits here and then sees it used.
pub async fn lock_invitation(
    conn: &mut PgConnection,
    hash: &TokenHash,
) -> Result<Option<SurveyRecord>, StoreError> {
    let row = sqlx::query(
        "SELECT survey_id, order_id, customer_id, requested_at, expires_at, used_at, correlation_id,
                NULL::smallint AS score, NULL::text AS comment, NULL::timestamptz AS answered_at
         FROM survey_invitations WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(hash.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(survey_from_row).transpose()
}

/// Spends the token and stores the answer. The caller holds the invitation's lock and has
/// checked that it is redeemable at `at`; the guard in the UPDATE makes a second spend a no-op
/// that returns false.
pub async fn record_response(
    conn: &mut PgConnection,
    survey_id: Uuid,
    score: Score,
    comment: Option<&str>,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let spent = sqlx::query(
        "UPDATE survey_invitations SET used_at = $2
         WHERE survey_id = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(survey_id)
    .bind(at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if spent == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO survey_responses (survey_id, score, comment, answered_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(survey_id)
    .bind(i16::from(score.value()))
    .bind(comment)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// NPS over every answer, plus the number of invitations.
pub async fn nps(conn: &mut PgConnection) -> Result<(NpsSummary, i64), StoreError> {
    let rows = sqlx::query("SELECT score, count(*) AS n FROM survey_responses GROUP BY score")
        .fetch_all(&mut *conn)
        .await?;
    let mut summary = NpsSummary::default();
    for row in rows {
        let score: i16 = row.try_get("score")?;
        let n: i64 = row.try_get("n")?;
        let Some(score) = Score::new(i64::from(score)) else {
            continue; // the CHECK constraint makes this unreachable
        };
        let n = u64::try_from(n).unwrap_or(0);
        match score.category() {
            NpsCategory::Promoter => summary.promoters += n,
            NpsCategory::Passive => summary.passives += n,
            NpsCategory::Detractor => summary.detractors += n,
        }
    }
    let requested: i64 = sqlx::query_scalar("SELECT count(*) FROM survey_invitations")
        .fetch_one(&mut *conn)
        .await?;
    Ok((summary, requested))
}

/// Deletes published survey.requested events from the outbox: they carry the token, and the
/// runtime keeps published rows for a day by default. Unpublished rows are left to the relay.
pub async fn scrub_published_tokens(conn: &mut PgConnection) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM jetmart_outbox
         WHERE published_at IS NOT NULL AND subject LIKE 'survey.requested.%'",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
