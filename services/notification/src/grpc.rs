//! The `NotificationService` gRPC API: notifications of one order or one customer, newest first.

use jetmart_proto::notification::v1 as pb;
use jetmart_proto::notification::v1::list_notifications_request::Filter as PbFilter;
use jetmart_proto::notification::v1::notification_service_server::NotificationService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::EmailTemplate;
use crate::error::{ApiError, FieldViolation};
use crate::handlers::proto_template;
use crate::store::{self, Filter, NotificationRow, PageToken, Status as RowStatus};
use jetmart_kit::time::timestamp;

const DEFAULT_PAGE: i64 = 20;
/// Larger page sizes are capped, as the proto says, not refused.
const MAX_PAGE: i64 = 100;
/// Same bound as the order service puts on customer ids.
const MAX_CUSTOMER_ID_LEN: usize = 128;

#[derive(Debug, Clone)]
pub struct NotificationApi {
    pool: PgPool,
}

impl NotificationApi {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// The request's filter, page size and position, or every problem with them.
fn validate(
    req: &pb::ListNotificationsRequest,
) -> Result<(Filter, i64, Option<PageToken>), ApiError> {
    let mut violations = Vec::new();
    let mut bad = |field: &str, description: &str| {
        violations.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        })
    };
    let filter = match &req.filter {
        None => {
            bad("filter", "set order_id or customer_id");
            None
        }
        Some(PbFilter::OrderId(id)) => match Uuid::parse_str(id) {
            Ok(id) => Some(Filter::Order(id)),
            Err(_) => {
                bad("order_id", "must be a UUID");
                None
            }
        },
        Some(PbFilter::CustomerId(id)) if id.trim().is_empty() => {
            bad("customer_id", "must not be empty");
            None
        }
        Some(PbFilter::CustomerId(id)) if id.len() > MAX_CUSTOMER_ID_LEN => {
            bad("customer_id", "at most 128 bytes");
            None
        }
        Some(PbFilter::CustomerId(id)) => Some(Filter::Customer(id.clone())),
    };
    let page_size = match i64::from(req.page_size) {
        0 => DEFAULT_PAGE,
        n if n < 0 => {
            bad("page_size", "must not be negative");
            DEFAULT_PAGE
        }
        n => n.min(MAX_PAGE),
    };
    let after = if req.page_token.is_empty() {
        None
    } else {
        let t = PageToken::decode(&req.page_token);
        if t.is_none() {
            bad("page_token", "is not a token this service issued");
        }
        t
    };
    match filter {
        Some(filter) if violations.is_empty() => Ok((filter, page_size, after)),
        _ => Err(ApiError::Invalid(violations)),
    }
}

fn notification(row: NotificationRow) -> pb::Notification {
    let template = EmailTemplate::ALL
        .into_iter()
        .find(|t| t.name() == row.template)
        .map_or(pb::NotificationTemplate::Unspecified, proto_template);
    let status = match row.status {
        Some(RowStatus::Sent) => pb::NotificationStatus::Sent,
        Some(RowStatus::Failed) => pb::NotificationStatus::Failed,
        Some(RowStatus::Pending) => pb::NotificationStatus::Pending,
        None => pb::NotificationStatus::Unspecified,
    };
    pb::Notification {
        notification_id: row.notification_id.to_string(),
        order_id: row.order_id.to_string(),
        customer_id: row.customer_id,
        survey_id: row.survey_id.unwrap_or_default(),
        template: template as i32,
        recipient: row.recipient,
        status: status as i32,
        attempts: row.attempts,
        message_id: row.message_id,
        error: row.error.unwrap_or_default(),
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let (filter, page_size, after) = validate(request.get_ref())?;
        let (rows, next) = store::list(&self.pool, &filter, page_size, after)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: rows.into_iter().map(notification).collect(),
            next_page_token: next.map(|t| t.encode()).unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(filter: Option<PbFilter>, page_size: i32, token: &str) -> pb::ListNotificationsRequest {
        pb::ListNotificationsRequest {
            filter,
            page_size,
            page_token: token.into(),
        }
    }

    fn fields(r: Result<(Filter, i64, Option<PageToken>), ApiError>) -> Vec<String> {
        match r {
            Err(ApiError::Invalid(v)) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("expected violations, got {other:?}"),
        }
    }

    #[test]
    fn page_sizes_default_and_cap() {
        let id = Uuid::now_v7();
        let by_order = || Some(PbFilter::OrderId(id.to_string()));
        assert_eq!(validate(&req(by_order(), 0, "")).unwrap().1, DEFAULT_PAGE);
        assert_eq!(validate(&req(by_order(), 7, "")).unwrap().1, 7);
        assert_eq!(validate(&req(by_order(), 10_000, "")).unwrap().1, MAX_PAGE);
        assert_eq!(
            validate(&req(Some(PbFilter::CustomerId("c-1".into())), 0, ""))
                .unwrap()
                .0,
            Filter::Customer("c-1".into())
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(fields(validate(&req(None, 0, ""))), ["filter"]);
        assert_eq!(
            fields(validate(&req(
                Some(PbFilter::OrderId("x".into())),
                -1,
                "zz"
            ))),
            ["order_id", "page_size", "page_token"]
        );
        assert_eq!(
            fields(validate(&req(
                Some(PbFilter::CustomerId(" ".into())),
                0,
                ""
            ))),
            ["customer_id"]
        );
        assert_eq!(
            fields(validate(&req(
                Some(PbFilter::CustomerId("c".repeat(129))),
                0,
                ""
            ))),
            ["customer_id"]
        );
    }
}
