//! The saga side of inventory: `order.placed` reserves every line or none, `order.cancelled`
//! releases, `order.confirmed` commits. Each runs in the consumer runner's transaction (which
//! also records the event as processed) and writes its events to the outbox in it.
//!
//! Guards, per order (all events of an order are serialized by [`store::lock_order`]):
//!
//! | recorded \ event | placed                | cancelled              | confirmed            |
//! |------------------|-----------------------|------------------------|----------------------|
//! | nothing          | reserve or reject     | tombstone `cancelled`  | retry (cannot be yet)|
//! | reserved         | no-op (duplicate)     | release -> released    | commit -> committed  |
//! | rejected         | no-op                 | no-op                  | no-op (warn)         |
//! | released         | no-op                 | no-op (duplicate)      | no-op (warn)         |
//! | committed        | no-op                 | no-op (warn)           | no-op (duplicate)    |
//! | cancelled        | no-op (late placed)   | no-op (duplicate)      | no-op (warn)         |

use std::collections::{BTreeSet, HashMap};

use chrono::Utc;
use jetmart_proto::order::v1::{OrderCancelled, OrderConfirmed, OrderPlaced};
use jetmart_runtime::consumer::{Applied, HandlerError, PgHandler, Processor};
use jetmart_runtime::{IncomingEvent, outbox};
use sqlx::{PgConnection, PgPool};

use crate::cache::StockCache;
use crate::domain::{
    LowStockRule, Movement, RequestedLine, ReservationDecision, decide_reservation, merge_lines,
};
use crate::events;
use crate::store::{self, LedgerRef, OrderStatus, StoreError};

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        // Database trouble and lost races are worth a retry; every refusal by the domain here
        // means the rows changed under a lock we hold, which a retry re-reads.
        HandlerError::transient(e)
    }
}

/// Applies order events to stock.
#[derive(Debug, Clone, Default)]
pub struct InventoryHandler;

impl PgHandler for InventoryHandler {
    fn handles(&self, event_type: &str) -> bool {
        crate::CONSUMES.handles(event_type)
    }

    /// Every order lock, then every stock row the batch may move, each set in key order: the
    /// handlers take the same locks again (already held), and concurrent batches queue instead
    /// of deadlocking on hot SKUs.
    async fn lock_batch(
        &self,
        tx: &mut PgConnection,
        events: &[&IncomingEvent],
    ) -> Result<(), HandlerError> {
        let orders: Vec<String> = events.iter().map(|e| order_id_of(e)).collect();
        store::lock_orders(tx, &orders).await?;
        let mut skus: BTreeSet<String> = events
            .iter()
            .filter(|e| e.is::<OrderPlaced>())
            .filter_map(|e| e.decoded::<OrderPlaced>().ok())
            .flat_map(|p| p.lines.iter().map(|l| l.sku.clone()).collect::<Vec<_>>())
            .collect();
        skus.extend(store::skus_of_orders(&mut *tx, &orders).await?);
        store::lock_stock(tx, &skus.into_iter().collect::<Vec<_>>()).await?;
        Ok(())
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &IncomingEvent,
    ) -> Result<(), HandlerError> {
        // decoded(): lock_batch and the cache refresh read the same payload; it is decoded once.
        if event.is::<OrderPlaced>() {
            placed(tx, event, &*event.decoded::<OrderPlaced>()?).await
        } else if event.is::<OrderCancelled>() {
            let cancelled = event.decoded::<OrderCancelled>()?;
            cancelled_order(tx, event, &require_order_id(&cancelled.order_id)?).await
        } else if event.is::<OrderConfirmed>() {
            let confirmed = event.decoded::<OrderConfirmed>()?;
            confirmed_order(tx, event, &require_order_id(&confirmed.order_id)?).await
        } else {
            Ok(())
        }
    }
}

fn require_order_id(order_id: &str) -> Result<String, HandlerError> {
    if order_id.is_empty() {
        Err(HandlerError::permanent("event has no order_id"))
    } else {
        Ok(order_id.to_owned())
    }
}

/// The order an event is about (payload first, the envelope's aggregate id otherwise).
pub fn order_id_of(event: &IncomingEvent) -> String {
    let from_payload = if event.is::<OrderPlaced>() {
        event
            .decoded::<OrderPlaced>()
            .ok()
            .map(|e| e.order_id.clone())
    } else if event.is::<OrderCancelled>() {
        event
            .decoded::<OrderCancelled>()
            .ok()
            .map(|e| e.order_id.clone())
    } else if event.is::<OrderConfirmed>() {
        event
            .decoded::<OrderConfirmed>()
            .ok()
            .map(|e| e.order_id.clone())
    } else {
        None
    };
    from_payload
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| event.meta.aggregate_id.clone())
}

/// Reserve every line or none.
async fn placed(
    tx: &mut PgConnection,
    event: &IncomingEvent,
    order: &OrderPlaced,
) -> Result<(), HandlerError> {
    let order_id = require_order_id(&order.order_id)?;
    // The order service never emits these; such an event can never be applied.
    if order.lines.is_empty() {
        return Err(HandlerError::permanent(format!(
            "order {order_id} has no lines"
        )));
    }
    let mut requested = Vec::with_capacity(order.lines.len());
    for line in &order.lines {
        let quantity = u64::try_from(line.quantity)
            .ok()
            .filter(|q| *q > 0)
            .ok_or_else(|| {
                HandlerError::permanent(format!(
                    "order {order_id}: quantity {} for {}",
                    line.quantity, line.sku
                ))
            })?;
        requested.push(RequestedLine {
            sku: line.sku.clone(),
            quantity,
        });
    }

    store::lock_order(tx, &order_id).await?;
    if let Some(status) = store::order_status(tx, &order_id).await? {
        // A duplicate placement, or a placement overtaken by its cancel (tombstone).
        tracing::info!(order_id = %order_id, status = status.as_str(), "order.placed ignored");
        return Ok(());
    }

    let skus: Vec<String> = merge_lines(&requested).into_iter().map(|l| l.sku).collect();
    let locked = store::lock_stock(tx, &skus).await?;
    let rows: HashMap<&str, &store::StockRow> =
        locked.iter().map(|r| (r.sku.as_str(), r)).collect();
    let now = Utc::now();
    let customer = (!order.customer_id.is_empty()).then_some(order.customer_id.as_str());

    match decide_reservation(&requested, |sku| {
        rows.get(sku).map_or(0, |r| r.level.available)
    }) {
        ReservationDecision::Reject(shortages) => {
            store::insert_order(tx, &order_id, OrderStatus::Rejected, customer).await?;
            outbox::enqueue(
                tx,
                &[events::rejected(&order_id, &shortages, now).caused_by(&event.meta)],
            )
            .await?;
            tracing::info!(order_id = %order_id, short = shortages.len(), "order rejected, short stock");
        }
        ReservationDecision::ReserveAll(lines) => {
            store::insert_order(tx, &order_id, OrderStatus::Reserved, customer).await?;
            let mut out = vec![events::reserved(order, now).caused_by(&event.meta)];
            for line in &lines {
                // decide_reservation only reserves SKUs it found available.
                let row = rows
                    .get(line.sku.as_str())
                    .ok_or_else(|| StoreError::Conflict {
                        sku: line.sku.clone(),
                    })?;
                let after = store::apply(
                    tx,
                    row,
                    &Movement::Reserve {
                        quantity: line.quantity,
                    },
                    LedgerRef::Order(&order_id),
                )
                .await?;
                let rule = LowStockRule {
                    threshold: row.low_stock_threshold,
                };
                if let Some(low) = rule.check(&row.level, &after.level) {
                    out.push(events::low(&row.sku, &low, now).caused_by(&event.meta));
                }
            }
            store::insert_reservations(tx, &order_id, &lines).await?;
            outbox::enqueue(tx, &out).await?;
            tracing::info!(order_id = %order_id, lines = lines.len(), "order reserved");
        }
    }
    Ok(())
}

async fn cancelled_order(
    tx: &mut PgConnection,
    event: &IncomingEvent,
    order_id: &str,
) -> Result<(), HandlerError> {
    store::lock_order(tx, order_id).await?;
    match store::order_status(tx, order_id).await? {
        None => {
            // Overtook its placement: the tombstone makes the late order.placed reserve nothing.
            store::insert_order(tx, order_id, OrderStatus::Cancelled, None).await?;
            tracing::info!(order_id = %order_id, "cancel before placement, tombstone recorded");
        }
        Some(OrderStatus::Reserved) => {
            let held = settle(tx, order_id, OrderStatus::Released).await?;
            let out = events::released(order_id, &held, Utc::now()).caused_by(&event.meta);
            outbox::enqueue(tx, &[out]).await?;
            tracing::info!(order_id = %order_id, lines = held.len(), "reservation released");
        }
        Some(OrderStatus::Committed) => {
            tracing::warn!(order_id = %order_id, "order.cancelled for a committed order ignored");
        }
        Some(status) => {
            tracing::debug!(order_id = %order_id, status = status.as_str(), "order.cancelled: nothing held");
        }
    }
    Ok(())
}

async fn confirmed_order(
    tx: &mut PgConnection,
    event: &IncomingEvent,
    order_id: &str,
) -> Result<(), HandlerError> {
    store::lock_order(tx, order_id).await?;
    match store::order_status(tx, order_id).await? {
        None => {
            // Confirmation follows our own inventory.reserved, so the placement is ours to see
            // first; retry rather than lose the commit.
            Err(HandlerError::transient(format!(
                "order.confirmed for {order_id} before its order.placed"
            )))
        }
        Some(OrderStatus::Reserved) => {
            let held = settle(tx, order_id, OrderStatus::Committed).await?;
            let out = events::committed(order_id, &held, Utc::now()).caused_by(&event.meta);
            outbox::enqueue(tx, &[out]).await?;
            tracing::info!(order_id = %order_id, lines = held.len(), "reservation committed");
            Ok(())
        }
        Some(OrderStatus::Committed) => Ok(()),
        Some(status) => {
            tracing::warn!(order_id = %order_id, status = status.as_str(), "order.confirmed without a reservation ignored");
            Ok(())
        }
    }
}

/// Releases or commits every held line of the order; returns the lines.
async fn settle(
    tx: &mut PgConnection,
    order_id: &str,
    to: OrderStatus,
) -> Result<Vec<RequestedLine>, HandlerError> {
    let held = store::held_reservations(tx, order_id).await?;
    let skus: Vec<String> = held.iter().map(|l| l.sku.clone()).collect();
    let locked = store::lock_stock(tx, &skus).await?;
    for line in &held {
        let row =
            locked
                .iter()
                .find(|r| r.sku == line.sku)
                .ok_or_else(|| StoreError::Conflict {
                    sku: line.sku.clone(),
                })?;
        let movement = match to {
            OrderStatus::Released => Movement::Release {
                quantity: line.quantity,
            },
            _ => Movement::Commit {
                quantity: line.quantity,
            },
        };
        store::apply(tx, row, &movement, LedgerRef::Order(order_id)).await?;
    }
    store::close_reservations(tx, order_id, to).await?;
    store::set_order_status(tx, order_id, to).await?;
    Ok(held)
}

/// Runs the Postgres processor, then (after its commit) refreshes the cache entries of the SKUs
/// the order touched. Also on a duplicate: the copy that committed may have died before its
/// refresh. The runtime's PgProcessor has no after-commit hook, hence the wrapper.
pub struct CacheRefreshing<P> {
    pub inner: P,
    pub pool: PgPool,
    pub cache: StockCache,
}

impl<P: Processor> Processor for CacheRefreshing<P> {
    fn handles(&self, event_type: &str) -> bool {
        self.inner.handles(event_type)
    }

    async fn process(
        &self,
        consumer: &str,
        event: &IncomingEvent,
    ) -> Result<Applied, HandlerError> {
        let applied = self.inner.process(consumer, event).await?;
        self.refresh(vec![order_id_of(event)]).await;
        Ok(applied)
    }

    async fn process_batch(
        &self,
        consumer: &str,
        events: &[IncomingEvent],
    ) -> Vec<Result<Applied, HandlerError>> {
        let results = self.inner.process_batch(consumer, events).await;
        let orders = events
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(e, _)| order_id_of(e))
            .collect();
        self.refresh(orders).await;
        results
    }
}

impl<P> CacheRefreshing<P> {
    /// Re-reads the stock these orders touched into the cache (once per SKU for a batch).
    async fn refresh(&self, orders: Vec<String>) {
        if orders.is_empty() {
            return;
        }
        let rows = match store::skus_of_orders(&self.pool, &orders).await {
            Ok(skus) if skus.is_empty() => Ok(Vec::new()),
            Ok(skus) => store::get_stocks(&self.pool, &skus).await,
            Err(e) => Err(e),
        };
        match rows {
            Ok(rows) => self.cache.refresh(&rows).await,
            Err(e) => {
                tracing::warn!(orders = orders.len(), first_order_id = %orders[0], error = %e, "cache refresh skipped")
            }
        }
    }
}
