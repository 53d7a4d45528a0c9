#!/usr/bin/env bash
# Runs the whole jetmart system locally in the foreground: throwaway NATS (JetStream), Postgres
# (a database per service), Redis and an SMTP sink on random loopback ports, every service as its
# own process on localhost:50051.., and a demo order followed from PENDING to its end.
# First installs whatever is missing (scripts/bootstrap.sh says what). A service that exits is
# restarted with backoff; Ctrl-C stops it all (services first, then the servers).
# Extra arguments go to jetmart-stack (see `--help`).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/bootstrap.sh
echo "dev: building the services (cargo build --workspace --bins; the first build takes about 12 minutes on 2 cores)"
cargo build --workspace --bins --locked
exec target/debug/jetmart-stack "$@"
