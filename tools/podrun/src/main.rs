//! Thin main: arguments, the rendering (`helm template` or a file), the run, cleanup always.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use jetmart_podrun::docker::Docker;
use jetmart_podrun::manifest::Manifests;
use jetmart_podrun::run::{self, Options};

#[derive(Debug, Parser)]
#[command(
    name = "jetmart-podrun",
    version,
    about = "Run a rendered Helm chart's pods as Docker containers, then its helm test pods",
    after_help = "Example (the CI step, scripts/images/chart-run.sh):\n  \
jetmart-podrun --chart deploy/helm/jetmart -f deploy/helm/jetmart/values-kind.yaml \
-f deploy/helm/ci-values/containers.yaml --release jetmart --namespace jetmart\n\n\
Exit status: 0 every workload Ready and every helm test pod succeeded; 1 the chart does not run \
(the reason is printed); 2 the run could not be set up (Docker, helm); 130 interrupted. \
Containers, the network and the files of the run are removed on every exit."
)]
struct Args {
    /// Chart directory rendered with `helm template`.
    #[arg(long, conflicts_with = "manifests")]
    chart: Option<PathBuf>,
    /// Values files for `helm template`, layered in order.
    #[arg(short = 'f', long = "values")]
    values: Vec<PathBuf>,
    /// An already rendered multi-document YAML instead of --chart.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// Release name.
    #[arg(long, default_value = "jetmart")]
    release: String,
    /// Namespace (the rendering's Service FQDNs use it).
    #[arg(long, default_value = "jetmart")]
    namespace: String,
    /// helm binary (default: .tools/bin/helm when present, else helm on PATH).
    #[arg(long, env = "HELM")]
    helm: Option<PathBuf>,
    /// docker binary.
    #[arg(long, env = "DOCKER", default_value = "docker")]
    docker: String,
    /// Time every workload gets to become Ready.
    #[arg(long, default_value = "300", value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Time one hook or helm test pod may run.
    #[arg(long, default_value = "300", value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    hook_timeout: u64,
    /// Container restarts (crash, failed liveness) after which the run fails.
    #[arg(long, default_value_t = 5)]
    max_restarts: u32,
    /// Print the `docker run` command of every container (Secret values masked) and exit.
    #[arg(long)]
    dry_run: bool,
    /// Leave the containers and the network running after the run (to inspect them); remove
    /// them later with `docker rm -f $(docker ps -aq --filter label=io.jetmart.podrun.run=<id>)`
    /// and `docker network rm podrun-<id>`.
    #[arg(long)]
    keep_containers: bool,
    /// Keep the run's files (rendering, volume contents) after the run.
    #[arg(long)]
    keep_files: bool,
}

fn render(args: &Args) -> Result<String> {
    if let Some(path) = &args.manifests {
        return std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()));
    }
    let Some(chart) = &args.chart else {
        bail!("give --chart (rendered with helm template) or --manifests");
    };
    let helm = args.helm.clone().unwrap_or_else(|| {
        let local = PathBuf::from(".tools/bin/helm");
        if local.is_file() {
            local
        } else {
            PathBuf::from("helm")
        }
    });
    let mut cmd = std::process::Command::new(&helm);
    cmd.arg("template")
        .arg(&args.release)
        .arg(chart)
        .arg("--namespace")
        .arg(&args.namespace);
    for v in &args.values {
        cmd.arg("-f").arg(v);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", helm.display()))?;
    if !out.status.success() {
        bail!(
            "helm template failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let rendering = match render(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("podrun: {e:#}");
            return ExitCode::from(2);
        }
    };
    let manifests = match Manifests::parse(&rendering, &args.namespace) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("podrun: {e:#}");
            return ExitCode::from(1);
        }
    };
    let run_id = format!(
        "{:08x}",
        std::process::id()
            ^ (std::time::UNIX_EPOCH
                .elapsed()
                .map_or(0, |d| d.subsec_nanos()))
    );
    let opts = Options {
        work_dir: std::env::temp_dir().join(format!("podrun-{run_id}")),
        run_id,
        timeout: Duration::from_secs(args.timeout),
        hook_timeout: Duration::from_secs(args.hook_timeout),
        max_restarts: args.max_restarts,
    };
    if args.dry_run {
        return match run::describe(&manifests, &opts) {
            Ok(s) => {
                print!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("podrun: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let docker = Docker::new(&args.docker);
    if let Err(e) = docker.ping().await {
        eprintln!("podrun: {e:#}");
        return ExitCode::from(2);
    }
    println!(
        "podrun: run {} (network {}, files {})",
        opts.run_id,
        opts.network(),
        opts.work_dir.display()
    );
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("podrun: cannot watch SIGTERM: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = tokio::select! {
        r = run::run(&manifests, docker.clone(), opts.clone()) => r.map_err(|e| (1u8, e)),
        _ = tokio::signal::ctrl_c() => Err((130, anyhow::anyhow!("interrupted"))),
        _ = term.recv() => Err((143, anyhow::anyhow!("terminated"))),
    };
    if args.keep_containers && !matches!(outcome, Err((130 | 143, _))) {
        println!(
            "podrun: containers kept: docker ps --filter label={}={}",
            run::RUN_LABEL,
            opts.run_id
        );
    } else {
        println!("podrun: removing the run's containers and network");
        run::cleanup(&docker, &opts, args.keep_files).await;
    }
    match outcome {
        Ok(()) => {
            println!("podrun: PASS: every workload Ready, every helm test pod succeeded");
            ExitCode::SUCCESS
        }
        Err((code, e)) => {
            eprintln!("podrun: FAIL: {e:#}");
            ExitCode::from(code)
        }
    }
}
