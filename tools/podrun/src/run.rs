//! Runs the planned pods on one Docker network the way the kubelet and the controllers would:
//! pre-install hooks, then every workload at once (init containers in order and retried with
//! back-off, containers restarted when they exit or fail liveness), readiness through the
//! declared probes, then post-install hooks and the `helm test` pods, which must succeed.

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::docker::Docker;
use crate::manifest::{Kind, Manifests, Phase, Workload};
use crate::plan::{
    ContainerPlan, PodPlan, ProbePlan, RunTarget, VolumePlan, check_services, docker_run_args,
    pod_names, pod_plan,
};
use crate::probe;

/// Label on every container and the network of one run (cleanup finds them by it).
pub const RUN_LABEL: &str = "io.jetmart.podrun.run";
/// Exit status of a process that rejected its configuration (sysexits EX_USAGE): a chart value
/// is wrong, so restarting cannot help.
const EXIT_USAGE: i64 = 64;

#[derive(Debug, Clone)]
pub struct Options {
    pub run_id: String,
    pub work_dir: PathBuf,
    /// How long every workload may take to become Ready (and every Job to complete).
    pub timeout: Duration,
    /// How long one hook or test pod may run.
    pub hook_timeout: Duration,
    /// Restarts of one container (crash or failed liveness) after which the run fails.
    pub max_restarts: u32,
}

impl Options {
    pub fn network(&self) -> String {
        format!("podrun-{}", self.run_id)
    }
}

#[derive(Debug, Clone, Default)]
struct PodStats {
    owner: String,
    ready_after: Option<Duration>,
    restarts: u32,
    last_problem: String,
}

struct Runner {
    docker: Docker,
    opts: Options,
    network: String,
    started: Instant,
    fatal: mpsc::UnboundedSender<String>,
    stats: Mutex<BTreeMap<String, PodStats>>,
}

/// What one container's probes have seen so far.
#[derive(Debug, Default)]
struct ProbeState {
    started: bool,
    ready: bool,
    successes: u32,
    failures: u32,
    live_failures: u32,
    next: Option<Instant>,
    next_live: Option<Instant>,
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_secs((1u64 << attempt.min(4)).min(10))
}

fn last_lines(logs: &str, n: usize) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Runner {
    fn say(&self, msg: impl std::fmt::Display) {
        println!("[{:>6.1}s] {msg}", self.started.elapsed().as_secs_f64());
    }

    fn docker_name(&self, pod: &str, container: &str) -> String {
        format!("podrun-{}-{pod}-{container}", self.opts.run_id)
    }

    fn volume_dir(&self, pod: &str, volume: &str) -> PathBuf {
        self.opts.work_dir.join(pod).join(volume)
    }

    fn stat(&self, pod: &str, f: impl FnOnce(&mut PodStats)) {
        let mut s = self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(s.entry(pod.to_owned()).or_default());
    }

    /// Secret/ConfigMap files with their modes, owned by root:fsGroup; claims as setgid
    /// group-writable directories, as the kubelet prepares them.
    fn prepare_volumes(&self, pod: &PodPlan) -> Result<()> {
        for (name, v) in &pod.volumes {
            let dir = self.volume_dir(&pod.name, name);
            match v {
                VolumePlan::Files { files, gid } => {
                    std::fs::create_dir_all(&dir)?;
                    for f in files {
                        let path = dir.join(&f.path);
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent)?;
                        }
                        std::fs::write(&path, &f.data)
                            .with_context(|| format!("writing {}", path.display()))?;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
                        own(&path, *gid)?;
                    }
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
                }
                VolumePlan::Claim { gid } => {
                    std::fs::create_dir_all(&dir)?;
                    own(&dir, *gid)?;
                    let mode = if gid.is_some() { 0o2775 } else { 0o777 };
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
                }
                VolumePlan::EmptyDir { memory: true, .. } => {}
                VolumePlan::EmptyDir { gid, .. } => {
                    std::fs::create_dir_all(&dir)?;
                    own(&dir, *gid)?;
                    let mode = if gid.is_some() { 0o2777 } else { 0o777 };
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
                }
            }
        }
        Ok(())
    }

    async fn start(
        &self,
        pod: &PodPlan,
        c: &ContainerPlan,
        docker_name: &str,
        join: Option<&str>,
    ) -> Result<()> {
        if c.run_as_non_root && c.user.is_none() {
            let user = self.docker.image_user(&c.image).await?;
            let uid = user.split(':').next().unwrap_or("");
            if uid.is_empty() || uid == "0" || uid.parse::<u32>().is_err() {
                bail!(
                    "pod {} container {}: runAsNonRoot but no runAsUser, and image {} has user {user:?} (the kubelet needs a numeric non-zero one)",
                    pod.name,
                    c.name,
                    c.image
                );
            }
        }
        let labels = vec![
            (RUN_LABEL.to_owned(), self.opts.run_id.clone()),
            ("io.jetmart.podrun.pod".to_owned(), pod.name.clone()),
            ("io.jetmart.podrun.owner".to_owned(), pod.owner.clone()),
        ];
        let dir = |v: &str| self.volume_dir(&pod.name, v).display().to_string();
        let mut args = vec!["run".to_owned()];
        args.extend(docker_run_args(
            c,
            &RunTarget {
                docker_name,
                join,
                network: &self.network,
                hostname: &pod.name,
                aliases: &pod.aliases,
                labels: &labels,
                volume_dir: &dir,
                volumes: &pod.volumes,
            },
        ));
        self.docker
            .run(&args)
            .await
            .with_context(|| format!("pod {} container {}: docker run", pod.name, c.name))?;
        Ok(())
    }

    /// Runs one container to its exit: (exit code, output). The container is removed after.
    async fn run_to_exit(
        &self,
        pod: &PodPlan,
        c: &ContainerPlan,
        docker_name: &str,
        limit: Duration,
    ) -> Result<(i64, String)> {
        let _ = self.docker.runs(&["rm", "-f", docker_name]).await;
        self.start(pod, c, docker_name, None).await?;
        let waited = tokio::time::timeout(limit, self.docker.wait(docker_name)).await;
        let logs = self.docker.logs(docker_name, None).await;
        let _ = self.docker.runs(&["rm", "-f", docker_name]).await;
        match waited {
            Ok(code) => Ok((code?, logs)),
            Err(_) => bail!(
                "pod {} container {} did not finish within {limit:?}; output:\n{}",
                pod.name,
                c.name,
                last_lines(&logs, 40)
            ),
        }
    }

    /// Init containers in order; each retried (restartPolicy Always/OnFailure) until it succeeds.
    async fn run_init(&self, pod: &PodPlan, deadline: Instant) -> Result<()> {
        for c in &pod.init {
            let name = self.docker_name(&pod.name, &format!("init-{}", c.name));
            let mut attempt = 0u32;
            loop {
                let t0 = Instant::now();
                let left = deadline.saturating_duration_since(Instant::now());
                let (code, logs) = self
                    .run_to_exit(pod, c, &name, left.max(Duration::from_secs(1)))
                    .await?;
                if code == 0 {
                    self.say(format!(
                        "pod/{}: init container {} done ({:.1}s{})",
                        pod.name,
                        c.name,
                        t0.elapsed().as_secs_f64(),
                        if attempt > 0 {
                            format!(", after {attempt} failed attempts")
                        } else {
                            String::new()
                        }
                    ));
                    break;
                }
                let tail = last_lines(&logs, 20);
                if code == EXIT_USAGE {
                    bail!(
                        "pod/{}: init container {} rejected its configuration (exit 64):\n{tail}",
                        pod.name,
                        c.name
                    );
                }
                if pod.restart_policy == "Never" {
                    bail!(
                        "pod/{}: init container {} failed (exit {code}), restartPolicy Never:\n{tail}",
                        pod.name,
                        c.name
                    );
                }
                attempt += 1;
                let first = logs
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .to_owned();
                self.say(format!("pod/{}: init container {} exited {code} (attempt {attempt}), retrying: {first}", pod.name, c.name));
                self.stat(&pod.name, |s| {
                    s.last_problem = format!("init {} exit {code}: {first}", c.name)
                });
                if Instant::now() + backoff(attempt) > deadline {
                    bail!(
                        "pod/{}: init container {} still failing at the deadline (exit {code}):\n{tail}",
                        pod.name,
                        c.name
                    );
                }
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Ok(())
    }

    /// A pod that runs to completion (Job, hook or test pod): Ok(output) when it succeeded.
    async fn complete(&self, pod: &PodPlan, attempts: i32, limit: Duration) -> Result<String> {
        if pod.containers.len() != 1 {
            bail!(
                "pod/{}: run-to-completion pods with {} containers are not supported",
                pod.name,
                pod.containers.len()
            );
        }
        let c = &pod.containers[0];
        let name = self.docker_name(&pod.name, &c.name);
        let mut failures = 0;
        loop {
            let deadline = Instant::now() + limit;
            self.run_init(pod, deadline).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            let (code, logs) = self
                .run_to_exit(pod, c, &name, left.max(Duration::from_secs(1)))
                .await?;
            if code == 0 {
                return Ok(logs);
            }
            failures += 1;
            self.say(format!(
                "pod/{}: container {} exited {code} (failure {failures})",
                pod.name, c.name
            ));
            if code == EXIT_USAGE || failures > attempts {
                bail!(
                    "pod/{} failed (exit {code}):\n{}",
                    pod.name,
                    last_lines(&logs, 60)
                );
            }
            tokio::time::sleep(backoff(failures.unsigned_abs())).await;
        }
    }

    /// A serving pod: init containers, then the containers, kept running and probed; `ready`
    /// fires when every container passed its readiness probe (or has none).
    async fn serve(&self, pod: &PodPlan, ready: oneshot::Sender<()>) -> Result<()> {
        let deadline = Instant::now() + self.opts.timeout;
        self.stat(&pod.name, |s| s.owner = pod.owner.clone());
        self.run_init(pod, deadline).await?;
        let names: Vec<String> = pod
            .containers
            .iter()
            .map(|c| self.docker_name(&pod.name, &c.name))
            .collect();
        for (i, c) in pod.containers.iter().enumerate() {
            let join = (i > 0).then(|| names[0].as_str());
            self.start(pod, c, &names[i], join).await?;
        }
        let ip = self.docker.ip(&names[0], &self.network).await?;
        self.say(format!(
            "pod/{}: started {} ({ip})",
            pod.name,
            pod.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let now = Instant::now();
        let mut states: Vec<ProbeState> =
            pod.containers.iter().map(|c| fresh_state(c, now)).collect();
        let mut ready = Some(ready);
        let mut restarts = vec![0u32; pod.containers.len()];
        loop {
            // Container state at least every 2 s, probes when due.
            let due = states
                .iter()
                .flat_map(|s| [s.next, s.next_live])
                .flatten()
                .min()
                .unwrap_or(Instant::now() + Duration::from_secs(2))
                .min(Instant::now() + Duration::from_secs(2));
            tokio::time::sleep_until(due.into()).await;
            for (i, c) in pod.containers.iter().enumerate() {
                let st = self.docker.state(&names[i]).await?;
                let mut restart = None;
                if !st.running {
                    let logs = self.docker.logs(&names[i], Some(30)).await;
                    if st.exit_code == EXIT_USAGE {
                        bail!(
                            "pod/{} container {} rejected its configuration (exit 64):\n{}",
                            pod.name,
                            c.name,
                            last_lines(&logs, 30)
                        );
                    }
                    restart = Some(format!(
                        "exited {}{}:\n{}",
                        st.exit_code,
                        if st.oom_killed {
                            " (OOM-killed: limits.memory)"
                        } else {
                            ""
                        },
                        last_lines(&logs, 15)
                    ));
                } else {
                    restart = self
                        .probe_due(pod, c, &names[i], &ip, &mut states[i])
                        .await
                        .or(restart);
                }
                if let Some(why) = restart {
                    restarts[i] += 1;
                    self.stat(&pod.name, |s| {
                        s.restarts += 1;
                        s.last_problem = format!("{} {why}", c.name);
                    });
                    self.say(format!(
                        "pod/{}: container {} restarts ({}): {why}",
                        pod.name, c.name, restarts[i]
                    ));
                    if restarts[i] > self.opts.max_restarts {
                        bail!(
                            "pod/{} container {} restarted {} times (max {}); last: {why}",
                            pod.name,
                            c.name,
                            restarts[i],
                            self.opts.max_restarts
                        );
                    }
                    tokio::time::sleep(backoff(restarts[i])).await;
                    let grace = c.stop_timeout.to_string();
                    self.docker
                        .runs(&["restart", "-t", &grace, &names[i]])
                        .await?;
                    states[i] = fresh_state(c, Instant::now());
                }
            }
            if ready.is_some() && states.iter().all(|s| s.ready) {
                let after = self.started.elapsed();
                self.stat(&pod.name, |s| s.ready_after = Some(after));
                self.say(format!("pod/{}: Ready", pod.name));
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// Runs the probes that are due; Some(reason) when the kubelet would restart the container.
    async fn probe_due(
        &self,
        pod: &PodPlan,
        c: &ContainerPlan,
        name: &str,
        ip: &str,
        s: &mut ProbeState,
    ) -> Option<String> {
        let now = Instant::now();
        if s.next.is_some_and(|t| t <= now) {
            let (probe, kind) = if s.started {
                (c.readiness.as_ref(), "readiness")
            } else {
                (c.startup.as_ref(), "startup")
            };
            if let Some(p) = probe {
                s.next = Some(Instant::now() + Duration::from_secs(p.period_secs));
                match probe::check(p, ip, name, &self.docker).await {
                    Ok(()) => {
                        s.failures = 0;
                        s.successes += 1;
                        if !s.started {
                            s.started = true;
                            s.successes = 0;
                            // Readiness starts right after startup succeeds.
                            s.next = Some(
                                Instant::now()
                                    + Duration::from_secs(
                                        c.readiness.as_ref().map_or(0, |r| r.initial_delay_secs),
                                    ),
                            );
                            if c.readiness.is_none() {
                                s.ready = true;
                            }
                            s.next_live = c.liveness.as_ref().map(|l| {
                                Instant::now()
                                    + Duration::from_secs(l.initial_delay_secs.max(l.period_secs))
                            });
                        } else if s.successes >= p.success_threshold && !s.ready {
                            s.ready = true;
                        }
                    }
                    Err(e) => {
                        s.successes = 0;
                        s.failures += 1;
                        self.stat(&pod.name, |st| {
                            st.last_problem = format!("{} {kind} probe: {e}", c.name)
                        });
                        if s.started {
                            if s.ready && s.failures >= p.failure_threshold {
                                s.ready = false;
                                self.say(format!(
                                    "pod/{}: container {} not ready: {e}",
                                    pod.name, c.name
                                ));
                            }
                        } else if s.failures >= p.failure_threshold {
                            return Some(format!("startup probe failed {} times: {e}", s.failures));
                        }
                    }
                }
            }
        }
        if let (Some(t), Some(l)) = (s.next_live, c.liveness.as_ref())
            && t <= Instant::now()
        {
            s.next_live = Some(Instant::now() + Duration::from_secs(l.period_secs));
            match probe::check(l, ip, name, &self.docker).await {
                Ok(()) => s.live_failures = 0,
                Err(e) => {
                    s.live_failures += 1;
                    if s.live_failures >= l.failure_threshold {
                        return Some(format!(
                            "liveness probe failed {} times: {e}",
                            s.live_failures
                        ));
                    }
                }
            }
        }
        None
    }
}

fn fresh_state(c: &ContainerPlan, now: Instant) -> ProbeState {
    let first = |p: Option<&ProbePlan>| p.map(|p| now + Duration::from_secs(p.initial_delay_secs));
    match (&c.startup, &c.readiness) {
        (Some(s), _) => ProbeState {
            next: first(Some(s)),
            ..ProbeState::default()
        },
        (None, Some(r)) => ProbeState {
            started: true,
            next: first(Some(r)),
            next_live: c
                .liveness
                .as_ref()
                .map(|l| now + Duration::from_secs(l.initial_delay_secs.max(l.period_secs))),
            ..ProbeState::default()
        },
        (None, None) => ProbeState {
            started: true,
            ready: true,
            next_live: c
                .liveness
                .as_ref()
                .map(|l| now + Duration::from_secs(l.initial_delay_secs.max(l.period_secs))),
            ..ProbeState::default()
        },
    }
}

fn own(path: &Path, gid: Option<i64>) -> Result<()> {
    let gid = gid
        .map(|g| u32::try_from(g).context("fsGroup out of range"))
        .transpose()?;
    chown(path, Some(0), gid).with_context(|| format!("chown {}", path.display()))
}

/// Every pod of the rendering, planned up front: all translation errors at once.
pub fn plan_all(m: &Manifests) -> Result<Vec<(&Workload, PodPlan)>> {
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for w in &m.workloads {
        for name in pod_names(w) {
            match pod_plan(m, w, &name) {
                Ok(p) => plans.push((w, p)),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
    }
    if !errors.is_empty() {
        bail!(
            "the rendering cannot run as it is:\n  {}",
            errors.join("\n  ")
        );
    }
    let pods: Vec<PodPlan> = plans.iter().map(|(_, p)| p.clone()).collect();
    check_services(m, &pods)?;
    Ok(plans)
}

/// Runs the whole rendering; Ok when every workload got Ready and every test pod passed.
pub async fn run(m: &Manifests, docker: Docker, opts: Options) -> Result<()> {
    let plans = plan_all(m)?;
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel();
    let runner = Arc::new(Runner {
        docker: docker.clone(),
        network: opts.network(),
        opts: opts.clone(),
        started: Instant::now(),
        fatal: fatal_tx,
        stats: Mutex::new(BTreeMap::new()),
    });
    runner.say(format!(
        "{} workloads, {} pods, {} Services (not emulated: {})",
        m.workloads.len(),
        plans.len(),
        m.services.len(),
        m.not_run
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for h in &m.skipped_hooks {
        runner.say(format!(
            "{h}: hook of another phase than install/test, not run"
        ));
    }
    let mut images: Vec<&str> = plans
        .iter()
        .flat_map(|(_, p)| p.init.iter().chain(&p.containers).map(|c| c.image.as_str()))
        .collect();
    images.sort_unstable();
    images.dedup();
    let mut missing = Vec::new();
    for i in &images {
        if let Err(e) = docker.image_user(i).await {
            missing.push(format!("{e:#}"));
        }
    }
    if !missing.is_empty() {
        bail!("images missing:\n  {}", missing.join("\n  "));
    }
    runner.say(format!("images present: {}", images.join(", ")));
    std::fs::create_dir_all(&opts.work_dir)?;
    for (_, p) in &plans {
        runner.prepare_volumes(p)?;
    }
    let net_label = format!("{RUN_LABEL}={}", opts.run_id);
    docker
        .runs(&["network", "create", "--label", &net_label, &runner.network])
        .await?;
    runner.say(format!("network {} created", runner.network));

    let by_phase = |phase: Phase| -> Vec<&PodPlan> {
        let order = m.phase(phase);
        let mut v: Vec<&PodPlan> = Vec::new();
        for w in order {
            v.extend(
                plans
                    .iter()
                    .filter(|(pw, _)| std::ptr::eq(*pw, w))
                    .map(|(_, p)| p),
            );
        }
        v
    };
    let attempts = |p: &PodPlan| -> i32 {
        plans
            .iter()
            .find(|(_, q)| q.name == p.name)
            .map_or(0, |(w, _)| {
                if w.kind == Kind::Job {
                    w.backoff_limit
                } else {
                    0
                }
            })
    };

    for p in by_phase(Phase::PreInstall) {
        runner.say(format!("pre-install hook pod/{}", p.name));
        let logs = runner.complete(p, attempts(p), opts.hook_timeout).await?;
        print_logs(&p.name, &logs);
    }

    // Install: everything at once, as the API server would create it.
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut waiting: Vec<(String, oneshot::Receiver<()>)> = Vec::new();
    let mut ordered: BTreeMap<&str, Vec<PodPlan>> = BTreeMap::new();
    for p in by_phase(Phase::Install) {
        let w = plans
            .iter()
            .find(|(_, q)| q.name == p.name)
            .map(|(w, _)| *w)
            .context("plan without workload")?;
        if !w.serves() {
            let (tx, rx) = oneshot::channel();
            waiting.push((format!("{}/{}", w.kind, p.name), rx));
            let r = Arc::clone(&runner);
            let p = p.clone();
            let n = attempts(&p);
            tasks.spawn(async move {
                match r.complete(&p, n, r.opts.timeout).await {
                    Ok(logs) => {
                        print_logs(&p.name, &logs);
                        r.say(format!("pod/{}: Completed", p.name));
                        let _ = tx.send(());
                    }
                    Err(e) => {
                        let _ = r.fatal.send(format!("{e:#}"));
                    }
                }
            });
        } else if w.kind == Kind::StatefulSet && !w.parallel {
            ordered.entry(w.name.as_str()).or_default().push(p.clone());
        } else {
            let (tx, rx) = oneshot::channel();
            waiting.push((format!("pod/{}", p.name), rx));
            spawn_serve(&mut tasks, &runner, p.clone(), tx);
        }
    }
    // OrderedReady StatefulSets: pod n+1 is created once pod n is Ready.
    for (_, pods) in ordered {
        let mut txs = Vec::new();
        for p in &pods {
            let (tx, rx) = oneshot::channel();
            waiting.push((format!("pod/{}", p.name), rx));
            txs.push(tx);
        }
        let r = Arc::clone(&runner);
        let mut inner: JoinSet<()> = JoinSet::new();
        tasks.spawn(async move {
            for (p, outer) in pods.into_iter().zip(txs) {
                let (tx, rx) = oneshot::channel();
                spawn_serve(&mut inner, &r, p, tx);
                if rx.await.is_err() {
                    return;
                }
                let _ = outer.send(());
            }
            // Keep the pods (their monitoring tasks) alive as long as the run.
            while inner.join_next().await.is_some() {}
        });
    }
    let deadline = tokio::time::Instant::now() + opts.timeout;
    for (what, rx) in waiting {
        tokio::select! {
            r = rx => { if r.is_err() { bail!("{what}: its task ended before it was ready"); } }
            Some(e) = fatal_rx.recv() => bail!("{e}"),
            () = tokio::time::sleep_until(deadline) => {
                let stats = runner.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                let name = what.split_once('/').map_or(what.as_str(), |(_, n)| n);
                let why = stats.get(name).map(|s| s.last_problem.clone()).unwrap_or_default();
                bail!("{what} not Ready within {:?}; last problem: {why}", opts.timeout);
            }
        }
    }
    runner.say("every workload is Ready, every Job completed");

    for p in by_phase(Phase::PostInstall) {
        runner.say(format!("post-install hook pod/{}", p.name));
        let logs = runner.complete(p, attempts(p), opts.hook_timeout).await?;
        print_logs(&p.name, &logs);
    }
    let tests = by_phase(Phase::Test);
    if tests.is_empty() {
        bail!("the rendering has no helm test pod (helm.sh/hook: test)");
    }
    for p in tests {
        runner.say(format!("helm test pod/{}", p.name));
        let outcome = tokio::select! {
            r = runner.complete(p, 0, opts.hook_timeout) => r,
            Some(e) = fatal_rx.recv() => Err(anyhow::anyhow!("{e}")),
        };
        match outcome {
            Ok(logs) => {
                print_logs(&p.name, &logs);
                runner.say(format!("helm test pod/{}: Succeeded", p.name));
            }
            Err(e) => bail!("helm test pod/{} failed: {e:#}", p.name),
        }
    }
    if let Ok(e) = fatal_rx.try_recv() {
        bail!("{e}");
    }
    let stats = runner
        .stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    println!(
        "\npod                                      owner                                 ready after  restarts"
    );
    for (pod, s) in &stats {
        println!(
            "{pod:<40} {:<37} {:>10}  {}",
            s.owner,
            s.ready_after
                .map_or("-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64())),
            s.restarts
        );
    }
    tasks.abort_all();
    Ok(())
}

fn spawn_serve(tasks: &mut JoinSet<()>, runner: &Arc<Runner>, p: PodPlan, tx: oneshot::Sender<()>) {
    let r = Arc::clone(runner);
    tasks.spawn(async move {
        if let Err(e) = r.serve(&p, tx).await {
            let _ = r.fatal.send(format!("{e:#}"));
        }
    });
}

fn print_logs(pod: &str, logs: &str) {
    for l in logs.lines() {
        println!("    {pod} | {l}");
    }
}

/// Removes every container and the network of the run, and its files.
pub async fn cleanup(docker: &Docker, opts: &Options, keep_files: bool) {
    let label = format!("{RUN_LABEL}={}", opts.run_id);
    // Twice: a `docker run` that was in flight when the run stopped may land after the first.
    for _ in 0..2 {
        if let Ok(ids) = docker.labelled(&label).await
            && !ids.is_empty()
        {
            let mut args = vec!["rm".to_owned(), "-f".to_owned(), "-v".to_owned()];
            args.extend(ids);
            let _ = docker.run(&args).await;
        }
    }
    let _ = docker.runs(&["network", "rm", &opts.network()]).await;
    if !keep_files {
        let _ = std::fs::remove_dir_all(&opts.work_dir);
    }
}

/// The `docker run` commands of every pod, Secret values masked (`--dry-run`).
pub fn describe(m: &Manifests, opts: &Options) -> Result<String> {
    let mut out = String::new();
    for phase in [
        Phase::PreInstall,
        Phase::Install,
        Phase::PostInstall,
        Phase::Test,
    ] {
        for w in m.phase(phase) {
            for name in pod_names(w) {
                let pod = pod_plan(m, w, &name)?;
                out.push_str(&format!("# {:?}: {} pod {}\n", phase, w.id(), pod.name));
                let containers = pod
                    .init
                    .iter()
                    .map(|c| (c, true))
                    .chain(pod.containers.iter().map(|c| (c, false)));
                for (i, (c, init)) in containers.enumerate() {
                    let docker_name = format!(
                        "podrun-{}-{}-{}{}",
                        opts.run_id,
                        pod.name,
                        if init { "init-" } else { "" },
                        c.name
                    );
                    let first = format!(
                        "podrun-{}-{}-{}",
                        opts.run_id, pod.name, pod.containers[0].name
                    );
                    let join = (!init && i > pod.init.len()).then_some(first.as_str());
                    let dir = |v: &str| opts.work_dir.join(&pod.name).join(v).display().to_string();
                    let args = docker_run_args(
                        c,
                        &RunTarget {
                            docker_name: &docker_name,
                            join,
                            network: &opts.network(),
                            hostname: &pod.name,
                            aliases: &pod.aliases,
                            labels: &[],
                            volume_dir: &dir,
                            volumes: &pod.volumes,
                        },
                    );
                    let secrets: Vec<&str> = c
                        .env
                        .iter()
                        .filter(|(k, _)| c.secret_env.contains(k))
                        .map(|(_, v)| v.as_str())
                        .collect();
                    let shown: Vec<String> = args
                        .iter()
                        .map(|a| mask(a, &secrets))
                        .map(|a| {
                            if a.chars()
                                .all(|ch| ch.is_ascii_alphanumeric() || "-_=/.:,@".contains(ch))
                            {
                                a
                            } else {
                                format!("'{}'", a.replace('\'', "'\\''"))
                            }
                        })
                        .collect();
                    out.push_str(&format!("docker run {}\n", shown.join(" ")));
                }
            }
        }
    }
    Ok(out)
}

fn mask(arg: &str, secrets: &[&str]) -> String {
    let mut a = arg.to_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        a = a.replace(s, "***");
    }
    a
}
