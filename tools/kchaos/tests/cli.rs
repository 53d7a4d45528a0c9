//! The binary refuses bad input with exit code 64 before it touches anything: KUBECONFIG points
//! at a file that does not exist, so reaching the cluster step would end with exit 2 instead.

use std::process::{Command, Output};

const GOOD: &[&str] = &[
    "--namespace",
    "jetmart",
    "--release",
    "jetmart",
    "--order-url",
    "http://127.0.0.1:1",
    "--order-db",
    "postgres://jetmart_order:pw@127.0.0.1:1/jetmart_order",
    "--inventory-db",
    "postgres://jetmart_inventory:pw@127.0.0.1:1/jetmart_inventory",
    "--payment-db",
    "postgres://jetmart_payment:pw@127.0.0.1:1/jetmart_payment",
    "--nats-url",
    "nats://admin:pw@127.0.0.1:1",
];

fn kchaos(args: &[&str]) -> Output {
    let scratch = std::env::temp_dir().join(format!("kchaos-cli-{}", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_jetmart-kchaos"))
        .args(args)
        .env("KUBECONFIG", scratch.join("no-such-kubeconfig"))
        .env("HOME", &scratch)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("ORDER_DATABASE_URL")
        .env_remove("INVENTORY_DATABASE_URL")
        .env_remove("PAYMENT_DATABASE_URL")
        .env_remove("NATS_URL")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("running jetmart-kchaos")
}

/// GOOD with `flag value` replaced or added.
fn with(flag: &str, value: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut it = GOOD.iter();
    let mut replaced = false;
    while let Some(a) = it.next() {
        out.push(a.to_string());
        if *a == flag {
            it.next();
            out.push(value.to_owned());
            replaced = true;
        }
    }
    if !replaced {
        out.push(flag.to_owned());
        out.push(value.to_owned());
    }
    out
}

fn without(flag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = GOOD.iter();
    while let Some(a) = it.next() {
        if *a == flag {
            it.next();
        } else {
            out.push(a.to_string());
        }
    }
    out
}

fn assert_usage_error(args: Vec<String>, mentions: &str) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kchaos(&refs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
    assert!(
        stderr.contains(mentions),
        "{args:?}: stderr does not mention {mentions:?}: {stderr}"
    );
    assert!(out.stdout.is_empty(), "{args:?} printed a result");
}

#[test]
fn bad_input_exits_64_before_anything_starts() {
    assert_usage_error(with("--duration", "-5s"), "negative");
    assert_usage_error(with("--duration", "0s"), "zero");
    assert_usage_error(with("--kill-every", "0"), "zero");
    assert_usage_error(with("--kill-every", "-1s"), "negative");
    assert_usage_error(with("--ready-timeout", "soon"), "not a duration");
    assert_usage_error(with("--targets", "order,ordr"), "unknown target");
    assert_usage_error(with("--targets", "nats"), "--nats-kills");
    assert_usage_error(without("--order-url"), "--order-url");
    assert_usage_error(with("--order-url", "localhost:50051"), "--order-url");
    assert_usage_error(without("--nats-url"), "--nats-url");
    assert_usage_error(with("--order-db", "mysql://x"), "--order-db");
    assert_usage_error(with("--rate", "-3"), "--rate");
    // 20 s at 5 s: 3 kill slots for 6 services and 1 NATS kill.
    assert_usage_error(with("--duration", "20s"), "room for 3 kills");
}

#[test]
fn good_input_gets_past_validation_to_the_cluster() {
    // No kubeconfig and no in-cluster environment: the run fails at the cluster step (2).
    let out = kchaos(
        &with("--duration", "60s")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("kubeconfig"), "{stderr}");
}

#[test]
fn help_documents_the_port_forward_flags() {
    let out = kchaos(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--order-url",
        "--order-db",
        "--inventory-db",
        "--payment-db",
        "--nats-url",
        "--duration",
        "--kill-every",
        "--seed",
        "--nats-kills",
        "--targets",
        "port-forward",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}
