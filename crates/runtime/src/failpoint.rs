//! Crash points for the kill tests (feature `failpoints`): the process SIGKILLs itself, so no
//! destructor, flush or rollback of ours runs, exactly as when an operator kills it.

pub(crate) fn kill_self(at: &str) -> ! {
    eprintln!("failpoint: SIGKILL at {at}");
    let _ = std::process::Command::new("kill")
        .args(["-9", &std::process::id().to_string()])
        .status();
    // `kill` missing from PATH: still die without cleanup.
    std::process::abort()
}
