//! The dashboard as its protobuf contract.

use jetmart_kit::time::timestamp;
use jetmart_proto::analytics::v1 as pb;
use jetmart_proto::common::v1::Money;

use crate::dashboard::View;

fn money(currency: &str, amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: currency.to_owned(),
    }
}

pub fn dashboard(view: &View) -> pb::Dashboard {
    let s = &view.snapshot;
    pb::Dashboard {
        as_of: Some(timestamp(view.as_of)),
        revision: s.revision,
        streams: view
            .streams
            .iter()
            .map(|p| pb::StreamProgress {
                stream: p.stream.clone(),
                last_sequence: p.last_sequence,
                last_event_at: p.last_event_at.map(timestamp),
                pending: p.pending,
            })
            .collect(),
        orders: Some(pb::OrderTotals {
            placed: s.orders.placed,
            confirmed: s.orders.confirmed,
            cancelled: s.orders.cancelled,
            pending: s.orders.pending,
            cancelled_by_reason: s
                .orders
                .cancelled_by_reason
                .iter()
                .map(|r| pb::CancelReasonCount {
                    reason: r.code,
                    count: r.count,
                })
                .collect(),
        }),
        series: s
            .series
            .iter()
            .map(|m| pb::MinuteBucket {
                start: Some(prost_types::Timestamp {
                    seconds: m.start,
                    nanos: 0,
                }),
                placed: m.placed,
                confirmed: m.confirmed,
                cancelled: m.cancelled,
                revenue: m
                    .revenue
                    .iter()
                    .map(|a| money(&a.currency, a.amount_minor))
                    .collect(),
            })
            .collect(),
        revenue: s
            .revenue
            .iter()
            .map(|r| pb::CurrencyRevenue {
                currency: r.currency.clone(),
                confirmed_orders: r.confirmed_orders,
                revenue: Some(money(&r.currency, r.revenue_minor)),
                average_order_value: Some(money(&r.currency, r.average_order_value_minor)),
            })
            .collect(),
        top_skus: s
            .top_skus
            .iter()
            .map(|k| pb::SkuSales {
                sku: k.sku.clone(),
                units: k.units,
                orders: k.orders,
            })
            .collect(),
        low_stock: s
            .low_stock
            .iter()
            .map(|l| pb::LowStockSku {
                sku: l.sku.clone(),
                available: l.available,
                threshold: l.threshold,
                detected_at: Some(timestamp(l.detected_at)),
            })
            .collect(),
        surveys: Some(pb::SurveyStats {
            requested: s.surveys.requested,
            completed: s.surveys.completed,
            promoters: s.surveys.promoters,
            passives: s.surveys.passives,
            detractors: s.surveys.detractors,
            nps: s.surveys.nps,
        }),
        funnel: Some(pb::Funnel {
            placed: s.funnel.placed,
            stock_reserved: s.funnel.stock_reserved,
            stock_rejected: s.funnel.stock_rejected,
            payment_authorized: s.funnel.payment_authorized,
            payment_declined: s.funnel.payment_declined,
            confirmed: s.funnel.confirmed,
            payment_captured: s.funnel.payment_captured,
            survey_requested: s.funnel.survey_requested,
            survey_completed: s.funnel.survey_completed,
        }),
        notifications: Some(pb::NotificationTotals {
            sent: s.notifications.sent,
            failed: s.notifications.failed,
            failed_permanent: s.notifications.failed_permanent,
        }),
    }
}
