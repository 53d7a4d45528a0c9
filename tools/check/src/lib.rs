//! Invariant checker for a drained jetmart system (invariants of the event-flow design):
//!
//! 1. every accepted order is CONFIRMED or CANCELLED; nothing stays PENDING;
//! 2. exactly one capture per CONFIRMED order; no capture and no open authorization for a
//!    CANCELLED one;
//! 3. per SKU: initial stock + adjustments = available + reserved + sold, never negative, and no
//!    reservation left for a terminal order;
//! 4. exactly one confirmation email per CONFIRMED order, exactly one cancellation email per
//!    CANCELLED order, at most one survey email per invitation, as the SMTP server received them
//!    (when a maildir is given);
//! 5. the dead-letter stream is empty, or each entry is an injected poison message;
//! 6. analytics totals equal the counts in the owning services, within [`ANALYTICS_SETTLE`] of the
//!    drain (the read model may still be replaying after a Redis flush; when an analytics URL is
//!    given).
//!
//! It reads the services' own databases (the source of truth, not their caches or read models)
//! and the streams, and reports figures plus every violation it found.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use anyhow::Context;
use futures::StreamExt;
use sqlx::{PgPool, Row};

pub mod nats;
pub mod tables;

/// Header an injector puts on poison messages so they count as explained dead letters.
pub const POISON_HEADER: &str = "jetmart-poison";

/// Where to look.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub order_db: String,
    pub inventory_db: String,
    pub payment_db: String,
    pub nats_url: String,
    /// Other service databases whose outboxes count towards deduplicated publishes.
    pub extra_dbs: Vec<String>,
    /// JSON-lines outcomes of PlaceOrder calls (from the load generator).
    pub outcomes: Option<PathBuf>,
    /// Maildir the SMTP server wrote (`new/` inside it), for invariant 4.
    pub maildir: Option<PathBuf>,
    /// The survey database, to know the invitations (invariant 4).
    pub survey_db: Option<String>,
    /// Analytics gRPC endpoint, for invariant 6.
    pub analytics_url: Option<String>,
}

/// One PlaceOrder call as the load generator recorded it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Outcome {
    /// `ok`, `error` or `timeout`.
    pub outcome: String,
    #[serde(default)]
    pub order_id: Option<String>,
}

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub orders: u64,
    pub confirmed: u64,
    pub cancelled: u64,
    pub pending: u64,
    /// Accepted (PlaceOrder OK) but not in the order store.
    pub lost: u64,
    pub duplicate_captures: u64,
    /// Ledger movements of one kind repeated for one (order, SKU).
    pub duplicate_stock_moves: u64,
    pub stock_drift: i64,
    /// Emails received more than once with the same Message-ID: the documented duplicate of a
    /// kill during the SMTP exchange (reported, not a violation).
    pub duplicate_emails_same_message_id: u64,
    /// Emails checked (0 when no maildir was given).
    pub emails: u64,
    pub dead_letters: u64,
    pub unexplained_dead_letters: u64,
    pub redeliveries: u64,
    pub deduplicated_publishes: u64,
    /// How long after the drain the analytics totals equalled the owners' (invariant 6 checked).
    pub analytics_converged_after: Option<std::time::Duration>,
    pub violations: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    fn violate(&mut self, what: String) {
        self.violations.push(what);
    }

    /// The one-line summary.
    pub fn figure_line(&self) -> String {
        format!(
            "orders={} confirmed={} cancelled={} pending={} lost={} duplicate_captures={} duplicate_stock_moves={} stock_drift={} emails={} duplicate_emails_same_message_id={} dead_letters={} unexplained_dead_letters={} redeliveries={} deduplicated_publishes={} violations={}",
            self.orders,
            self.confirmed,
            self.cancelled,
            self.pending,
            self.lost,
            self.duplicate_captures,
            self.duplicate_stock_moves,
            self.stock_drift,
            self.emails,
            self.duplicate_emails_same_message_id,
            self.dead_letters,
            self.unexplained_dead_letters,
            self.redeliveries,
            self.deduplicated_publishes,
            self.violations.len()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Confirmed,
    Cancelled,
}

async fn connect(url: &str, what: &str) -> anyhow::Result<PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .with_context(|| format!("connecting to the {what} database"))
}

pub use nats::connect as connect_nats;

/// Runs every check.
pub async fn check(sources: &Sources) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let order_db = connect(&sources.order_db, "order").await?;
    let inventory_db = connect(&sources.inventory_db, "inventory").await?;
    let payment_db = connect(&sources.payment_db, "payment").await?;

    let orders = order_statuses(&order_db).await?;
    check_orders(&orders, sources.outcomes.as_ref(), &mut report)?;
    check_payments(&orders, &payment_db, &mut report).await?;
    check_stock(&orders, &inventory_db, &mut report).await?;

    let client = connect_nats(&sources.nats_url).await?;
    let js = async_nats::jetstream::new(client);
    check_captures_on_stream(&orders, &js, &mut report).await?;
    check_dead_letters(&js, &mut report).await?;
    report.redeliveries = redeliveries(&js).await?;

    if let Some(maildir) = &sources.maildir {
        let invitations = match &sources.survey_db {
            Some(url) => Some(invitations(&connect(url, "survey").await?).await?),
            None => None,
        };
        check_emails(&orders, maildir, invitations.as_ref(), &mut report)?;
    }
    if let Some(url) = &sources.analytics_url {
        check_analytics(&orders, url, &mut report).await?;
    }

    let mut dbs = vec![order_db, inventory_db, payment_db];
    for url in &sources.extra_dbs {
        dbs.push(connect(url, "service").await?);
    }
    for db in &dbs {
        let n: i64 = sqlx::query_scalar(tables::DEDUPLICATED_PUBLISHES)
            .fetch_one(db)
            .await
            .context("counting deduplicated publishes")?;
        report.deduplicated_publishes += n as u64;
    }
    Ok(report)
}

/// Each order's status by its event store (the source of truth).
async fn order_statuses(db: &PgPool) -> anyhow::Result<HashMap<String, Status>> {
    let rows = sqlx::query(tables::ORDER_STATUSES)
        .fetch_all(db)
        .await
        .context("reading the order event store")?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let status = match (r.get::<bool, _>("confirmed"), r.get::<bool, _>("cancelled")) {
                (true, false) => Status::Confirmed,
                (false, true) => Status::Cancelled,
                (false, false) => Status::Pending,
                // Both is itself a violation; check_orders reports it through the count mismatch.
                (true, true) => Status::Pending,
            };
            (r.get::<String, _>("id"), status)
        })
        .collect())
}

fn check_orders(
    orders: &HashMap<String, Status>,
    outcomes: Option<&PathBuf>,
    report: &mut Report,
) -> anyhow::Result<()> {
    report.orders = orders.len() as u64;
    for (id, status) in orders {
        match status {
            Status::Confirmed => report.confirmed += 1,
            Status::Cancelled => report.cancelled += 1,
            Status::Pending => {
                report.pending += 1;
                if report.pending <= 20 {
                    report.violate(format!(
                        "order {id} is not terminal (PENDING, or both confirmed and cancelled)"
                    ));
                }
            }
        }
    }
    if let Some(path) = outcomes {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let o: Outcome = serde_json::from_str(line)
                .with_context(|| format!("{}:{}", path.display(), n + 1))?;
            if o.outcome == "ok" {
                let id = o.order_id.unwrap_or_default();
                if !orders.contains_key(&id) {
                    report.lost += 1;
                    if report.lost <= 20 {
                        report.violate(format!(
                            "accepted order {id} is not in the order store (lost)"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

async fn check_payments(
    orders: &HashMap<String, Status>,
    db: &PgPool,
    report: &mut Report,
) -> anyhow::Result<()> {
    let rows = sqlx::query(tables::PAYMENTS)
        .fetch_all(db)
        .await
        .context("reading payments")?;
    let payments: HashMap<String, String> = rows
        .into_iter()
        .map(|r| (r.get("id"), r.get("status")))
        .collect();
    for (id, status) in orders {
        let payment = payments.get(id).map(String::as_str);
        match (status, payment) {
            (Status::Confirmed, Some("CAPTURED")) => {}
            (Status::Confirmed, other) => report.violate(format!(
                "confirmed order {id} has payment {other:?}, not one capture"
            )),
            (Status::Cancelled, Some("CAPTURED")) => {
                report.violate(format!("cancelled order {id} was captured"))
            }
            (Status::Cancelled, Some("AUTHORIZED")) => {
                report.violate(format!("cancelled order {id} has an open authorization"))
            }
            _ => {}
        }
    }
    for id in payments.keys().filter(|id| !orders.contains_key(*id)) {
        report.violate(format!("payment for unknown order {id}"));
    }
    Ok(())
}

async fn check_stock(
    orders: &HashMap<String, Status>,
    db: &PgPool,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Stock arrives only through adjustments (the demo seed is one), so "initial" is zero.
    let rows = sqlx::query(tables::STOCK_AND_LEDGER)
        .fetch_all(db)
        .await
        .context("reading stock and ledger")?;
    for r in rows {
        let sku: String = r.get("sku");
        let (available, reserved, sold): (i64, i64, i64) =
            (r.get("available"), r.get("reserved"), r.get("sold"));
        let adjusted: i64 = r.get("adjusted");
        let drift = adjusted - (available + reserved + sold);
        if drift != 0 {
            report.stock_drift += drift.abs();
            report.violate(format!(
                "SKU {sku}: adjustments {adjusted} != available {available} + reserved {reserved} + sold {sold}"
            ));
        }
        let ledger = (
            r.get::<i64, _>("ledger_available"),
            r.get::<i64, _>("ledger_reserved"),
            r.get::<i64, _>("ledger_sold"),
        );
        if ledger != (available, reserved, sold) {
            report.violate(format!(
                "SKU {sku}: ledger sums {ledger:?} != levels {:?}",
                (available, reserved, sold)
            ));
        }
        if available < 0 || reserved < 0 || sold < 0 || r.get::<i64, _>("lowest") < 0 {
            report.violate(format!("SKU {sku}: stock went negative"));
        }
    }
    let open = sqlx::query(tables::OPEN_RESERVATIONS)
        .fetch_all(db)
        .await
        .context("reading reservations")?;
    for r in open {
        let id: String = r.get("order_id");
        if matches!(orders.get(&id), Some(Status::Confirmed | Status::Cancelled)) {
            report.violate(format!(
                "order {id} is terminal but still holds a reservation"
            ));
        }
    }
    let committed = sqlx::query(tables::COMMITTED_RESERVATIONS)
        .fetch_all(db)
        .await
        .context("reading reservations")?;
    for r in committed {
        let id: String = r.get("order_id");
        if orders.get(&id) != Some(&Status::Confirmed) {
            report.violate(format!(
                "stock was sold for order {id}, which is not confirmed"
            ));
        }
    }
    Ok(())
}

/// Messages a stream holds on subjects matching `filter`.
async fn messages_on(
    stream: &async_nats::jetstream::stream::Stream,
    filter: &str,
) -> anyhow::Result<u64> {
    let mut subjects = stream.info_with_subjects(filter).await?;
    let mut n = 0;
    while let Some(entry) = subjects.next().await {
        n += entry?.1 as u64;
    }
    Ok(n)
}

/// Every message of a stream (optionally filtered), in order.
async fn read_all(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
) -> anyhow::Result<Vec<async_nats::Message>> {
    let mut s = match js.get_stream(stream).await {
        Ok(s) => s,
        Err(_) => return Ok(Vec::new()),
    };
    let info = s.info().await?.clone();
    let total = if filter.is_empty() {
        info.state.messages
    } else {
        messages_on(&s, filter).await?
    };
    let mut out = Vec::with_capacity(total as usize);
    if total == 0 {
        return Ok(out);
    }
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while (out.len() as u64) < total {
        let next = tokio::time::timeout(std::time::Duration::from_secs(30), messages.next())
            .await
            .context("reading a stream timed out")?
            .context("stream ended early")??;
        out.push(next.message);
    }
    Ok(out)
}

async fn check_captures_on_stream(
    orders: &HashMap<String, Status>,
    js: &async_nats::jetstream::Context,
    report: &mut Report,
) -> anyhow::Result<()> {
    let captured = read_all(js, "PAYMENT", "payment.captured.*").await?;
    let mut per_order: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for m in &captured {
        let order = m.subject.rsplit('.').next().unwrap_or_default().to_owned();
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("ce-id"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        per_order.entry(order).or_default().insert(id);
    }
    for (order, ids) in &per_order {
        if ids.len() > 1 {
            report.duplicate_captures += ids.len() as u64 - 1;
            report.violate(format!("order {order} was captured {} times", ids.len()));
        }
        if orders.get(order) != Some(&Status::Confirmed) {
            report.violate(format!(
                "payment.captured for order {order}, which is not confirmed"
            ));
        }
    }
    let confirmed_without = orders
        .iter()
        .filter(|(id, s)| **s == Status::Confirmed && !per_order.contains_key(*id))
        .count();
    if confirmed_without > 0 {
        report.violate(format!(
            "{confirmed_without} confirmed orders have no payment.captured event"
        ));
    }
    Ok(())
}

async fn check_dead_letters(
    js: &async_nats::jetstream::Context,
    report: &mut Report,
) -> anyhow::Result<()> {
    let letters = read_all(js, "DEADLETTER", "").await?;
    report.dead_letters = letters.len() as u64;
    for m in &letters {
        let injected = m
            .headers
            .as_ref()
            .is_some_and(|h| h.get(POISON_HEADER).is_some());
        if !injected {
            report.unexplained_dead_letters += 1;
            let error = m
                .headers
                .as_ref()
                .and_then(|h| h.get(jetmart_runtime::deadletter::header::ERROR))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            report.violate(format!("dead letter on {}: {error}", m.subject));
        }
    }
    Ok(())
}

/// Deliveries beyond the first, over every durable consumer of every stream.
async fn redeliveries(js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    let mut total = 0;
    for spec in jetmart_runtime::catalog::BUSINESS_STREAMS {
        let Ok(stream) = js.get_stream(spec.name).await else {
            continue;
        };
        let mut names = stream.consumer_names();
        while let Some(name) = names.next().await {
            let name = name?;
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .get_consumer(&name)
                .await
                .map_err(|e| anyhow::anyhow!("consumer {name}: {e}"))?;
            let info = consumer.info().await?.clone();
            let filters: Vec<String> = if info.config.filter_subjects.is_empty() {
                vec![if info.config.filter_subject.is_empty() {
                    ">".into()
                } else {
                    info.config.filter_subject.clone()
                }]
            } else {
                info.config.filter_subjects.clone()
            };
            let mut matched = 0u64;
            for f in &filters {
                matched += messages_on(&stream, f).await?;
            }
            total += info.delivered.consumer_sequence.saturating_sub(matched);
        }
    }
    Ok(total)
}

/// True when every given outbox is empty and every durable consumer of every stream has
/// nothing pending and nothing unacknowledged.
pub async fn is_drained(
    dbs: &[PgPool],
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<bool> {
    for db in dbs {
        let left: i64 = sqlx::query_scalar(tables::UNPUBLISHED)
            .fetch_one(db)
            .await?;
        if left > 0 {
            return Ok(false);
        }
    }
    for spec in jetmart_runtime::catalog::BUSINESS_STREAMS {
        let Ok(stream) = js.get_stream(spec.name).await else {
            continue;
        };
        let mut names = stream.consumer_names();
        while let Some(name) = names.next().await {
            let name = name?;
            let mut c: async_nats::jetstream::consumer::PullConsumer = stream
                .get_consumer(&name)
                .await
                .map_err(|e| anyhow::anyhow!("consumer {name}: {e}"))?;
            let info = c.info().await?;
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Survey ids of every invitation.
async fn invitations(db: &PgPool) -> anyhow::Result<HashSet<String>> {
    let ids: Vec<String> = sqlx::query_scalar(tables::SURVEY_INVITATIONS)
        .fetch_all(db)
        .await
        .context("reading survey invitations")?;
    Ok(ids.into_iter().collect())
}

/// The header block of a stored message: (lower-case name, value) pairs.
fn headers_of(raw: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in raw.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = out.last_mut() {
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    out
}

fn check_emails(
    orders: &HashMap<String, Status>,
    maildir: &std::path::Path,
    invitations: Option<&HashSet<String>>,
    report: &mut Report,
) -> anyhow::Result<()> {
    // (template, order or survey id) -> distinct Message-IDs; plus copies per Message-ID.
    let mut sent: HashMap<(String, String), HashSet<String>> = HashMap::new();
    let mut copies: HashMap<String, u64> = HashMap::new();
    let dir = maildir.join("new");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let raw = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let h = headers_of(&raw);
        let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let (Some(template), Some(message_id)) = (get("x-jetmart-template"), get("message-id"))
        else {
            continue;
        };
        report.emails += 1;
        *copies.entry(message_id.clone()).or_default() += 1;
        let key = if template == "survey_invitation" {
            get("x-jetmart-survey-id").unwrap_or_default()
        } else {
            get("x-jetmart-order-id").unwrap_or_default()
        };
        sent.entry((template, key)).or_default().insert(message_id);
    }
    report.duplicate_emails_same_message_id = copies.values().map(|n| n - 1).sum();
    for (id, status) in orders {
        let (template, other) = match status {
            Status::Confirmed => ("order_confirmed", "order_cancelled"),
            Status::Cancelled => ("order_cancelled", "order_confirmed"),
            Status::Pending => continue,
        };
        let n = sent
            .get(&(template.to_owned(), id.clone()))
            .map_or(0, HashSet::len);
        if n != 1 {
            report.violate(format!(
                "order {id}: {n} distinct {template} emails, expected exactly 1"
            ));
        }
        if sent.contains_key(&(other.to_owned(), id.clone())) {
            report.violate(format!("order {id}: a {other} email was sent"));
        }
    }
    for ((template, id), ids) in &sent {
        if template != "survey_invitation" {
            continue;
        }
        if ids.len() > 1 {
            report.violate(format!(
                "survey {id}: {} distinct invitation emails",
                ids.len()
            ));
        }
        if invitations.is_some_and(|inv| !inv.contains(id)) {
            report.violate(format!("survey email for unknown invitation {id}"));
        }
    }
    Ok(())
}

/// How long invariant 6 waits for the analytics read model to catch up with the owners. It is
/// eventually consistent: after a Redis flush it comes back by replaying every stream, which
/// can still be running when the consumers have drained.
pub const ANALYTICS_SETTLE: std::time::Duration = std::time::Duration::from_secs(180);

async fn analytics_totals(url: &str) -> anyhow::Result<jetmart_proto::analytics::v1::OrderTotals> {
    use jetmart_proto::analytics::v1::GetDashboardRequest;
    use jetmart_proto::analytics::v1::analytics_service_client::AnalyticsServiceClient;
    let mut client = AnalyticsServiceClient::connect(url.to_owned())
        .await
        .context("connecting to analytics")?;
    let dashboard = client
        .get_dashboard(GetDashboardRequest::default())
        .await
        .context("GetDashboard")?
        .into_inner()
        .dashboard
        .context("no dashboard in the response")?;
    Ok(dashboard.orders.unwrap_or_default())
}

/// Invariant 6: analytics' order totals converge to the order service's (within
/// [`ANALYTICS_SETTLE`]). Poison the order service never accepted must not count.
async fn check_analytics(
    orders: &HashMap<String, Status>,
    url: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let count = |s: Status| orders.values().filter(|v| **v == s).count() as i64;
    let owner = [
        ("placed", orders.len() as i64),
        ("confirmed", count(Status::Confirmed)),
        ("cancelled", count(Status::Cancelled)),
    ];
    let started = std::time::Instant::now();
    let last = loop {
        let last = analytics_totals(url)
            .await
            .map(|t| [t.placed, t.confirmed, t.cancelled]);
        if let Ok(seen) = &last
            && owner.iter().zip(seen).all(|((_, o), a)| o == a)
        {
            report.analytics_converged_after = Some(started.elapsed());
            return Ok(());
        }
        if started.elapsed() >= ANALYTICS_SETTLE {
            break last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    let seen = last?;
    for ((what, owner), analytics) in owner.iter().zip(seen) {
        if *owner != analytics {
            report.violate(format!(
                "analytics counts {analytics} orders {what}, the order service {owner} ({}s later)",
                ANALYTICS_SETTLE.as_secs()
            ));
        }
    }
    Ok(())
}
