//! `jetmart.payment.v1.PaymentService`: reads payments (they are only ever changed by events).

use jetmart_proto::payment::v1 as pb;
use jetmart_proto::payment::v1::payment_service_server::PaymentService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::PaymentStatus;
use crate::error::ApiError;
use crate::handlers::{decline_reason_to_proto, money};
use crate::store::{self, StoredPayment};
use jetmart_kit::time::timestamp;

#[derive(Debug, Clone)]
pub struct PaymentApi {
    pool: PgPool,
}

impl PaymentApi {
    pub fn new(pool: PgPool) -> PaymentApi {
        PaymentApi { pool }
    }

    async fn read_payment(&self, order_id: &str) -> Result<pb::Payment, ApiError> {
        let order_id = parse_order_id(order_id)?;
        let stored = store::get(&self.pool, order_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no payment for order {order_id}")))?;
        let attempts = store::attempt_count(&self.pool, order_id).await?;
        Ok(to_proto(&stored, attempts))
    }
}

fn parse_order_id(text: &str) -> Result<Uuid, ApiError> {
    if text.is_empty() {
        return Err(ApiError::field("order_id", "required"));
    }
    Uuid::parse_str(text).map_err(|_| ApiError::field("order_id", "must be a UUID"))
}

pub(crate) fn status_to_proto(s: PaymentStatus) -> pb::PaymentStatus {
    match s {
        PaymentStatus::Pending => pb::PaymentStatus::Pending,
        PaymentStatus::Authorized => pb::PaymentStatus::Authorized,
        PaymentStatus::Captured => pb::PaymentStatus::Captured,
        PaymentStatus::Voided => pb::PaymentStatus::Voided,
        PaymentStatus::Declined => pb::PaymentStatus::Declined,
    }
}

fn to_proto(s: &StoredPayment, attempts: i64) -> pb::Payment {
    let p = &s.payment;
    pb::Payment {
        payment_id: p.id.to_string(),
        order_id: p.order_id.to_string(),
        status: status_to_proto(p.status).into(),
        amount: Some(money(&p.amount)),
        attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
        authorization_code: p
            .authorization_id
            .as_ref()
            .map(|a| a.0.clone())
            .unwrap_or_default(),
        decline_reason: p
            .decline_reason
            .map_or(pb::DeclineReason::Unspecified, decline_reason_to_proto)
            .into(),
        decline_message: match (p.decline_reason, &s.decline_message) {
            (Some(r), Some(m)) => format!("{r}: {m}"),
            _ => String::new(),
        },
        created_at: Some(timestamp(p.created_at)),
        updated_at: Some(timestamp(p.updated_at)),
        authorized_at: s.authorized_at.map(timestamp),
        declined_at: s.declined_at.map(timestamp),
        captured_at: s.captured_at.map(timestamp),
        voided_at: s.voided_at.map(timestamp),
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        let payment = self.read_payment(&request.get_ref().order_id).await?;
        Ok(Response::new(pb::GetPaymentResponse {
            payment: Some(payment),
        }))
    }
}
