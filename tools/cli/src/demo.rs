//! `demo-orders`: the load generator's orders, a summary, and optionally their outcomes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use jetmart_proto::order::v1::order_service_client::OrderServiceClient;
use jetmart_proto::order::v1::{CancelReason, GetOrderRequest, OrderStatus};
use tonic::transport::Channel;

use crate::args::DemoArgs;
use crate::out;

/// `demo-orders`
pub async fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let opts = jetmart_loadgen::Options {
        order_urls: vec![args.order_url.clone()],
        orders: args.count,
        rate: args.rate,
        concurrency: args.concurrency as usize,
        seed,
        decline_share: args.decline_share,
        out_of_stock_share: args.out_of_stock_share,
        timeout: Duration::from_secs(10),
        out: None,
        progress: true,
    };
    opts.validate()?;
    let summary = jetmart_loadgen::run(&opts).await?;
    let ok = summary.count("ok");
    println!(
        "placed {ok} of {} demo orders in {:.1}s ({:.1}/s), errors {}, timeouts {}; PlaceOrder p50 {:.1} ms, p95 {:.1} ms",
        summary.records.len(),
        summary.elapsed.as_secs_f64(),
        summary.records.len() as f64 / summary.elapsed.as_secs_f64().max(1e-9),
        summary.count("error"),
        summary.count("timeout"),
        summary.latency_ms(50.0),
        summary.latency_ms(95.0),
    );
    let mut intents: BTreeMap<&str, usize> = BTreeMap::new();
    for r in summary.records.iter().filter(|r| r.outcome == "ok") {
        *intents.entry(r.intent.as_str()).or_default() += 1;
    }
    println!(
        "meant to: {} (seed {seed}; the same --seed places the same orders again, idempotently)",
        intents
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &summary.records {
        if let Some(code) = &r.code {
            *codes.entry(code.as_str()).or_default() += 1;
        }
    }
    if !codes.is_empty() {
        println!("errors by code: {codes:?}");
    }
    if args.wait {
        let ids: Vec<String> = summary
            .records
            .iter()
            .filter_map(|r| r.order_id.clone())
            .collect();
        settle(&args.order_url, &ids, args.wait_timeout).await?;
    }
    if ok == 0 {
        anyhow::bail!("no order was placed");
    }
    Ok(())
}

/// Polls every order until it is confirmed or cancelled (or `timeout`), then counts outcomes.
async fn settle(order_url: &str, ids: &[String], timeout: Duration) -> anyhow::Result<()> {
    let channel = Channel::from_shared(order_url.to_owned())
        .context("--order-url")?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut client = OrderServiceClient::new(channel);
    let deadline = Instant::now() + timeout;
    let mut open: Vec<&String> = ids.iter().collect();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let bar = out::bar(ids.len() as u64, "orders settled");
    while !open.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in open {
            let req = GetOrderRequest {
                order_id: id.clone(),
                min_version: None,
            };
            let order = client
                .get_order(req)
                .await
                .ok()
                .and_then(|r| r.into_inner().order);
            match order {
                Some(o) if o.status() == OrderStatus::Confirmed => {
                    *outcomes.entry("confirmed".into()).or_default() += 1;
                    bar.inc(1);
                }
                Some(o) if o.status() == OrderStatus::Cancelled => {
                    *outcomes
                        .entry(format!("cancelled ({})", reason(o.cancel_reason())))
                        .or_default() += 1;
                    bar.inc(1);
                }
                _ => still.push(id),
            }
        }
        open = still;
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    bar.finish_and_clear();
    if !open.is_empty() {
        outcomes.insert("still pending".into(), open.len());
    }
    println!(
        "outcomes: {}",
        outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

pub fn reason(r: CancelReason) -> &'static str {
    match r {
        CancelReason::OutOfStock => "out of stock",
        CancelReason::PaymentDeclined => "payment declined",
        CancelReason::Customer => "customer",
        CancelReason::Unspecified => "unspecified",
    }
}
