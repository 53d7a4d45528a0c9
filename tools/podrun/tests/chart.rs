//! The real chart (kind values + the containers value set), rendered by helm and translated:
//! every pod must plan (every Secret/ConfigMap reference, probe port and Service port resolves),
//! and the plans must say what the chart means. Needs helm (scripts/bootstrap.sh --k8s): without
//! it the test says so and passes, unless PODRUN_REQUIRE_HELM=1 (the CI container step sets it).

use std::path::{Path, PathBuf};
use std::process::Command;

use jetmart_podrun::manifest::{Manifests, Phase};
use jetmart_podrun::plan::{PodPlan, ProbeAction};
use jetmart_podrun::run::plan_all;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn helm() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HELM") {
        return Some(h.into());
    }
    let local = repo().join(".tools/bin/helm");
    if local.is_file() {
        return Some(local);
    }
    Command::new("helm")
        .arg("version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "helm".into())
}

fn render() -> Option<Manifests> {
    let Some(helm) = helm() else {
        assert!(
            std::env::var("PODRUN_REQUIRE_HELM").as_deref() != Ok("1"),
            "helm is required here (PODRUN_REQUIRE_HELM=1): run scripts/bootstrap.sh --k8s"
        );
        eprintln!(
            "SKIPPED: helm not found (scripts/bootstrap.sh --k8s installs it); the chart is not translated"
        );
        return None;
    };
    let r = repo();
    let out = Command::new(helm)
        .args(["template", "jetmart"])
        .arg(r.join("deploy/helm/jetmart"))
        .args(["--namespace", "jetmart", "-f"])
        .arg(r.join("deploy/helm/jetmart/values-kind.yaml"))
        .arg("-f")
        .arg(r.join("deploy/helm/ci-values/containers.yaml"))
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(Manifests::parse(&String::from_utf8(out.stdout).unwrap(), "jetmart").unwrap())
}

fn pod<'a>(pods: &'a [PodPlan], name: &str) -> &'a PodPlan {
    pods.iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no pod {name}"))
}

fn env<'a>(p: &'a PodPlan, k: &str) -> Option<&'a str> {
    p.containers[0]
        .env
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

#[test]
fn every_pod_of_the_kind_rendering_translates() {
    let Some(m) = render() else { return };
    let plans = plan_all(&m).unwrap_or_else(|e| panic!("{e:#}"));
    let pods: Vec<PodPlan> = plans.into_iter().map(|(_, p)| p).collect();

    for svc in [
        "order",
        "inventory",
        "payment",
        "notification",
        "survey",
        "analytics",
    ] {
        let p = pod(&pods, &format!("jetmart-{svc}-podrun-0"));
        let c = &p.containers[0];
        assert_eq!(
            c.entrypoint.as_deref(),
            Some(format!("/usr/local/bin/jetmart-{svc}").as_str())
        );
        assert_eq!(c.args, ["serve"]);
        assert_eq!(c.user.as_deref(), Some("65532:65532"));
        assert!(
            c.read_only && c.no_new_privileges && c.cap_drop == ["ALL"],
            "{svc}: restricted securityContext"
        );
        assert!(c.memory.is_some() && c.cpus.is_some(), "{svc}: limits");
        assert_eq!(env(p, "NATS_USER"), Some(svc));
        assert!(
            env(p, "NATS_PASSWORD").is_some_and(|v| v.len() == 32),
            "{svc}: NATS password from its Secret"
        );
        assert_eq!(env(p, "NATS_URL"), Some("nats://jetmart-nats:4222"));
        assert!(
            p.aliases
                .contains(&format!("jetmart-{svc}.jetmart.svc.cluster.local"))
        );
        assert_eq!(
            c.readiness.as_ref().map(|r| &r.action),
            Some(&ProbeAction::Http {
                path: "/readyz".into(),
                port: 8080
            })
        );
        assert_eq!(
            c.startup.as_ref().map(|r| &r.action),
            Some(&ProbeAction::Grpc {
                port: 50051,
                service: String::new()
            })
        );
        if svc != "analytics" {
            assert_eq!(p.init[0].args, ["migrate"], "{svc}: migrations first");
            assert!(
                p.init[0]
                    .env
                    .iter()
                    .any(|(k, v)| k == "DATABASE_URL" && v.contains("@jetmart-postgres:5432/"))
            );
        }
    }
    let inventory = pod(&pods, "jetmart-inventory-podrun-0");
    assert_eq!(
        inventory.init[1].args,
        ["seed-demo"],
        "values-kind seeds the demo catalog after the migrations"
    );
    let nats = pod(&pods, "jetmart-nats-1");
    assert_eq!(env(nats, "POD_NAME"), Some("jetmart-nats-1"));
    assert!(
        nats.aliases
            .contains(&"jetmart-nats-1.jetmart-nats-headless.jetmart.svc.cluster.local".to_owned())
    );
    let redis = pod(&pods, "jetmart-redis-podrun-0");
    let pw = env(redis, "REDIS_PASSWORD").unwrap().to_owned();
    assert!(
        redis.containers[0].args.contains(&pw),
        "$(REDIS_PASSWORD) in args is expanded"
    );

    let tests = m.phase(Phase::Test);
    assert_eq!(tests.len(), 1, "one helm test pod");
    let smoke = pod(&pods, &tests[0].name);
    assert!(
        smoke.containers[0]
            .args
            .iter()
            .any(|a| a == "http://jetmart-order:50051")
    );
}
