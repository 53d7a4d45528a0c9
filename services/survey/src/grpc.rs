//! The `SurveyService` gRPC API: answers (SubmitResponse), reads (GetSurvey) and the NPS
//! summary. Survey messages never carry the token; `link` is filled only when the caller gave
//! the token (SubmitResponse, GetSurvey by token), since only its hash is stored.

use chrono::Utc;
use jetmart_proto::survey::v1 as pb;
use jetmart_proto::survey::v1::get_survey_request::Lookup;
use jetmart_proto::survey::v1::survey_service_server::SurveyService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::error::{ApiError, FieldViolation};
use crate::store::SurveyRecord;
use crate::surveys::{self, AnswerInput, ScoreInput, Surveys};
use jetmart_kit::time::timestamp;

#[derive(Debug, Clone)]
pub struct SurveyApi {
    surveys: Surveys,
}

impl SurveyApi {
    pub fn new(surveys: Surveys) -> Self {
        Self { surveys }
    }
}

fn survey(record: &SurveyRecord, link: Option<String>) -> pb::Survey {
    let status = match surveys::status(record, Utc::now()) {
        surveys::Status::Pending => pb::SurveyStatus::Pending,
        surveys::Status::Completed => pb::SurveyStatus::Completed,
        surveys::Status::Expired => pb::SurveyStatus::Expired,
    };
    let response = record.response.as_ref();
    pb::Survey {
        survey_id: record.survey_id.to_string(),
        order_id: record.order_id.to_string(),
        customer_id: record.customer_id.clone(),
        status: status as i32,
        link: link.unwrap_or_default(),
        score: response.map(|r| i32::from(r.score.value())),
        comment: response.and_then(|r| r.comment.clone()).unwrap_or_default(),
        requested_at: Some(timestamp(record.requested_at)),
        expires_at: Some(timestamp(record.expires_at)),
        completed_at: response.map(|r| timestamp(r.answered_at)),
    }
}

#[tonic::async_trait]
impl SurveyService for SurveyApi {
    async fn submit_response(
        &self,
        request: Request<pb::SubmitResponseRequest>,
    ) -> Result<Response<pb::SubmitResponseResponse>, Status> {
        let req = request.into_inner();
        let input = AnswerInput {
            score: req
                .score
                .map_or(ScoreInput::Missing, |s| ScoreInput::Given(i64::from(s))),
            comment: Some(req.comment),
        };
        if req.token.trim().is_empty() {
            // Nothing to look up: report every bad field at once.
            let mut violations = vec![FieldViolation::new(
                "token",
                "is required: the token from the survey link",
            )];
            violations.extend(self.surveys.validate(&input).err().unwrap_or_default());
            return Err(ApiError::Invalid(violations).into());
        }
        let (token, record) = self.surveys.submit(&req.token, &input).await?;
        Ok(Response::new(pb::SubmitResponseResponse {
            survey: Some(survey(&record, Some(self.surveys.link(&token)))),
        }))
    }

    async fn get_survey(
        &self,
        request: Request<pb::GetSurveyRequest>,
    ) -> Result<Response<pb::GetSurveyResponse>, Status> {
        let found = match request.into_inner().lookup {
            Some(Lookup::SurveyId(id)) => {
                let id = Uuid::parse_str(&id)
                    .map_err(|_| ApiError::field("survey_id", "must be a UUID"))?;
                survey(&self.surveys.by_id(id).await?, None)
            }
            Some(Lookup::Token(token)) => {
                let (token, record) = self.surveys.by_token(&token).await?;
                survey(&record, Some(self.surveys.link(&token)))
            }
            None => {
                return Err(ApiError::field("lookup", "set survey_id or token").into());
            }
        };
        Ok(Response::new(pb::GetSurveyResponse {
            survey: Some(found),
        }))
    }

    async fn get_nps_summary(
        &self,
        _request: Request<pb::GetNpsSummaryRequest>,
    ) -> Result<Response<pb::GetNpsSummaryResponse>, Status> {
        let (summary, requested) = self.surveys.nps().await?;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Ok(Response::new(pb::GetNpsSummaryResponse {
            summary: Some(pb::NpsSummary {
                promoters: count(summary.promoters),
                passives: count(summary.passives),
                detractors: count(summary.detractors),
                responses: count(summary.responses()),
                nps: summary.nps().unwrap_or(0.0),
                requested,
            }),
        }))
    }
}
