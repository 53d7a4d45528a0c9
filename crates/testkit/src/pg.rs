//! Throwaway Postgres: one cluster per test binary shared through [`fresh_database`], and owned
//! clusters ([`PgCluster`]) for tests that crash the server.
//!
//! Durability settings: fsync and full_page_writes are off (fast, and a process crash loses
//! nothing: the page cache survives), synchronous_commit stays on so an acknowledged commit is in
//! the WAL before the client hears about it.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};

use crate::error::{Result, TestkitError};
use crate::process::{
    Launch, POLL_INTERVAL, ScratchDir, ServerProcess, free_port, ready_timeout, with_port_retry,
};
use crate::tools;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Immediate shutdown (SIGQUIT) normally takes milliseconds.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[allow(unsafe_code)]
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// (uid, gid) of a local user.
#[allow(unsafe_code)]
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain old data; all-zero is a valid (empty) value that getpwnam_r fills.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and buf.len() is its size; we
    // read only the integer fields afterwards, never the strings that point into buf.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

/// Postgres refuses to run as root, so as root we run it as `postgres`.
fn server_user() -> Result<Option<(u32, u32)>> {
    if running_as_root() {
        lookup_user("postgres")
            .map(Some)
            .ok_or(TestkitError::NoPostgresUser)
    } else {
        Ok(None)
    }
}

fn check_db_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(TestkitError::Invalid(format!(
            "database name {name:?}: use 1-63 of [a-z0-9_], starting with a letter or _"
        )))
    }
}

async fn pg_answers(url: &str) -> std::result::Result<(), String> {
    let mut conn = PgConnection::connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .map_err(|e| format!("SELECT 1: {e}"))?;
    let _ = conn.close().await;
    Ok(())
}

async fn admin_exec(admin_url: &str, sql: &str) -> Result<()> {
    let mut conn = PgConnection::connect(admin_url).await?;
    sqlx::raw_sql(sql).execute(&mut conn).await?;
    let _ = conn.close().await;
    Ok(())
}

async fn drop_database_at(admin_url: &str, name: &str) -> Result<()> {
    check_db_name(name)?;
    // FORCE ends sessions a test left open (its pool, say).
    admin_exec(
        admin_url,
        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .await
}

/// A Postgres cluster (initdb + postmaster) owned by the caller, on a random loopback port,
/// data in a scratch dir. Dropping it stops the server (immediate shutdown) and removes the dir.
#[derive(Debug)]
pub struct PgCluster {
    proc: ServerProcess,
    data_dir: PathBuf,
    // Declared last: dropped after the process is gone.
    dir: ScratchDir,
}

impl PgCluster {
    /// initdb, start, and wait until a connection works.
    pub async fn start() -> Result<PgCluster> {
        let bin = tools::pg_bin_dir()?;
        let run_as = server_user()?;
        let dir = ScratchDir::new("pg")?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(|e| {
                TestkitError::io(format!("chown {} to postgres", dir.path().display()), e)
            })?;
        }
        let data_dir = dir.path().join("data");
        let mut initdb = Launch::new(
            "initdb",
            bin.join("initdb"),
            dir.path().join("initdb.log"),
            0,
        )
        .arg("-D")
        .arg(&data_dir)
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .env("LC_ALL", "C");
        initdb.run_as = run_as;
        initdb.run_to_completion().await?;

        let proc = with_port_retry(|| {
            let (bin, dir, data_dir) = (&bin, &dir, &data_dir);
            async move {
                let port = free_port()?;
                let mut launch = Launch::new(
                    "postgres",
                    bin.join("postgres"),
                    dir.path().join(format!("postgres-{port}.log")),
                    port,
                )
                .arg("-D")
                .arg(data_dir)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-k",
                ])
                .arg(dir.path())
                .args([
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=300",
                ])
                .env("LC_ALL", "C");
                launch.run_as = run_as;
                // SIGQUIT = immediate shutdown: the postmaster takes its backends down with it.
                launch.stop_signal = libc::SIGQUIT;
                let proc = ServerProcess::new(launch);
                proc.spawn().await?;
                let url = admin_url(port);
                proc.wait_ready(ready_timeout(READY_TIMEOUT), || pg_answers(&url))
                    .await?;
                Ok(proc)
            }
        })
        .await?;
        Ok(PgCluster {
            proc,
            data_dir,
            dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.proc.launch.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/<db>`
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port())
    }

    /// URL of the `postgres` maintenance database.
    pub fn admin_url(&self) -> String {
        admin_url(self.port())
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Pid of the postmaster, None while it is down.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// `CREATE DATABASE name` (name: [a-z0-9_], at most 63).
    pub async fn create_database(&self, name: &str) -> Result<()> {
        check_db_name(name)?;
        admin_exec(&self.admin_url(), &format!("CREATE DATABASE \"{name}\"")).await
    }

    /// `DROP DATABASE IF EXISTS name WITH (FORCE)`.
    pub async fn drop_database(&self, name: &str) -> Result<()> {
        drop_database_at(&self.admin_url(), name).await
    }

    /// A new empty database on this cluster, dropped (best effort) when the handle drops.
    pub async fn fresh_database(&self) -> Result<TestDatabase> {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        self.create_database(&name).await?;
        Ok(TestDatabase {
            url: self.url_for(&name),
            admin_url: self.admin_url(),
            name,
        })
    }

    /// Crash: SIGKILL the postmaster and all its backends at once, like a machine losing power
    /// minus the page cache. Clients see their connections reset; the data dir is left as is
    /// for [`start_again`](Self::start_again), which runs crash recovery.
    pub fn crash(&self) {
        self.proc.kill_with_children();
    }

    /// Immediate shutdown (SIGQUIT): no checkpoint, so the next start also runs recovery.
    pub fn stop(&self) {
        self.proc.stop(STOP_GRACE);
    }

    /// Starts the server again on the same port and data dir and waits until it accepts
    /// connections (after crash recovery).
    pub async fn start_again(&self) -> Result<()> {
        let timeout = ready_timeout(READY_TIMEOUT);
        let start = Instant::now();
        let url = self.admin_url();
        loop {
            self.proc.spawn().await?;
            match self.proc.wait_ready(timeout, || pg_answers(&url)).await {
                // A killed backend can hold the old shared memory for a moment after the
                // postmaster died; the new postmaster refuses to start until it is gone.
                Err(TestkitError::Exited { stderr_tail, .. })
                    if stderr_tail.contains("pre-existing shared memory block")
                        && start.elapsed() < timeout =>
                {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                other => return other,
            }
        }
    }

    /// Stops the server and removes its dir now (the shared cluster's exit hook).
    fn shutdown_now(&self) {
        self.proc.stop(STOP_GRACE);
        self.dir.remove_now();
    }
}

fn admin_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

static SHARED: tokio::sync::OnceCell<PgCluster> = tokio::sync::OnceCell::const_new();

/// Statics are never dropped; this hook stops the shared cluster when the test binary exits
/// normally. (On abort or SIGKILL the parent-death signal kills it and the next run sweeps the dir.)
extern "C" fn stop_shared_cluster_at_exit() {
    if let Some(cluster) = SHARED.get() {
        cluster.shutdown_now();
    }
}

#[allow(unsafe_code)]
fn register_exit_hook() {
    // SAFETY: the hook is a plain extern "C" fn with no arguments that never unwinds (it only
    // signals, waits and removes files, ignoring errors).
    unsafe {
        libc::atexit(stop_shared_cluster_at_exit);
    }
}

/// The cluster shared by every test of this binary, started on first use. Tests running in
/// parallel share it; each gets its own database from [`fresh_database`].
pub async fn shared_cluster() -> Result<&'static PgCluster> {
    SHARED
        .get_or_try_init(|| async {
            let cluster = PgCluster::start().await?;
            register_exit_hook();
            Ok(cluster)
        })
        .await
}

/// A new empty database on the shared cluster:
/// `let db = jetmart_testkit::pg::fresh_database().await?;`
pub async fn fresh_database() -> Result<TestDatabase> {
    shared_cluster().await?.fresh_database().await
}

/// A database of its own for one test. Dropping it drops the database (best effort).
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// `postgres://postgres@127.0.0.1:PORT/<name>` (trust auth, no password).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new pool on this database (10 connections at most).
    pub async fn pool(&self) -> Result<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&self.url)
            .await?)
    }

    /// A single new connection.
    pub async fn connect(&self) -> Result<PgConnection> {
        Ok(PgConnection::connect(&self.url).await?)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::env::var_os("JETMART_TESTKIT_KEEP").is_some() {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop cannot await, and blocking on the test's own runtime would deadlock: use a
        // thread with a runtime of its own.
        let worker = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let result = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), drop_database_at(&admin_url, &name))
                    .await
            });
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(db = %name, error = %e, "testkit: could not drop database")
                }
                Err(_) => tracing::debug!(db = %name, "testkit: dropping database timed out"),
            }
        });
        let _ = worker.join();
    }
}
