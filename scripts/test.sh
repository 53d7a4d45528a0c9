#!/usr/bin/env bash
# Runs every jetmart test against throwaway NATS, Postgres, Redis and SMTP servers that the tests
# start themselves on random loopback ports. First installs whatever is missing
# (scripts/bootstrap.sh says what). Extra arguments go to `cargo test`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/bootstrap.sh
cargo test --workspace --locked "$@"
