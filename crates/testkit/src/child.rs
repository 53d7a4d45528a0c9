//! Re-executing the current test binary as a child process in a named role, for tests where a
//! real process must die (SIGKILL) or drain (SIGTERM). Such test binaries run without libtest
//! (`harness = false`) and call [`run_scenarios`] from `main`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Instant;

/// Environment variable naming the child's role.
pub const ROLE_ENV: &str = "JETMART_CHILD_ROLE";

/// The role this process was started for, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// Starts this same binary in `role` with extra environment; output is inherited. The child
/// is killed if the handle is dropped.
pub fn spawn(role: &str, envs: &[(&str, String)]) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, role).kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn()
}

/// A scenario: a name and an async body that panics on failure.
pub type Scenario = (&'static str, fn() -> Pin<Box<dyn Future<Output = ()>>>);

/// Runs each scenario on a fresh Tokio runtime, prints one line each and a closing
/// `N passed, M failed` line, and exits 1 if any failed. An optional first command-line
/// argument filters scenarios by substring (as `cargo test -- NAME` would).
pub fn run_scenarios(suite: &str, scenarios: &[Scenario]) -> ! {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let (mut passed, mut failed) = (0, 0);
    for (name, body) in scenarios {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let started = Instant::now();
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| rt.block_on(body())));
        drop(rt);
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("{suite}: {name} ... ok ({secs:.1}s)");
            }
            Err(_) => {
                failed += 1;
                println!("{suite}: {name} ... FAILED ({secs:.1}s)");
            }
        }
    }
    println!("\n{suite}: {passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 })
}
