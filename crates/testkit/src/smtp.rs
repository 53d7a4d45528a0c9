//! A real SMTP server (aiosmtpd, from the venv) that records what it receives into a Maildir.
//!
//! The handler script is embedded ([`SmtpSink::SCRIPT`]); the dev stack can run the same sink
//! with a maildir it keeps ([`SmtpSink::start_in`] or [`SmtpSink::command`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::error::{Result, TestkitError};
use crate::mail::ReceivedMail;
use crate::process::{
    Launch, POLL_INTERVAL, ScratchDir, ServerProcess, free_port, ready_timeout, with_port_retry,
};
use crate::tools;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How the sink answers, switchable while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    /// 250: messages are stored.
    Accept,
    /// 451 on RCPT TO: a relay that is temporarily unable to take mail.
    TempFail,
    /// 550 on RCPT TO: the relay refuses the recipient.
    Reject,
    /// 451 after the message data was sent.
    TempFailOnData,
    /// 550 after the message data was sent.
    RejectOnData,
}

impl SmtpMode {
    /// The word the handler script reads from the mode file.
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpMode::Accept => "accept",
            SmtpMode::TempFail => "tempfail",
            SmtpMode::Reject => "reject",
            SmtpMode::TempFailOnData => "tempfail-data",
            SmtpMode::RejectOnData => "reject-data",
        }
    }
}

/// Reads the 220 greeting: the sink is accepting SMTP sessions.
async fn greets(port: u16) -> std::result::Result<(), String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| format!("reading the greeting: {e}"))?;
    if !line.starts_with("220") {
        return Err(format!("greeting was {line:?}"));
    }
    let _ = reader.get_mut().write_all(b"QUIT\r\n").await;
    Ok(())
}

/// A recording SMTP server on a random loopback port. Dropping it kills the server and, unless
/// started with [`start_in`](Self::start_in), removes its maildir.
#[derive(Debug)]
pub struct SmtpSink {
    proc: ServerProcess,
    maildir: PathBuf,
    mode_file: PathBuf,
    // Declared last: dropped after the process is gone. None for start_in (caller's dir).
    _dir: Option<ScratchDir>,
}

impl SmtpSink {
    /// The handler script (Python, aiosmtpd). See its docstring for the stored file format.
    pub const SCRIPT: &'static str = include_str!("smtp_sink.py");

    /// Writes [`SCRIPT`](Self::SCRIPT) to `dir/smtp_sink.py` and returns the path.
    pub fn write_script(dir: &Path) -> Result<PathBuf> {
        let path = dir.join("smtp_sink.py");
        std::fs::write(&path, Self::SCRIPT)
            .map_err(|e| TestkitError::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }

    /// A command that runs the sink on 127.0.0.1:`port` with maildir `dir/maildir` and mode
    /// file `dir/mode`, for a supervisor that manages the process itself (the dev stack).
    pub fn command(dir: &Path, port: u16) -> Result<std::process::Command> {
        let python = tools::python()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| TestkitError::io(format!("creating {}", dir.display()), e))?;
        let script = Self::write_script(dir)?;
        let mut cmd = std::process::Command::new(python);
        cmd.arg(script)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--maildir",
            ])
            .arg(dir.join("maildir"))
            .arg("--mode-file")
            .arg(dir.join("mode"))
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1");
        Ok(cmd)
    }

    /// Starts a sink in a scratch dir and waits until it greets.
    pub async fn start() -> Result<SmtpSink> {
        let python = tools::python()?;
        with_port_retry(|| {
            let python = python.clone();
            async move {
                let dir = ScratchDir::new("smtp")?;
                let port = free_port()?;
                let path = dir.path().to_path_buf();
                Self::launch(python, &path, port, Some(dir)).await
            }
        })
        .await
    }

    /// Starts a sink whose files live in `dir` (kept on drop: `dir/maildir/new/` holds one file
    /// per message, readable with any Maildir reader) on 127.0.0.1:`port`.
    pub async fn start_in(dir: impl AsRef<Path>, port: u16) -> Result<SmtpSink> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| TestkitError::io(format!("creating {}", dir.display()), e))?;
        Self::launch(tools::python()?, dir, port, None).await
    }

    async fn launch(
        python: PathBuf,
        dir: &Path,
        port: u16,
        scratch: Option<ScratchDir>,
    ) -> Result<SmtpSink> {
        let script = Self::write_script(dir)?;
        let maildir = dir.join("maildir");
        let mode_file = dir.join("mode");
        let launch = Launch::new("smtp sink (aiosmtpd)", python, dir.join("smtp.log"), port)
            .arg(script)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--maildir",
            ])
            .arg(&maildir)
            .arg("--mode-file")
            .arg(&mode_file)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let sink = SmtpSink {
            proc: ServerProcess::new(launch),
            maildir,
            mode_file,
            _dir: scratch,
        };
        sink.set_mode(SmtpMode::Accept)?;
        sink.boot().await?;
        Ok(sink)
    }

    async fn boot(&self) -> Result<()> {
        self.proc.spawn().await?;
        let port = self.port();
        self.proc
            .wait_ready(ready_timeout(READY_TIMEOUT), || greets(port))
            .await
    }

    pub fn port(&self) -> u16 {
        self.proc.launch.port
    }

    /// `smtp://127.0.0.1:PORT` (the form SMTP_URL takes).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port())
    }

    /// The Maildir (`new/` holds the messages).
    pub fn maildir(&self) -> &Path {
        &self.maildir
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Switches how the sink answers; takes effect from the next RCPT / DATA.
    pub fn set_mode(&self, mode: SmtpMode) -> Result<()> {
        // Rename over the old file: the handler never reads a half-written mode.
        let tmp = self.mode_file.with_extension("tmp");
        std::fs::write(&tmp, mode.as_str())
            .and_then(|()| std::fs::rename(&tmp, &self.mode_file))
            .map_err(|e| TestkitError::io(format!("writing {}", self.mode_file.display()), e))
    }

    /// Every message received so far, in arrival order.
    pub fn try_messages(&self) -> Result<Vec<ReceivedMail>> {
        let new = self.maildir.join("new");
        let entries = match std::fs::read_dir(&new) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(TestkitError::io(format!("listing {}", new.display()), e)),
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let data = std::fs::read(&path)
                    .map_err(|e| TestkitError::io(format!("reading {}", path.display()), e))?;
                Ok(ReceivedMail::parse(path, &data))
            })
            .collect()
    }

    /// Every message received so far, in arrival order. Panics if the maildir cannot be read
    /// (use [`try_messages`](Self::try_messages) to handle that).
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.try_messages()
            .unwrap_or_else(|e| panic!("jetmart-testkit: reading the SMTP sink's maildir: {e}"))
    }

    /// Polls until at least `n` messages arrived; returns all of them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<ReceivedMail>> {
        let start = Instant::now();
        loop {
            let messages = self.try_messages()?;
            if messages.len() >= n {
                return Ok(messages);
            }
            if start.elapsed() > timeout {
                return Err(TestkitError::Timeout {
                    what: format!(
                        "{n} message(s) at the SMTP sink on port {} (got {})",
                        self.port(),
                        messages.len()
                    ),
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Deletes every stored message.
    pub fn clear(&self) -> Result<()> {
        for message in self.try_messages()? {
            std::fs::remove_file(&message.file)
                .map_err(|e| TestkitError::io(format!("removing {}", message.file.display()), e))?;
        }
        Ok(())
    }

    /// Graceful stop: the port refuses connections until [`restart`](Self::restart).
    pub fn stop(&self) {
        self.proc.stop(STOP_GRACE);
    }

    /// SIGKILL.
    pub fn kill(&self) {
        self.proc.kill();
    }

    /// Starts the sink again on the same port and maildir (stopping it first if it runs).
    pub async fn restart(&self) -> Result<()> {
        self.proc.stop(STOP_GRACE);
        self.boot().await
    }
}
