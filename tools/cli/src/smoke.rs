//! `smoke`: every service healthy, then one order from placement to CONFIRMED.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jetmart_demo_catalog::{DEMO_CATALOG, DEMO_CURRENCY};
use jetmart_proto::common::v1::{Money, OrderLine};
use jetmart_proto::order::v1::order_service_client::OrderServiceClient;
use jetmart_proto::order::v1::{GetOrderRequest, Order, OrderStatus, PlaceOrderRequest};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::args::SmokeArgs;
use crate::demo::reason;

/// How long one call may take; the run's deadline bounds the whole.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Between polls of a health check or of the order.
const POLL: Duration = Duration::from_millis(250);

fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("{url} is not a gRPC endpoint"))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_lazy())
}

/// Prints a step with the time since the start.
struct Steps(Instant);

impl Steps {
    fn say(&self, text: impl std::fmt::Display) {
        println!("[{:>6.1}s] {text}", self.0.elapsed().as_secs_f64());
    }
}

/// `smoke`: Ok on CONFIRMED; the error says what failed.
pub async fn run(args: &SmokeArgs) -> anyhow::Result<()> {
    let steps = Steps(Instant::now());
    let deadline = tokio::time::Instant::now() + args.timeout;
    steps.say(format!(
        "smoke test: {}, then one order via {} (timeout {:?})",
        crate::out::count(
            args.health_urls.len() as u64,
            "health check",
            "health checks"
        ),
        args.order_url,
        args.timeout
    ));
    for url in &args.health_urls {
        health(url, deadline, &steps).await?;
    }

    let item = match &args.sku {
        Some(sku) => DEMO_CATALOG
            .iter()
            .find(|i| i.sku == sku)
            .with_context(|| format!("--sku {sku} is not in the demo catalog"))?,
        // The deepest stock: the least likely to be sold out by earlier demo runs.
        None => DEMO_CATALOG
            .iter()
            .max_by_key(|i| i.initial_stock)
            .context("the demo catalog is empty")?,
    };
    let mut orders = OrderServiceClient::new(channel(&args.order_url)?);
    let key = format!("smoke-{}", uuid::Uuid::now_v7());
    let request = PlaceOrderRequest {
        idempotency_key: key.clone(),
        customer_id: "smoke-test".into(),
        customer_email: "smoke-test@example.com".into(),
        lines: vec![OrderLine {
            sku: item.sku.into(),
            quantity: 1,
            unit_price: Some(Money {
                amount_minor: item.unit_price_minor,
                currency: DEMO_CURRENCY.into(),
            }),
        }],
        payment_token: args.payment_token.clone(),
        currency: DEMO_CURRENCY.into(),
    };
    steps.say(format!(
        "placing an order: 1 x {} ({}), token {}, idempotency key {key}",
        item.sku, item.name, args.payment_token
    ));
    // Retrying with the same idempotency key cannot place a second order.
    let placed = loop {
        let call = tokio::time::timeout_at(deadline, orders.place_order(request.clone())).await;
        let Ok(call) = call else {
            bail!(
                "PlaceOrder at {} did not answer within {:?}",
                args.order_url,
                args.timeout
            );
        };
        match call {
            Ok(r) => {
                break r
                    .into_inner()
                    .order
                    .context("PlaceOrder returned no order")?;
            }
            Err(status) => {
                let retry = matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
                );
                if !retry || tokio::time::Instant::now() + POLL >= deadline {
                    bail!(
                        "PlaceOrder at {} failed: {:?} {}",
                        args.order_url,
                        status.code(),
                        status.message()
                    );
                }
                tokio::time::sleep(POLL).await;
            }
        }
    };
    steps.say(format!(
        "placed order {} ({}, version {})",
        placed.order_id,
        status_name(placed.status()),
        placed.version
    ));

    let mut last: Option<Order> = None;
    let mut last_status = placed.status();
    let mut last_error = String::new();
    loop {
        let req = GetOrderRequest {
            order_id: placed.order_id.clone(),
            min_version: Some(placed.version),
        };
        let call = tokio::time::timeout_at(deadline, orders.get_order(req))
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("smoke test timeout")));
        match call {
            Ok(r) => {
                let order = r.into_inner().order.context("GetOrder returned no order")?;
                if order.status() != last_status {
                    last_status = order.status();
                    steps.say(format!(
                        "order {} is {}",
                        order.order_id,
                        status_name(order.status())
                    ));
                }
                match order.status() {
                    OrderStatus::Confirmed => {
                        steps.say(format!(
                            "PASS: order {} CONFIRMED (payment {})",
                            order.order_id, order.payment_id
                        ));
                        return Ok(());
                    }
                    OrderStatus::Cancelled => {
                        let shortages: Vec<String> = order
                            .shortages
                            .iter()
                            .map(|s| {
                                format!(
                                    "{} requested {} available {}",
                                    s.sku, s.requested, s.available
                                )
                            })
                            .collect();
                        bail!(
                            "order {} was CANCELLED ({}): {}{}",
                            order.order_id,
                            reason(order.cancel_reason()),
                            order.cancel_detail,
                            if shortages.is_empty() {
                                String::new()
                            } else {
                                format!(" [{}]", shortages.join("; "))
                            }
                        );
                    }
                    _ => last = Some(order),
                }
            }
            Err(status) => last_error = format!("{:?} {}", status.code(), status.message()),
        }
        if tokio::time::Instant::now() + POLL >= deadline {
            let state = match &last {
                Some(o) => format!("still {}", status_name(o.status())),
                None => format!("not readable ({last_error})"),
            };
            bail!(
                "order {} {state} after {:?}: the saga did not finish in time",
                placed.order_id,
                args.timeout
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `CONFIRMED`, `PENDING`, ... (the proto name without its prefix).
fn status_name(s: OrderStatus) -> &'static str {
    s.as_str_name().trim_start_matches("ORDER_STATUS_")
}

/// Polls `url`'s overall health (service "") until SERVING or the deadline.
async fn health(url: &str, deadline: tokio::time::Instant, steps: &Steps) -> anyhow::Result<()> {
    let mut client = HealthClient::new(channel(url)?);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let answer = tokio::time::timeout_at(
            deadline,
            client.check(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("smoke test timeout")));
        let problem = match answer {
            Ok(r) => match r.into_inner().status() {
                ServingStatus::Serving => {
                    steps.say(format!("health {url}: SERVING"));
                    return Ok(());
                }
                other => format!("answers {}", other.as_str_name()),
            },
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        };
        if tokio::time::Instant::now() + POLL >= deadline {
            bail!("health {url} is not SERVING after {attempts} attempts: {problem}");
        }
        if attempts == 1 {
            steps.say(format!("health {url}: {problem}; retrying until SERVING"));
        }
        tokio::time::sleep(POLL).await;
    }
}
