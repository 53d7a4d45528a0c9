//! What every server shares: the spawner thread, child handles, readiness polling, scratch dirs
//! and ports.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, mpsc};
use std::time::{Duration, Instant};

use crate::error::{Result, TestkitError};

/// How often readiness and waits poll.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// One readiness attempt may take this long before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Lines of a child's output quoted in errors.
const TAIL_LINES: usize = 30;

/// Overall readiness timeout: `default`, or `JETMART_TESTKIT_READY_SECS` on slow machines.
pub(crate) fn ready_timeout(default: Duration) -> Duration {
    std::env::var("JETMART_TESTKIT_READY_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(default)
}

// ---------------------------------------------------------------- spawner thread

struct SpawnRequest {
    cmd: Command,
    reply: tokio::sync::oneshot::Sender<io::Result<Child>>,
}

/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. Test
/// threads and tokio workers come and go, so every child is forked by this one thread, which
/// never returns: the signal then fires exactly when the test process dies (even by SIGKILL).
fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("jetmart-testkit-spawner".into())
            .spawn(move || {
                // The static sender never drops, so this loop lives as long as the process.
                for mut req in rx {
                    let _ = req.reply.send(req.cmd.spawn());
                }
            })
            .expect("jetmart-testkit: cannot start the spawner thread");
        tx
    })
}

#[allow(unsafe_code)]
fn arm_parent_death_signal(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec (after std has applied uid/gid,
    // so the setting survives the credential change) and only calls the async-signal-safe
    // prctl and getppid; it neither allocates nor takes locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; nobody would kill us then.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

async fn spawn_via_spawner(mut cmd: Command) -> io::Result<Child> {
    arm_parent_death_signal(&mut cmd);
    let (reply, rx) = tokio::sync::oneshot::channel();
    spawner()
        .send(SpawnRequest { cmd, reply })
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("spawner thread dropped the request"))?
}

// ---------------------------------------------------------------- signals and /proc

#[allow(unsafe_code)]
pub(crate) fn send_signal(pid: u32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is one of our children.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// Gone, or a zombie (its resources, shared memory attachments included, are released).
pub(crate) fn pid_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => proc_stat_fields(&stat).is_some_and(|(state, _)| state == 'Z'),
        Err(_) => true,
    }
}

/// (state, ppid) from a /proc/<pid>/stat line; the command name may contain spaces and parens.
fn proc_stat_fields(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Direct children of `pid` (postgres backends are direct children of the postmaster).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| proc_stat_fields(&s))
                .is_some_and(|(_, ppid)| ppid == pid)
        })
        .collect()
}

fn wait_pids_gone(pids: &[u32], timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        if pids.iter().all(|&p| pid_gone(p)) {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- launching

/// How to start one server process, kept so it can be started again on the same port and dir.
#[derive(Clone, Debug)]
pub(crate) struct Launch {
    /// Short name for errors ("nats-server n1", "postgres").
    pub what: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub envs: Vec<(OsString, OsString)>,
    /// stdout and stderr go here (appended, so a restart keeps the history).
    pub log: PathBuf,
    pub port: u16,
    /// (uid, gid) to run as.
    pub run_as: Option<(u32, u32)>,
    /// Signal for a graceful stop; SIGKILL follows after the grace period.
    pub stop_signal: libc::c_int,
}

impl Launch {
    pub fn new(what: impl Into<String>, program: PathBuf, log: PathBuf, port: u16) -> Self {
        Launch {
            what: what.into(),
            program,
            args: Vec::new(),
            envs: Vec::new(),
            log,
            port,
            run_as: None,
            stop_signal: libc::SIGTERM,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    pub fn tail(&self) -> String {
        log_tail(&self.log)
    }

    fn command(&self) -> Result<Command> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| TestkitError::io(format!("opening {}", self.log.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| TestkitError::io("duplicating the log file handle", e))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        Ok(cmd)
    }

    /// Runs a short-lived command (initdb) to completion through the spawner.
    pub async fn run_to_completion(&self) -> Result<()> {
        let cmd = self.command()?;
        let mut child = spawn_via_spawner(cmd)
            .await
            .map_err(|source| TestkitError::Spawn {
                binary: self.program.clone(),
                source,
            })?;
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(|e| TestkitError::io("waiting for a child", io::Error::other(e)))?
            .map_err(|e| TestkitError::io(format!("waiting for {}", self.program.display()), e))?;
        if status.success() {
            Ok(())
        } else {
            Err(TestkitError::CommandFailed {
                binary: self.program.clone(),
                status: status.to_string(),
                output: self.tail(),
            })
        }
    }
}

/// Last lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(bytes) = fs::read(path) else {
        return format!("(no output: {} unreadable)", path.display());
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
    if tail.is_empty() {
        "(no output)".to_owned()
    } else {
        tail.join("\n")
    }
}

/// One server process that can be killed and started again with the same launch.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    pub launch: Launch,
    child: Mutex<Option<Child>>,
}

impl ServerProcess {
    pub fn new(launch: Launch) -> Self {
        ServerProcess {
            launch,
            child: Mutex::new(None),
        }
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while holding this lock leaves a valid Option<Child>: keep using it.
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the process unless it is already running.
    pub async fn spawn(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let cmd = self.launch.command()?;
        let child = spawn_via_spawner(cmd)
            .await
            .map_err(|source| TestkitError::Spawn {
                binary: self.launch.program.clone(),
                source,
            })?;
        tracing::debug!(what = %self.launch.what, pid = child.id(), port = self.launch.port, "testkit: started");
        *self.child() = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        let mut guard = self.child();
        let child = guard.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Err(Exited) when the process has exited (or was never started).
    pub fn check_alive(&self) -> Result<()> {
        let mut guard = self.child();
        let status = match guard.as_mut() {
            None => "no process (not started)".to_owned(),
            Some(child) => match child.try_wait() {
                Ok(None) => return Ok(()),
                Ok(Some(status)) => status.to_string(),
                Err(e) => format!("unknown status ({e})"),
            },
        };
        Err(TestkitError::Exited {
            what: self.launch.what.clone(),
            binary: self.launch.program.clone(),
            port: self.launch.port,
            status,
            stderr_tail: self.launch.tail(),
        })
    }

    /// SIGKILL and reap. No-op when not running.
    pub fn kill(&self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL the process and its direct children at once, as a machine crash would, and wait
    /// until all of them are gone. SIGSTOP first so it cannot fork while we look.
    pub fn kill_with_children(&self) {
        let Some(mut child) = self.child().take() else {
            return;
        };
        let pid = child.id();
        if matches!(child.try_wait(), Ok(None)) {
            send_signal(pid, libc::SIGSTOP);
            let kids = children_of(pid);
            for &kid in &kids {
                send_signal(kid, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            if !wait_pids_gone(&kids, Duration::from_secs(10)) {
                tracing::warn!(what = %self.launch.what, ?kids, "testkit: children outlived SIGKILL");
            }
        } else {
            let _ = child.wait();
        }
    }

    /// Graceful stop signal, then SIGKILL after `grace`. Waits for the exit. No-op when not running.
    pub fn stop(&self, grace: Duration) {
        let Some(mut child) = self.child().take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            send_signal(child.id(), self.launch.stop_signal);
            let start = Instant::now();
            while matches!(child.try_wait(), Ok(None)) {
                if start.elapsed() > grace {
                    tracing::debug!(what = %self.launch.what, "testkit: graceful stop timed out, killing");
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.wait();
    }

    /// Polls `probe` until it succeeds, the process exits, or `timeout` passes.
    pub async fn wait_ready<T, F, Fut>(&self, timeout: Duration, mut probe: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, String>>,
    {
        let start = Instant::now();
        let mut last_error: String;
        loop {
            self.check_alive()?;
            match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => last_error = e,
                Err(_) => last_error = format!("one attempt took longer than {PROBE_TIMEOUT:?}"),
            }
            self.check_alive()?;
            if start.elapsed() >= timeout {
                return Err(TestkitError::NotReady {
                    what: self.launch.what.clone(),
                    binary: self.launch.program.clone(),
                    port: self.launch.port,
                    waited: start.elapsed(),
                    last_error,
                    stderr_tail: self.launch.tail(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.launch.stop_signal == libc::SIGKILL {
            self.kill();
        } else {
            self.stop(Duration::from_secs(10));
        }
    }
}

/// Runs `attempt` (which picks fresh ports) up to three times while a child reports its port
/// was taken between our check and its bind.
pub(crate) async fn with_port_retry<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(e) if tries < 3 && e.is_port_in_use() => {
                tracing::debug!(error = %e, "testkit: port taken, retrying on another");
            }
            other => return other,
        }
    }
}

// ---------------------------------------------------------------- scratch dirs

/// `$TMPDIR/jetmart-testkit`: every dir we make lives here as `<pid>-<kind>-<n>-<rand>`, so dirs
/// of dead test processes (SIGKILLed, aborted) can be found and removed by the next run.
fn scratch_root() -> Result<&'static Path> {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    if let Some(root) = ROOT.get() {
        return Ok(root);
    }
    let root = std::env::temp_dir().join("jetmart-testkit");
    fs::create_dir_all(&root)
        .map_err(|e| TestkitError::io(format!("creating {}", root.display()), e))?;
    // Shared by all users like /tmp itself (postgres runs as another user when we are root).
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o1777));
    }
    sweep_stale(&root);
    Ok(ROOT.get_or_init(|| root))
}

fn sweep_stale(root: &Path) {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::debug!(dir = %entry.path().display(), "testkit: removing stale dir of a dead process");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A directory removed on drop (unless `JETMART_TESTKIT_KEEP` is set, for post-mortems; the next
/// run sweeps it then).
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(kind: &str) -> Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let root = scratch_root()?;
        let name = format!(
            "{}-{kind}-{}-{:06x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            random_u64() & 0xff_ffff
        );
        let path = root.join(name);
        fs::create_dir(&path)
            .map_err(|e| TestkitError::io(format!("creating {}", path.display()), e))?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn remove_now(&self) {
        if std::env::var_os("JETMART_TESTKIT_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        self.remove_now();
    }
}

// ---------------------------------------------------------------- ports

/// A free loopback port that this process has not handed out before.
///
/// Picked below the kernel's ephemeral range when there is room, so the port of a server that is
/// down for a restart cannot be taken by some client's outgoing connection meanwhile.
/// A free loopback port below the kernel's ephemeral range (so no outgoing connection takes it
/// while a server is down for a restart), never handed out twice by this process.
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOW: u16 = 10000;
    for _ in 0..200 {
        let port = if ephemeral_low > LOW + 2000 {
            LOW + (random_u64() % u64::from(ephemeral_low - LOW)) as u16
        } else {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .map_err(|e| TestkitError::io("binding 127.0.0.1:0", e))?
                .port()
        };
        if handed.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed.insert(port);
            return Ok(port);
        }
    }
    Err(TestkitError::io(
        "finding a free loopback port",
        io::Error::new(io::ErrorKind::AddrInUse, "200 candidates were all taken"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_names() {
        assert_eq!(proc_stat_fields("42 (a) b) S 7 42 42"), Some(('S', 7)));
        assert_eq!(proc_stat_fields("42 (postgres) Z 1 0"), Some(('Z', 1)));
    }

    #[test]
    fn ports_are_distinct_and_free() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, b);
        assert!(![4222, 5432, 6379].contains(&a));
        TcpListener::bind((Ipv4Addr::LOCALHOST, a)).expect("port should be bindable");
    }

    #[test]
    fn scratch_dirs_are_named_by_pid_and_removed() {
        let dir = ScratchDir::new("unit").unwrap();
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with(&format!("{}-unit-", std::process::id())),
            "{name}"
        );
        drop(dir);
        assert!(!path.exists() || std::env::var_os("JETMART_TESTKIT_KEEP").is_some());
    }
}
