//! The dashboard page in a real headless browser (Debian's `chromium`): after a known set of
//! events, the numbers the page's script renders equal GetDashboard's, and the charts are drawn.
//!
//! Needs `/usr/bin/chromium` (`apt-get install -y chromium`); without it the test says so and
//! skips.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{SCENARIO_EVENTS, publish_scenario, scenario_start, start};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Loads `url` in headless Chromium, lets its scripts run, returns the resulting DOM.
///
/// `--dump-dom` prints the DOM once the page has loaded. The page renders from its embedded data
/// while loading and only opens its event stream after `load`, so the dump shows the script's
/// rendering. No `--virtual-time-budget`: an open event stream is a pending request, which
/// stops virtual time, so the budget would never run out.
async fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--dump-dom",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(url)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium ran");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The opening tag of the element with `data-test="name"`.
fn tag<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!("data-test=\"{name}\"");
    let at = dom.find(&needle)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

/// The `data-value` of the element with `data-test="name"`.
fn value(dom: &str, name: &str) -> String {
    let t = tag(dom, name).unwrap_or_else(|| panic!("no element data-test={name:?} on the page"));
    let v = t
        .split("data-value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no data-value on {t}"));
    v.to_owned()
}

fn int(dom: &str, name: &str) -> i64 {
    let v = value(dom, name);
    v.parse()
        .unwrap_or_else(|_| panic!("{name} = {v:?} is not a number"))
}

#[tokio::test]
async fn the_page_shows_what_get_dashboard_says() {
    if !Path::new(CHROMIUM).exists() {
        println!(
            "SKIPPED the_page_shows_what_get_dashboard_says: {CHROMIUM} is missing \
             (apt-get install -y chromium chromium-driver)"
        );
        return;
    }
    let s = start().await;
    let t0 = scenario_start();
    publish_scenario(&s, t0).await;
    s.wait_revision(SCENARIO_EVENTS).await;
    s.wait_drained().await;
    let d = s.dashboard().await;

    let dom = dump_dom(&format!("http://{}/", s.http)).await;
    assert!(
        dom.contains("data-rendered=\"client\""),
        "the page's script did not render"
    );
    assert_eq!(int(&dom, "revision"), d.revision);
    let o = d.orders.as_ref().unwrap();
    assert_eq!(int(&dom, "orders-placed"), o.placed);
    assert_eq!(int(&dom, "orders-confirmed"), o.confirmed);
    assert_eq!(int(&dom, "orders-cancelled"), o.cancelled);
    assert_eq!(int(&dom, "orders-pending"), o.pending);
    for r in &o.cancelled_by_reason {
        let name = jetmart_proto::order::v1::CancelReason::try_from(r.reason)
            .unwrap()
            .as_str_name();
        assert_eq!(int(&dom, &format!("cancel-{name}")), r.count, "{name}");
    }
    let sum = |f: fn(&jetmart_proto::analytics::v1::MinuteBucket) -> i64| -> i64 {
        d.series.iter().map(f).sum()
    };
    assert_eq!(int(&dom, "series-placed"), sum(|m| m.placed));
    assert_eq!(int(&dom, "series-confirmed"), sum(|m| m.confirmed));
    assert_eq!(int(&dom, "series-cancelled"), sum(|m| m.cancelled));
    let f = d.funnel.as_ref().unwrap();
    for (k, v) in [
        ("placed", f.placed),
        ("stock_reserved", f.stock_reserved),
        ("stock_rejected", f.stock_rejected),
        ("payment_authorized", f.payment_authorized),
        ("payment_declined", f.payment_declined),
        ("confirmed", f.confirmed),
        ("payment_captured", f.payment_captured),
        ("survey_requested", f.survey_requested),
        ("survey_completed", f.survey_completed),
    ] {
        assert_eq!(int(&dom, &format!("funnel-{k}")), v, "funnel {k}");
    }
    for r in &d.revenue {
        let c = &r.currency;
        assert_eq!(
            int(&dom, &format!("revenue-orders-{c}")),
            r.confirmed_orders
        );
        assert_eq!(
            int(&dom, &format!("revenue-{c}")),
            r.revenue.as_ref().unwrap().amount_minor
        );
        assert_eq!(
            int(&dom, &format!("aov-{c}")),
            r.average_order_value.as_ref().unwrap().amount_minor
        );
        assert!(dom.contains(&format!("data-test=\"revenue-chart-{c}\"")));
    }
    for k in &d.top_skus {
        assert_eq!(int(&dom, &format!("sku-units-{}", k.sku)), k.units);
        assert_eq!(int(&dom, &format!("sku-orders-{}", k.sku)), k.orders);
    }
    for l in &d.low_stock {
        assert_eq!(int(&dom, &format!("low-available-{}", l.sku)), l.available);
        assert_eq!(int(&dom, &format!("low-threshold-{}", l.sku)), l.threshold);
    }
    assert!(
        !dom.contains("low-available-SKU-LOW2"),
        "restocked SKU shown"
    );
    let sv = d.surveys.as_ref().unwrap();
    assert_eq!(value(&dom, "nps").parse::<f64>().unwrap(), sv.nps);
    assert_eq!(int(&dom, "surveys-requested"), sv.requested);
    assert_eq!(int(&dom, "surveys-completed"), sv.completed);
    assert_eq!(int(&dom, "surveys-promoters"), sv.promoters);
    assert_eq!(int(&dom, "surveys-passives"), sv.passives);
    assert_eq!(int(&dom, "surveys-detractors"), sv.detractors);
    let n = d.notifications.as_ref().unwrap();
    assert_eq!(int(&dom, "notifications-sent"), n.sent);
    assert_eq!(int(&dom, "notifications-failed"), n.failed);
    assert_eq!(
        int(&dom, "notifications-failed-permanent"),
        n.failed_permanent
    );
    assert_eq!(int(&dom, "dead-letters"), 0);
    for p in &d.streams {
        assert_eq!(int(&dom, &format!("stream-pending-{}", p.stream)), 0);
        assert_eq!(
            int(&dom, &format!("consumer-pending-{}-analytics", p.stream)),
            0
        );
    }
    // The charts were drawn by the script.
    let chart = |name: &str| {
        let at = dom.find(&format!("data-test=\"{name}\"")).unwrap();
        let end = at + dom[at..].find("</svg>").unwrap();
        dom[at..end].to_owned()
    };
    assert_eq!(chart("series-chart").matches("<polyline").count(), 3);
    assert_eq!(chart("funnel-chart").matches("<rect").count(), 9);
    assert_eq!(
        chart("sku-chart").matches("<rect").count(),
        d.top_skus.len()
    );
    s.shutdown.cancel();
}
