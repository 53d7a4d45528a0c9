//! One chaos run against a cluster: load, kills on the seeded schedule with a recovery wait after
//! each, drain, invariant check.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::cluster::Cluster;
use crate::pods::{Workload, pick_victim, pod_name, pod_uid, selector_labels};
use crate::schedule::{Plan, Target};

/// Everything a run needs, validated by the binary before anything starts.
#[derive(Debug, Clone)]
pub struct Config {
    pub namespace: String,
    pub release: String,
    /// `app.kubernetes.io/name` of the release's objects: the chart name or its nameOverride.
    pub chart_name: String,
    /// kubeconfig context; `None` = the current one.
    pub context: Option<String>,
    pub plan: Plan,
    /// Order service gRPC endpoints the load goes to (port-forwards).
    pub order_urls: Vec<String>,
    /// Offered orders per second during the chaos phase.
    pub rate: f64,
    /// JSON-lines outcomes of the PlaceOrder calls, read by the checker.
    pub outcomes: PathBuf,
    pub order_db: String,
    pub inventory_db: String,
    pub payment_db: String,
    pub extra_dbs: Vec<String>,
    pub nats_url: String,
    /// How long one workload may take to be settled again after a kill.
    pub ready_timeout: Duration,
    /// How long the system may take to drain after the load ends.
    pub drain_timeout: Duration,
}

impl Config {
    /// Orders to place: the offered rate over the chaos phase.
    pub fn orders(&self) -> u64 {
        (self.rate * self.plan.duration.as_secs_f64())
            .ceil()
            .max(1.0) as u64
    }

    /// The load generator's options for this run.
    pub fn load(&self) -> jetmart_loadgen::Options {
        jetmart_loadgen::Options {
            order_urls: self.order_urls.clone(),
            orders: self.orders(),
            rate: Some(self.rate),
            concurrency: 16,
            seed: self.plan.seed,
            decline_share: 0.05,
            out_of_stock_share: 0.05,
            timeout: Duration::from_secs(10),
            out: Some(self.outcomes.clone()),
            progress: false,
        }
    }

    /// Everything that can be refused without a cluster: the schedule, the load, the URLs.
    pub fn validate(&self) -> Result<(), String> {
        self.plan.schedule().map_err(|e| e.to_string())?;
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err("--rate must be a positive number of orders per second".into());
        }
        if self.order_urls.is_empty() {
            return Err("--order-url is required (the order service's gRPC port-forward)".into());
        }
        for url in &self.order_urls {
            let host = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .unwrap_or("");
            if host.is_empty() || host.starts_with('/') {
                return Err(format!(
                    "--order-url {url:?} is not an http(s)://host:port URL"
                ));
            }
        }
        self.load().validate().map_err(|e| e.to_string())?;
        for (flag, url) in [
            ("--order-db", &self.order_db),
            ("--inventory-db", &self.inventory_db),
            ("--payment-db", &self.payment_db),
        ]
        .into_iter()
        .chain(self.extra_dbs.iter().map(|u| ("--extra-db", u)))
        {
            // sqlx's parser does not look at the scheme.
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(format!("{flag}: not a postgres:// URL"));
            }
            url.parse::<sqlx::postgres::PgConnectOptions>()
                .map_err(|e| format!("{flag}: not a Postgres URL ({e})"))?;
        }
        for url in self.nats_url.split(',') {
            url.trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("--nats-url: {url:?} is not a NATS URL ({e})"))?;
        }
        if self.namespace.is_empty() || self.release.is_empty() || self.chart_name.is_empty() {
            return Err("--namespace, --release and --chart-name must not be empty".into());
        }
        if self.ready_timeout.is_zero() || self.drain_timeout.is_zero() {
            return Err("--ready-timeout and --drain-timeout must be positive".into());
        }
        Ok(())
    }
}

/// What a completed run found.
#[derive(Debug)]
pub struct RunReport {
    pub calls: usize,
    pub ok: usize,
    pub failed: usize,
    /// Kills per chart component.
    pub kills: BTreeMap<String, usize>,
    /// Scheduled kills skipped because the target had no Ready pod at that moment.
    pub skipped: usize,
    pub slowest_recovery: Duration,
    pub drained_after: Duration,
    pub check: jetmart_check::Report,
}

impl RunReport {
    pub fn figure_line(&self) -> String {
        let kills: Vec<String> = self.kills.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        format!(
            "kchaos: calls={} ok={} failed={} kills={} skipped_kills={} slowest_recovery={:.1}s {} drained_after_load={:.1}s",
            self.calls,
            self.ok,
            self.failed,
            kills.join(","),
            self.skipped,
            self.slowest_recovery.as_secs_f64(),
            self.check.figure_line(),
            self.drained_after.as_secs_f64()
        )
    }
}

/// The release's workload for a target, or an error saying how to leave it out.
async fn workload(cluster: &Cluster, cfg: &Config, target: &Target) -> anyhow::Result<Workload> {
    let labels = selector_labels(&cfg.chart_name, &cfg.release, target.component());
    let stateful = *target == Target::Nats;
    match cluster.find(&labels, stateful).await? {
        Some(w) => Ok(w),
        None if stateful => anyhow::bail!(
            "no NATS StatefulSet of release {} in namespace {} (the chart has one only with infra.enabled); pass --nats-kills 0",
            cfg.release,
            cfg.namespace
        ),
        None => anyhow::bail!(
            "no Deployment of service {} in release {} (namespace {}); leave it out of --targets",
            target.component(),
            cfg.release,
            cfg.namespace
        ),
    }
}

pub async fn run(cfg: &Config) -> anyhow::Result<RunReport> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let schedule = cfg.plan.schedule()?;
    let cluster = Cluster::connect(cfg.context.as_deref(), &cfg.namespace).await?;

    let mut targets: Vec<Target> = cfg
        .plan
        .services
        .iter()
        .map(|s| Target::Service(s.clone()))
        .collect();
    if cfg.plan.nats_kills > 0 {
        targets.push(Target::Nats);
    }
    let mut workloads: BTreeMap<Target, Workload> = BTreeMap::new();
    for t in targets {
        let w = workload(&cluster, cfg, &t).await?;
        w.selector()?;
        workloads.insert(t, w);
    }
    // Killing into a release that is not healthy yet would prove nothing.
    for w in workloads.values() {
        cluster
            .wait_recovered(w, "", cfg.ready_timeout)
            .await
            .context("before the first kill")?;
    }
    eprintln!(
        "{} workloads settled; {} kills scheduled every {:?} over {:?} (seed {})",
        workloads.len(),
        schedule.len(),
        cfg.plan.every,
        cfg.plan.duration,
        cfg.plan.seed
    );

    if let Some(dir) = cfg.outcomes.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let load = cfg.load();
    let loadgen = tokio::spawn(async move { jetmart_loadgen::run(&load).await });
    // Abort the load if the kill loop fails, so the port-forwards are not hammered for nothing.
    let abort = loadgen.abort_handle();
    let kills = kill_loop(&cluster, cfg, &schedule, &workloads).await;
    let (kills, skipped, slowest) = match kills {
        Ok(k) => k,
        Err(e) => {
            abort.abort();
            return Err(e);
        }
    };
    let summary = loadgen.await.context("the load generator panicked")??;
    let load_done = Instant::now();
    for w in workloads.values() {
        cluster
            .wait_recovered(w, "", cfg.ready_timeout)
            .await
            .context("after the load")?;
    }
    drain(cfg).await?;
    let drained_after = load_done.elapsed();

    let sources = jetmart_check::Sources {
        order_db: cfg.order_db.clone(),
        inventory_db: cfg.inventory_db.clone(),
        payment_db: cfg.payment_db.clone(),
        nats_url: cfg.nats_url.clone(),
        extra_dbs: cfg.extra_dbs.clone(),
        outcomes: Some(cfg.outcomes.clone()),
        ..Default::default()
    };
    let check = jetmart_check::check(&sources).await?;
    Ok(RunReport {
        calls: summary.records.len(),
        ok: summary.count("ok"),
        failed: summary.count("error") + summary.count("timeout"),
        kills,
        skipped,
        slowest_recovery: slowest,
        drained_after,
        check,
    })
}

type Kills = (BTreeMap<String, usize>, usize, Duration);

async fn kill_loop(
    cluster: &Cluster,
    cfg: &Config,
    schedule: &[(Duration, Target)],
    workloads: &BTreeMap<Target, Workload>,
) -> anyhow::Result<Kills> {
    // Which pod of a target dies is drawn from its own stream of the seed: the schedule stays
    // the same whatever pods the cluster happens to have.
    let mut rng = StdRng::seed_from_u64(cfg.plan.seed ^ 0x6b63_6861_6f73);
    let mut kills: BTreeMap<String, usize> = BTreeMap::new();
    let mut skipped = 0;
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for (at, target) in schedule {
        // A recovery slower than the interval delays the next kill rather than stacking kills.
        tokio::time::sleep_until((started + *at).into()).await;
        let w = &workloads[target];
        let pods = cluster.pods(&w.selector()?).await?;
        let Some(victim) = pick_victim(&pods, &w.selector()?, &mut rng, true) else {
            eprintln!(
                "{:>6.1}s {}: no Ready pod to kill, skipped",
                started.elapsed().as_secs_f64(),
                w.name()
            );
            skipped += 1;
            continue;
        };
        let (name, uid) = (pod_name(victim).to_owned(), pod_uid(victim).to_owned());
        let killed_at = started.elapsed();
        cluster.kill(victim, cfg.ready_timeout).await?;
        let took = cluster.wait_recovered(w, &uid, cfg.ready_timeout).await?;
        slowest = slowest.max(took);
        *kills.entry(target.component().to_owned()).or_default() += 1;
        eprintln!(
            "{:>6.1}s killed {name} ({} {}), settled again after {:.1}s",
            killed_at.as_secs_f64(),
            w.kind(),
            w.name(),
            took.as_secs_f64()
        );
    }
    Ok((kills, skipped, slowest))
}

/// Waits until every outbox is empty and every durable consumer has caught up. The databases
/// and NATS are reached through port-forwards that may be re-establishing after the kills, so
/// errors are retried until the deadline.
async fn drain(cfg: &Config) -> anyhow::Result<()> {
    let deadline = Instant::now() + cfg.drain_timeout;
    let mut dbs = Vec::new();
    for url in [&cfg.order_db, &cfg.inventory_db, &cfg.payment_db]
        .into_iter()
        .chain(&cfg.extra_dbs)
    {
        dbs.push(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy(url)
                .context("a database URL")?,
        );
    }
    let mut js = None;
    let mut last_error = String::new();
    loop {
        if js.is_none() {
            match jetmart_check::nats::connect(&cfg.nats_url).await {
                Ok(c) => js = Some(async_nats::jetstream::new(c)),
                Err(e) => last_error = format!("{e:#}"),
            }
        }
        if let Some(js) = &js {
            match jetmart_check::is_drained(&dbs, js).await {
                Ok(true) => return Ok(()),
                Ok(false) => last_error = "outboxes or consumers not empty yet".into(),
                Err(e) => last_error = format!("{e:#}"),
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not drained within {:?} after the load ended (last: {last_error})",
            cfg.drain_timeout
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::SERVICES;

    fn config() -> Config {
        Config {
            namespace: "jetmart".into(),
            release: "jetmart".into(),
            chart_name: "jetmart".into(),
            context: None,
            plan: Plan {
                services: SERVICES.iter().map(|s| s.to_string()).collect(),
                nats_kills: 1,
                duration: Duration::from_secs(120),
                every: Duration::from_secs(5),
                seed: 42,
            },
            order_urls: vec!["http://localhost:50051".into()],
            rate: 20.0,
            outcomes: PathBuf::from(".local/kchaos/outcomes.jsonl"),
            order_db: "postgres://jetmart_order:pw@localhost:15432/jetmart_order".into(),
            inventory_db: "postgres://jetmart_inventory:pw@localhost:15432/jetmart_inventory"
                .into(),
            payment_db: "postgres://jetmart_payment:pw@localhost:15432/jetmart_payment".into(),
            extra_dbs: vec![],
            nats_url: "nats://admin:pw@localhost:4222".into(),
            ready_timeout: Duration::from_secs(180),
            drain_timeout: Duration::from_secs(300),
        }
    }

    #[test]
    fn a_sound_config_passes_and_sizes_the_load() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(c.orders(), 2400, "20/s over 120 s");
        let load = c.load();
        assert_eq!(load.rate, Some(20.0));
        assert_eq!(load.out.as_deref(), Some(c.outcomes.as_path()));
        assert_eq!(load.seed, 42);
    }

    #[test]
    fn bad_input_is_refused_before_anything_starts() {
        let bad: Vec<(&str, Config)> = vec![
            (
                "no order url",
                Config {
                    order_urls: vec![],
                    ..config()
                },
            ),
            (
                "not http",
                Config {
                    order_urls: vec!["localhost:50051".into()],
                    ..config()
                },
            ),
            (
                "no host",
                Config {
                    order_urls: vec!["http://".into()],
                    ..config()
                },
            ),
            (
                "rate 0",
                Config {
                    rate: 0.0,
                    ..config()
                },
            ),
            (
                "rate nan",
                Config {
                    rate: f64::NAN,
                    ..config()
                },
            ),
            (
                "order db",
                Config {
                    order_db: "mysql://x".into(),
                    ..config()
                },
            ),
            (
                "extra db",
                Config {
                    extra_dbs: vec!["nope".into()],
                    ..config()
                },
            ),
            (
                "nats url",
                Config {
                    nats_url: "nats://[::1".into(),
                    ..config()
                },
            ),
            (
                "namespace",
                Config {
                    namespace: String::new(),
                    ..config()
                },
            ),
            (
                "ready timeout",
                Config {
                    ready_timeout: Duration::ZERO,
                    ..config()
                },
            ),
            (
                "too short",
                Config {
                    plan: Plan {
                        duration: Duration::from_secs(10),
                        ..config().plan
                    },
                    ..config()
                },
            ),
            (
                "zero interval",
                Config {
                    plan: Plan {
                        every: Duration::ZERO,
                        ..config().plan
                    },
                    ..config()
                },
            ),
        ];
        for (what, c) in bad {
            assert!(c.validate().is_err(), "{what} accepted");
        }
    }
}
