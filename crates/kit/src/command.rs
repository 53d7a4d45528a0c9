//! The `serve` arm every service `main` shares.

use std::fmt::Display;

use tokio_util::sync::CancellationToken;

/// Runs a built service until SIGTERM/SIGINT (drained by the service's deadline); a build or
/// run failure becomes its message, for [`crate::exit_code`].
pub async fn serve<A, B, R, F, E>(built: Result<A, B>, run: R) -> Result<(), String>
where
    B: Display,
    R: FnOnce(A, CancellationToken) -> F,
    F: Future<Output = Result<(), E>>,
    E: Display,
{
    let app = built.map_err(|e| e.to_string())?;
    run(app, crate::shutdown::on_signal())
        .await
        .map_err(|e| e.to_string())
}
