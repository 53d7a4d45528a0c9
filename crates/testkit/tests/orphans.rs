//! Children must not outlive the test process, even when it is SIGKILLed; dirs it leaves are
//! swept by the next run; the shared Postgres is stopped and removed at a normal exit.
//!
//! The outer tests re-run this test binary as a child that starts servers (the ignored
//! `helper_*` tests, which do nothing unless HELPER_OUT is set).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jetmart_testkit::{NatsServer, PgCluster, RedisServer, SmtpSink, pg};
use sqlx::Connection;

const HELPER_OUT: &str = "JETMART_TESTKIT_HELPER_OUT";

fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_helper(name: &str, out: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_OUT, out)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Lines "key value" written by a helper.
fn read_report(out: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn scratch_root() -> PathBuf {
    std::env::temp_dir().join("jetmart-testkit")
}

fn dirs_of(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(scratch_root())
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{pid}-"))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn servers_die_with_a_sigkilled_test_process_and_its_dirs_are_swept() {
    let work = std::env::temp_dir().join(format!("jetmart-testkit-orphans-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let out = work.join("holder.txt");
    let mut holder = run_helper("helper_holds_servers", &out);
    let holder_pid = holder.id();
    wait_until("the helper's servers", Duration::from_secs(120), || {
        if let Ok(Some(status)) = holder.try_wait() {
            panic!("helper exited early with {status}");
        }
        read_report(&out).iter().any(|(k, _)| k == "ready")
    });
    let pids: Vec<(String, u32)> = read_report(&out)
        .into_iter()
        .filter(|(k, _)| k != "ready")
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    assert_eq!(pids.len(), 6, "{pids:?}");
    for (what, pid) in &pids {
        assert!(!gone(*pid), "{what} ({pid}) should be running");
    }
    assert!(!dirs_of(holder_pid).is_empty(), "helper has scratch dirs");

    holder.kill().unwrap(); // SIGKILL: no destructors, no atexit
    holder.wait().unwrap();
    for (what, pid) in &pids {
        wait_until(
            &format!("{what} ({pid}) to die with its parent"),
            Duration::from_secs(20),
            || gone(*pid),
        );
    }

    // The next test process sweeps the dead one's dirs; at its own normal exit the shared
    // Postgres is stopped and its dir removed.
    let out2 = work.join("normal.txt");
    let status = run_helper("helper_exits_normally", &out2).wait().unwrap();
    assert!(status.success(), "second helper failed: {status}");
    assert!(
        dirs_of(holder_pid).is_empty(),
        "stale dirs left: {:?}",
        dirs_of(holder_pid)
    );
    let report = read_report(&out2);
    let get = |key: &str| {
        report
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let postmaster: u32 = get("shared_postmaster").parse().unwrap();
    wait_until(
        "the shared postmaster to stop at exit",
        Duration::from_secs(20),
        || gone(postmaster),
    );
    assert!(
        !Path::new(&get("shared_data_dir")).exists(),
        "shared cluster dir removed at exit"
    );

    std::fs::remove_dir_all(&work).unwrap();
}

#[tokio::test]
#[ignore = "helper process for servers_die_with_a_sigkilled_test_process_and_its_dirs_are_swept"]
async fn helper_holds_servers() {
    let Some(out) = std::env::var_os(HELPER_OUT) else {
        return;
    };
    let nats = NatsServer::start().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let smtp = SmtpSink::start().await.unwrap();
    let pg = PgCluster::start().await.unwrap();
    let db = pg.fresh_database().await.unwrap();
    let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let shared = pg::shared_cluster().await.unwrap();
    let report = format!(
        "nats {}\nredis {}\nsmtp {}\npostmaster {}\nbackend {backend}\nshared_postmaster {}\nready 1\n",
        nats.pid().unwrap(),
        redis.pid().unwrap(),
        smtp.pid().unwrap(),
        pg.pid().unwrap(),
        shared.pid().unwrap(),
    );
    std::fs::write(out, report).unwrap();
    // Held until the outer test SIGKILLs this process.
    std::future::pending::<()>().await;
}

#[tokio::test]
#[ignore = "helper process for servers_die_with_a_sigkilled_test_process_and_its_dirs_are_swept"]
async fn helper_exits_normally() {
    let Some(out) = std::env::var_os(HELPER_OUT) else {
        return;
    };
    let db = pg::fresh_database().await.unwrap();
    let pool = db.pool().await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
    let shared = pg::shared_cluster().await.unwrap();
    std::fs::write(
        out,
        format!(
            "shared_postmaster {}\nshared_data_dir {}\n",
            shared.pid().unwrap(),
            shared.data_dir().display()
        ),
    )
    .unwrap();
}
