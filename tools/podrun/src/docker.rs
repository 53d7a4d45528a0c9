//! The Docker CLI, as the run uses it. Every call is a `docker` process (no daemon API client):
//! what the run does is what a user could type.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct Docker {
    bin: String,
}

/// What `docker inspect` says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub running: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
}

impl Docker {
    pub fn new(bin: impl Into<String>) -> Self {
        Docker { bin: bin.into() }
    }

    fn cmd(&self, args: &[String]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs `docker <args>`; Ok(stdout) on exit 0, else the error with stderr.
    pub async fn run(&self, args: &[String]) -> Result<String> {
        let out = self
            .cmd(args)
            .output()
            .await
            .with_context(|| format!("cannot run {}", self.bin))?;
        if !out.status.success() {
            bail!(
                "docker {} failed: {}",
                args.first().map_or("", String::as_str),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub async fn runs(&self, args: &[&str]) -> Result<String> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        self.run(&args).await
    }

    pub async fn ping(&self) -> Result<()> {
        self.runs(&["version", "--format", "{{.Server.Version}}"])
            .await
            .context("the Docker engine does not answer")?;
        Ok(())
    }

    /// The image's configured user ("" when none), or an error when the image is not local.
    pub async fn image_user(&self, image: &str) -> Result<String> {
        self.runs(&["image", "inspect", "--format", "{{.Config.User}}", image])
            .await
            .with_context(|| {
                format!("image {image} is not present locally (nothing can be pulled)")
            })
    }

    pub async fn state(&self, name: &str) -> Result<State> {
        let s = self
            .runs(&[
                "inspect",
                "--format",
                "{{.State.Running}} {{.State.ExitCode}} {{.State.OOMKilled}}",
                name,
            ])
            .await?;
        let mut it = s.split_whitespace();
        Ok(State {
            running: it.next() == Some("true"),
            exit_code: it.next().and_then(|c| c.parse().ok()).unwrap_or(-1),
            oom_killed: it.next() == Some("true"),
        })
    }

    pub async fn ip(&self, name: &str, network: &str) -> Result<String> {
        let format = format!(
            "{{{{with index .NetworkSettings.Networks \"{network}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}"
        );
        let ip = self.runs(&["inspect", "--format", &format, name]).await?;
        if ip.is_empty() {
            bail!("container {name} has no address on network {network}");
        }
        Ok(ip)
    }

    /// Waits for the container to exit; its exit code.
    pub async fn wait(&self, name: &str) -> Result<i64> {
        let code = self.runs(&["wait", name]).await?;
        code.parse()
            .with_context(|| format!("docker wait {name} printed {code:?}"))
    }

    /// The container's output (stdout and stderr interleaved as Docker recorded them).
    pub async fn logs(&self, name: &str, tail: Option<usize>) -> String {
        let mut args = vec!["logs".to_owned()];
        if let Some(n) = tail {
            args.push(format!("--tail={n}"));
        }
        args.push(name.to_owned());
        match self.cmd(&args).output().await {
            Ok(out) => {
                let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&out.stderr));
                s
            }
            Err(e) => format!("(no logs: {e})"),
        }
    }

    /// `docker exec` with a deadline: Ok(exit code).
    pub async fn exec(&self, name: &str, command: &[String], timeout: Duration) -> Result<i32> {
        let mut args = vec!["exec".to_owned(), name.to_owned()];
        args.extend(command.iter().cloned());
        let out = tokio::time::timeout(timeout, self.cmd(&args).output())
            .await
            .with_context(|| format!("exec {command:?} timed out after {timeout:?}"))??;
        Ok(out.status.code().unwrap_or(-1))
    }

    /// Containers carrying the label, running or not.
    pub async fn labelled(&self, label: &str) -> Result<Vec<String>> {
        let filter = format!("label={label}");
        let out = self.runs(&["ps", "-aq", "--filter", &filter]).await?;
        Ok(out
            .lines()
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
            .collect())
    }
}
