//! Reactions to other contexts: stock rejected, payment declined or authorized. Each decides on
//! the aggregate and appends in the handler's transaction; a terminal order ignores late or
//! duplicate news.

use chrono::Utc;
use jetmart_proto::inventory::v1::StockRejected;
use jetmart_proto::payment::v1::{PaymentAuthorized, PaymentDeclined};
use jetmart_runtime::IncomingEvent;
use jetmart_runtime::consumer::{HandlerError, PgHandler};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::convert;
use crate::domain::{Cancellation, Order, OrderEvent, OrderId};
use crate::store;

/// What to decide on the order once it is loaded.
type Decision = Box<dyn FnOnce(&Order) -> Vec<OrderEvent> + Send>;

/// Consumes `inventory.rejected`, `payment.declined` and `payment.authorized`.
#[derive(Debug, Clone, Copy)]
pub struct SagaHandler;

fn order_id(raw: &str) -> Result<OrderId, HandlerError> {
    Uuid::parse_str(raw)
        .map(OrderId)
        .map_err(|_| HandlerError::permanent(format!("order id {raw:?} is not a UUID")))
}

impl PgHandler for SagaHandler {
    fn handles(&self, event_type: &str) -> bool {
        crate::CONSUMES.handles(event_type)
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &IncomingEvent,
    ) -> Result<(), HandlerError> {
        let now = Utc::now();
        let (id, decide): (OrderId, Decision) = if event.is::<StockRejected>() {
            let e: StockRejected = event.decode()?;
            let shortages = e.shortages.iter().map(convert::shortage_from).collect();
            (
                order_id(&e.order_id)?,
                Box::new(move |o| {
                    o.cancel(Cancellation::out_of_stock(shortages), now)
                        .unwrap_or_default()
                }),
            )
        } else if event.is::<PaymentDeclined>() {
            let e: PaymentDeclined = event.decode()?;
            let detail = if e.message.is_empty() {
                "payment declined".to_owned()
            } else {
                e.message.clone()
            };
            (
                order_id(&e.order_id)?,
                Box::new(move |o| {
                    o.cancel(Cancellation::payment_declined(detail), now)
                        .unwrap_or_default()
                }),
            )
        } else {
            let e: PaymentAuthorized = event.decode()?;
            let payment_id = Uuid::parse_str(&e.payment_id).map_err(|_| {
                HandlerError::permanent(format!("payment id {:?} is not a UUID", e.payment_id))
            })?;
            (
                order_id(&e.order_id)?,
                Box::new(move |o| o.confirm(payment_id, now)),
            )
        };
        let Some(order) = store::load(tx, id).await? else {
            // Our own order.placed precedes every reaction; an unknown id is not ours to fix.
            return Err(HandlerError::permanent(format!(
                "order {id} does not exist"
            )));
        };
        let events = decide(&order);
        if events.is_empty() {
            tracing::debug!(order_id = %id, event_id = %event.meta.id, status = order.status().as_str(), "no transition");
            return Ok(());
        }
        let order = store::append(tx, id, Some(order), &events, Some(&event.meta)).await?;
        tracing::info!(order_id = %id, event_id = %event.meta.id, status = order.status().as_str(), "order settled");
        Ok(())
    }
}
