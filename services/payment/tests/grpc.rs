//! PaymentService.GetPayment error statuses.

mod common;

use common::*;
use jetmart_proto::payment::v1::GetPaymentRequest;
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn get_payment_rejects_malformed_ids_and_reports_unknown_orders() {
    let h = Harness::start(&[]).await;
    let mut client = h.client().await;
    for bad in ["", "not-a-uuid", "123"] {
        let status = client
            .get_payment(GetPaymentRequest {
                order_id: bad.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        let details = status.get_details_bad_request().expect("field violations");
        assert_eq!(details.field_violations.len(), 1);
        assert_eq!(details.field_violations[0].field, "order_id");
    }
    let status = h.get_payment(Uuid::now_v7()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    h.stop().await;
}
