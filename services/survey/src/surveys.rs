//! Reading surveys and recording answers: the use cases behind both the HTTP form
//! ([`crate::pages`]) and gRPC ([`crate::grpc`]), so the two answer alike.
//!
//! Order of checks for an answer: the token (unknown, then spent or expired), then the answer
//! itself. Recording spends the token, stores the response and writes `survey.completed` to the
//! outbox in one transaction; any refusal rolls back and changes nothing.

use chrono::{DateTime, Utc};
use jetmart_proto::survey::v1::SurveyCompleted;
use jetmart_runtime::{OutgoingEvent, outbox};
use sqlx::PgPool;
use uuid::Uuid;

use crate::NAME;
use crate::domain::{
    NpsSummary, ResponseInput, SurveyToken, TokenError, TokenState, ValidResponse,
    check_redeemable, survey_link, validate_response,
};
use crate::error::{ApiError, FieldViolation};
use crate::store::{self, StoreError, SurveyRecord};
use jetmart_kit::time::timestamp;

/// The score as received: absent, unreadable, or a number (checked against 0..=10 later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreInput {
    Missing,
    NotANumber,
    Given(i64),
}

impl ScoreInput {
    /// From a form field: empty means missing.
    pub fn from_form(raw: Option<&str>) -> ScoreInput {
        match raw.map(str::trim) {
            None | Some("") => ScoreInput::Missing,
            Some(s) => s
                .parse::<i64>()
                .map_or(ScoreInput::NotANumber, ScoreInput::Given),
        }
    }
}

/// An answer as received from the form or gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerInput {
    pub score: ScoreInput,
    pub comment: Option<String>,
}

/// Where a survey stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Completed,
    Expired,
}

pub fn status(record: &SurveyRecord, now: DateTime<Utc>) -> Status {
    if record.used_at.is_some() || record.response.is_some() {
        Status::Completed
    } else if now >= record.expires_at {
        Status::Expired
    } else {
        Status::Pending
    }
}

#[derive(Debug, Clone)]
pub struct Surveys {
    pool: PgPool,
    public_base: String,
    max_comment_chars: usize,
}

impl Surveys {
    pub fn new(pool: PgPool, public_base: String, max_comment_chars: usize) -> Self {
        Self {
            pool,
            public_base,
            max_comment_chars,
        }
    }

    pub fn max_comment_chars(&self) -> usize {
        self.max_comment_chars
    }

    /// The emailed link for a token the caller already holds.
    pub fn link(&self, token: &SurveyToken) -> String {
        survey_link(&self.public_base, token)
    }

    /// Checks an answer, reporting every bad field.
    pub fn validate(&self, input: &AnswerInput) -> Result<ValidResponse, Vec<FieldViolation>> {
        let (score, mut violations) = match input.score {
            ScoreInput::Given(n) => (n, Vec::new()),
            // 0 stands in for the missing score so the comment is still checked.
            ScoreInput::Missing => (
                0,
                vec![FieldViolation::new(
                    "score",
                    "is required: choose a score from 0 to 10",
                )],
            ),
            ScoreInput::NotANumber => (
                0,
                vec![FieldViolation::new(
                    "score",
                    "must be a whole number from 0 to 10",
                )],
            ),
        };
        let response = ResponseInput {
            score,
            comment: input.comment.clone(),
        };
        match validate_response(&response, self.max_comment_chars) {
            Ok(valid) if violations.is_empty() => Ok(valid),
            Ok(_) => Err(violations),
            Err(found) => {
                violations.extend(found.iter().map(|v| {
                    // The domain's messages start with the field name; the field is named apart.
                    let text = v.to_string();
                    let text = text.strip_prefix(v.field()).unwrap_or(&text).trim_start();
                    FieldViolation::new(v.field(), text)
                }));
                Err(violations)
            }
        }
    }

    /// The survey behind a token whatever its state; `Malformed` or `Unknown` if none.
    pub async fn by_token(&self, token: &str) -> Result<(SurveyToken, SurveyRecord), ApiError> {
        let token = SurveyToken::parse(token)?;
        let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
        let record = store::survey_by_token(&mut conn, &token.hash())
            .await?
            .ok_or(TokenError::Unknown)?;
        Ok((token, record))
    }

    /// The survey behind a token that can still be answered (for showing the form).
    pub async fn open(&self, token: &str) -> Result<(SurveyToken, SurveyRecord), ApiError> {
        let (token, record) = self.by_token(token).await?;
        check_redeemable(Some(&token_state(&record)), Utc::now())?;
        Ok((token, record))
    }

    pub async fn by_id(&self, survey_id: Uuid) -> Result<SurveyRecord, ApiError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
        store::survey_by_id(&mut conn, survey_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(survey_id.to_string()))
    }

    /// Records the answer for `token`: spends it, stores the response and emits
    /// `survey.completed`, all or nothing. Returns the completed survey.
    pub async fn submit(
        &self,
        token: &str,
        input: &AnswerInput,
    ) -> Result<(SurveyToken, SurveyRecord), ApiError> {
        let token = SurveyToken::parse(token)?;
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let found = store::lock_invitation(&mut tx, &token.hash()).await?;
        let now = Utc::now();
        check_redeemable(found.as_ref().map(token_state).as_ref(), now)?;
        let mut record = found.ok_or(TokenError::Unknown)?;
        let answer = self.validate(input).map_err(ApiError::Invalid)?;
        let comment = answer.comment.as_deref();
        if !store::record_response(&mut tx, record.survey_id, answer.score, comment, now).await? {
            // Unreachable while we hold the lock; refuse rather than double-record.
            return Err(TokenError::AlreadyUsed { used_at: now }.into());
        }
        let completed = SurveyCompleted {
            survey_id: record.survey_id.to_string(),
            order_id: record.order_id.to_string(),
            customer_id: record.customer_id.clone(),
            score: i32::from(answer.score.value()),
            comment: answer.comment.clone().unwrap_or_default(),
            completed_at: Some(timestamp(now)),
        };
        let mut event = OutgoingEvent::at(NAME, &completed.survey_id, &completed, now);
        if let Some(correlation) = &record.correlation_id {
            // Same saga as the order and the invitation.
            event = event.with_correlation_id(correlation);
        }
        outbox::enqueue(&mut tx, &[event])
            .await
            .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        tracing::info!(survey_id = %record.survey_id, order_id = %record.order_id, score = answer.score.value(), "survey answered");
        record.used_at = Some(now);
        record.response = Some(store::StoredResponse {
            score: answer.score,
            comment: answer.comment,
            answered_at: now,
        });
        Ok((token, record))
    }

    /// NPS over every answer and the number of invitations.
    pub async fn nps(&self) -> Result<(NpsSummary, i64), ApiError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
        Ok(store::nps(&mut conn).await?)
    }
}

fn token_state(record: &SurveyRecord) -> TokenState {
    TokenState {
        expires_at: record.expires_at,
        used_at: record.used_at,
    }
}
