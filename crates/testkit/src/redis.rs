//! Throwaway redis-server: no persistence, random loopback port.

use std::time::Duration;

use crate::error::{Result, TestkitError};
use crate::process::{
    Launch, ScratchDir, ServerProcess, free_port, ready_timeout, with_port_retry,
};
use crate::tools;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(5);

async fn redis_answers(url: &str) -> std::result::Result<(), String> {
    let client = ::redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let pong: String = ::redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("PING: {e}"))?;
    if pong == "PONG" {
        Ok(())
    } else {
        Err(format!("PING answered {pong:?}"))
    }
}

/// `redis-server --port P --bind 127.0.0.1 --save '' --appendonly no`, dir in a scratch dir.
/// Dropping it kills the server.
#[derive(Debug)]
pub struct RedisServer {
    proc: ServerProcess,
    _dir: ScratchDir,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub async fn start() -> Result<RedisServer> {
        let binary = tools::redis_server()?;
        with_port_retry(|| Self::start_once(binary.clone())).await
    }

    async fn start_once(binary: std::path::PathBuf) -> Result<RedisServer> {
        let dir = ScratchDir::new("redis")?;
        let port = free_port()?;
        let launch = Launch::new("redis-server", binary, dir.path().join("redis.log"), port)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--dir"])
            .arg(dir.path());
        let server = RedisServer {
            proc: ServerProcess::new(launch),
            _dir: dir,
        };
        server.boot().await?;
        Ok(server)
    }

    async fn boot(&self) -> Result<()> {
        self.proc.spawn().await?;
        let url = self.url();
        self.proc
            .wait_ready(ready_timeout(READY_TIMEOUT), || redis_answers(&url))
            .await
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }

    pub fn port(&self) -> u16 {
        self.proc.launch.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn client(&self) -> Result<::redis::Client> {
        Ok(::redis::Client::open(self.url())?)
    }

    /// A new multiplexed connection.
    pub async fn connection(&self) -> Result<::redis::aio::MultiplexedConnection> {
        Ok(self.client()?.get_multiplexed_async_connection().await?)
    }

    /// FLUSHALL: empties every database.
    pub async fn flushall(&self) -> Result<()> {
        if !self.proc.is_running() {
            return Err(TestkitError::NotRunning {
                what: format!("redis-server on port {}", self.port()),
            });
        }
        let mut conn = self.connection().await?;
        let _: () = ::redis::cmd("FLUSHALL").query_async(&mut conn).await?;
        Ok(())
    }

    /// SIGKILL. Without persistence the data is gone; the port stays for [`restart`](Self::restart).
    pub fn kill(&self) {
        self.proc.kill();
    }

    /// Graceful stop (SIGTERM).
    pub fn stop(&self) {
        self.proc.stop(STOP_GRACE);
    }

    /// Starts the server again on the same port (stopping it first if it runs), empty.
    pub async fn restart(&self) -> Result<()> {
        self.proc.stop(STOP_GRACE);
        self.boot().await
    }
}
