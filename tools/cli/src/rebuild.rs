//! `rebuild order` and `rebuild analytics`: the services' own rebuilds, with progress.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use indicatif::{MultiProgress, ProgressBar};
use jetmart_analytics::rebuild::{Phase, Progress, RebuildOptions};

use crate::out;

/// `rebuild order`: runs the order service's own `jetmart-order rebuild-projection` against
/// `database_url` (the binary beside this one, as in the image, else on PATH) and passes its
/// output through.
pub async fn order(database_url: &str) -> anyhow::Result<()> {
    let binary = sibling_binary("jetmart-order");
    let spinner = out::spinner("rebuilding the order read model from the order event store");
    let started = Instant::now();
    let run = tokio::process::Command::new(&binary)
        .arg("rebuild-projection")
        .env("DATABASE_URL", database_url)
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await;
    spinner.finish_and_clear();
    let output = run.with_context(|| format!("running {}", binary.display()))?;
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        print!("{}", String::from_utf8_lossy(&output.stdout));
        anyhow::bail!(
            "{} rebuild-projection failed ({})",
            binary.display(),
            output.status
        );
    }
    let report = String::from_utf8_lossy(&output.stdout);
    println!(
        "{} in {:.1}s",
        report.trim_end(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `name` beside the running executable when it is there (one image holds every binary; cargo
/// builds them into one directory), else `name` for a PATH lookup.
fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// `rebuild analytics`
pub async fn analytics(
    js: &jetstream::Context,
    redis_url: &str,
    marker_ttl: Duration,
) -> anyhow::Result<()> {
    let redis = jetmart_analytics::app::connect_redis(redis_url).context("--redis-url")?;
    let options = RebuildOptions {
        marker_ttl,
        ..Default::default()
    };
    let multi = MultiProgress::new();
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let started = Instant::now();
    let result = jetmart_analytics::rebuild::rebuild(js, &redis, &options, |p| match p {
        Progress::Started {
            previous,
            generation,
            targets,
        } => {
            let total: u64 = targets.iter().map(|(_, n)| n).sum();
            let _ = multi.println(format!(
                "rebuilding generation {generation} beside {previous}: up to {total} messages"
            ));
            for (stream, last) in targets {
                let bar = multi.add(out::bar(*last, &format!("{stream:<12}")));
                bars.insert(stream.clone(), bar);
            }
        }
        Progress::Replaying {
            stream,
            phase,
            sequence,
            last,
        } => {
            if let Some(bar) = bars.get(stream) {
                bar.set_length(*last);
                bar.set_position(*sequence);
                bar.set_message(match phase {
                    Phase::Replay => "replay",
                    Phase::CatchUp => "catching up",
                    Phase::AfterSwap => "after swap",
                });
            }
        }
        Progress::Swapped {
            previous,
            generation,
        } => {
            let _ = multi.println(format!(
                "swapped: generation {generation} is live (was {previous})"
            ));
        }
        Progress::Deleted { keys } => {
            let _ = multi.println(format!("deleted {keys} keys of old generations"));
        }
    })
    .await;
    for bar in bars.values() {
        bar.finish_and_clear();
    }
    let report = result.context("rebuilding the analytics read model")?;
    println!(
        "analytics read model rebuilt: generation {} ({} events replayed, {} caught up, {} skipped, {} old keys deleted) in {:.1}s",
        report.generation,
        report.replayed.applied,
        report.caught_up.applied,
        report.replayed.skipped + report.caught_up.skipped,
        report.deleted_keys,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
