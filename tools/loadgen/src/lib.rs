//! The load generator: PlaceOrder calls at a target rate (or as fast as `concurrency` allows),
//! with random customers, SKUs and quantities from the demo catalog, seeded and reproducible. A
//! share of orders is meant to decline (a declining test token) or to run out of stock (the
//! scarcest SKUs in quantity). Every call's outcome is recorded for the invariant checker.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jetmart_demo_catalog::{DEMO_CATALOG, DEMO_CURRENCY};
use jetmart_proto::common::v1::{Money, OrderLine};
use jetmart_proto::order::v1::PlaceOrderRequest;
use jetmart_proto::order::v1::order_service_client::OrderServiceClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;
use tonic::transport::Channel;

/// Token the simulated gateway always declines.
pub const DECLINE_TOKEN: &str = "tok_decline";
pub const OK_TOKEN: &str = "tok_visa";

#[derive(Debug, Clone)]
pub struct Options {
    /// Order service endpoints (several replicas: calls go round-robin).
    pub order_urls: Vec<String>,
    /// Orders to place.
    pub orders: u64,
    /// Target orders per second; `None` = as fast as `concurrency` allows.
    pub rate: Option<f64>,
    pub concurrency: usize,
    pub seed: u64,
    /// Share of orders paid with a declining token.
    pub decline_share: f64,
    /// Share of orders asking for more of a scarce SKU than there is.
    pub out_of_stock_share: f64,
    pub timeout: Duration,
    /// JSON-lines file with one record per call.
    pub out: Option<PathBuf>,
    pub progress: bool,
}

impl Options {
    /// Refuses options that make no sense, before anything starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.order_urls.is_empty() {
            bail!("--order-url: at least one endpoint is needed");
        }
        if self.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if let Some(r) = self.rate
            && (!r.is_finite() || r <= 0.0)
        {
            bail!("--rate must be a positive number of orders per second");
        }
        for (name, v) in [
            ("--decline-share", self.decline_share),
            ("--out-of-stock-share", self.out_of_stock_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{name} must be between 0 and 1");
            }
        }
        if self.decline_share + self.out_of_stock_share > 1.0 {
            bail!("--decline-share + --out-of-stock-share must not exceed 1");
        }
        if self.timeout.is_zero() {
            bail!("--timeout must be positive");
        }
        Ok(())
    }
}

/// One PlaceOrder call as it ended.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// `ok`, `error` or `timeout`.
    pub outcome: String,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub latency_ms: f64,
    /// Milliseconds since the run started, when the call was sent.
    pub sent_ms: f64,
    /// What this order was meant to do: `normal`, `decline` or `out_of_stock`.
    pub intent: String,
}

#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub records: Vec<Record>,
    pub elapsed: Duration,
}

impl Summary {
    pub fn count(&self, outcome: &str) -> usize {
        self.records.iter().filter(|r| r.outcome == outcome).count()
    }

    /// Latency percentile (0..=100) of successful calls, in ms.
    pub fn latency_ms(&self, pct: f64) -> f64 {
        let mut v: Vec<f64> = self
            .records
            .iter()
            .filter(|r| r.outcome == "ok")
            .map(|r| r.latency_ms)
            .collect();
        percentile(&mut v, pct)
    }
}

/// `pct` percentile of `values` (sorted in place); 0 when empty.
pub fn percentile(values: &mut [f64], pct: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((pct / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// The request for order number `n` of a run seeded with `seed`: the same inputs give the same
/// orders.
pub fn request(seed: u64, n: u64, opts: &Options) -> (PlaceOrderRequest, &'static str) {
    let mut rng = StdRng::seed_from_u64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let roll: f64 = rng.random();
    let price = |minor| {
        Some(Money {
            amount_minor: minor,
            currency: DEMO_CURRENCY.into(),
        })
    };
    let (lines, token, intent) = if roll < opts.decline_share {
        let item = &DEMO_CATALOG[rng.random_range(0..16)];
        (
            vec![OrderLine {
                sku: item.sku.into(),
                quantity: 1,
                unit_price: price(item.unit_price_minor),
            }],
            DECLINE_TOKEN,
            "decline",
        )
    } else if roll < opts.decline_share + opts.out_of_stock_share {
        // The scarce tail of the catalog, asked for in more than it ever holds.
        let item = &DEMO_CATALOG[DEMO_CATALOG.len() - 1 - rng.random_range(0..2)];
        let q = (item.initial_stock + 1).min(1000) as i32;
        (
            vec![OrderLine {
                sku: item.sku.into(),
                quantity: q,
                unit_price: price(item.unit_price_minor),
            }],
            OK_TOKEN,
            "out_of_stock",
        )
    } else {
        let n_lines = rng.random_range(1..=3);
        let mut skus: Vec<usize> = (0..16).collect();
        let mut lines = Vec::new();
        for _ in 0..n_lines {
            let item = &DEMO_CATALOG[skus.swap_remove(rng.random_range(0..skus.len()))];
            lines.push(OrderLine {
                sku: item.sku.into(),
                quantity: rng.random_range(1..=3),
                unit_price: price(item.unit_price_minor),
            });
        }
        (lines, OK_TOKEN, "normal")
    };
    let customer = rng.random_range(0..1000);
    let req = PlaceOrderRequest {
        idempotency_key: format!("load-{seed}-{n}"),
        customer_id: format!("customer-{customer}"),
        customer_email: format!("customer{customer}@example.com"),
        lines,
        payment_token: token.into(),
        currency: DEMO_CURRENCY.into(),
    };
    (req, intent)
}

/// Places `opts.orders` orders and returns every outcome (also written to `opts.out`).
pub async fn run(opts: &Options) -> anyhow::Result<Summary> {
    opts.validate()?;
    let mut clients = Vec::new();
    for url in &opts.order_urls {
        let channel = Channel::from_shared(url.clone())
            .with_context(|| format!("--order-url {url}"))?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        clients.push(OrderServiceClient::new(channel));
    }
    let out = match &opts.out {
        Some(p) => Some(Arc::new(Mutex::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )))),
        None => None,
    };
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(opts.orders);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} orders  {per_sec}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let records = Arc::new(Mutex::new(Vec::with_capacity(opts.orders as usize)));
    let mut workers = Vec::new();
    for w in 0..opts.concurrency {
        let (opts, next, records, out, bar) = (
            opts.clone(),
            next.clone(),
            records.clone(),
            out.clone(),
            bar.clone(),
        );
        let mut client = clients[w % clients.len()].clone();
        let replicas = clients.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= opts.orders {
                    break;
                }
                if let Some(rate) = opts.rate {
                    // Open-loop pacing: order n is due at n / rate.
                    let due = started + Duration::from_secs_f64(n as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                if replicas.len() > 1 {
                    client = replicas[n as usize % replicas.len()].clone();
                }
                let (req, intent) = request(opts.seed, n, &opts);
                let key = req.idempotency_key.clone();
                let sent = Instant::now();
                let result = tokio::time::timeout(opts.timeout, client.place_order(req)).await;
                let latency_ms = sent.elapsed().as_secs_f64() * 1000.0;
                let sent_ms = (sent - started).as_secs_f64() * 1000.0;
                let record = match result {
                    Ok(Ok(r)) => Record {
                        outcome: "ok".into(),
                        key,
                        order_id: r.into_inner().order.map(|o| o.order_id),
                        code: None,
                        latency_ms,
                        sent_ms,
                        intent: intent.into(),
                    },
                    Ok(Err(status)) => Record {
                        outcome: "error".into(),
                        key,
                        order_id: None,
                        code: Some(format!("{:?}", status.code())),
                        latency_ms,
                        sent_ms,
                        intent: intent.into(),
                    },
                    Err(_) => Record {
                        outcome: "timeout".into(),
                        key,
                        order_id: None,
                        code: None,
                        latency_ms,
                        sent_ms,
                        intent: intent.into(),
                    },
                };
                if let Some(out) = &out {
                    let mut f = out.lock().await;
                    let _ = writeln!(f, "{}", serde_json::to_string(&record).unwrap_or_default());
                }
                records.lock().await.push(record);
                bar.inc(1);
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    bar.finish_and_clear();
    if let Some(out) = out {
        out.lock().await.flush()?;
    }
    let records = std::mem::take(&mut *records.lock().await);
    Ok(Summary {
        records,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            order_urls: vec!["http://127.0.0.1:1".into()],
            orders: 10,
            rate: None,
            concurrency: 1,
            seed: 7,
            decline_share: 0.2,
            out_of_stock_share: 0.1,
            timeout: Duration::from_secs(1),
            out: None,
            progress: false,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_orders() {
        let o = opts();
        for n in 0..50 {
            assert_eq!(request(7, n, &o).0, request(7, n, &o).0);
        }
        assert_ne!(request(7, 1, &o).0, request(8, 1, &o).0);
    }

    #[test]
    fn shares_are_roughly_kept() {
        let o = opts();
        let intents: Vec<_> = (0..2000).map(|n| request(1, n, &o).1).collect();
        let declines = intents.iter().filter(|i| **i == "decline").count();
        let oos = intents.iter().filter(|i| **i == "out_of_stock").count();
        assert!((300..500).contains(&declines), "{declines}");
        assert!((120..290).contains(&oos), "{oos}");
    }

    #[test]
    fn nonsense_options_are_refused() {
        let bad = [
            Options {
                concurrency: 0,
                ..opts()
            },
            Options {
                rate: Some(-1.0),
                ..opts()
            },
            Options {
                decline_share: 1.5,
                ..opts()
            },
            Options {
                decline_share: 0.6,
                out_of_stock_share: 0.6,
                ..opts()
            },
            Options {
                order_urls: vec![],
                ..opts()
            },
        ];
        for o in bad {
            assert!(o.validate().is_err(), "{o:?}");
        }
        opts().validate().unwrap();
    }

    #[test]
    fn percentiles() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 50.0), 3.0);
        assert_eq!(percentile(&mut v, 100.0), 5.0);
        assert_eq!(percentile(&mut [], 99.0), 0.0);
    }
}
