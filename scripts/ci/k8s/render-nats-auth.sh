#!/usr/bin/env bash
# Render the nats-server authorization config of the jetmart chart to a file, for tests that run
# a real nats-server (2.15) with the same per-service permissions as the cluster.
#
# Usage: scripts/ci/k8s/render-nats-auth.sh [-f values.yaml]... [-o auth.conf]
#   -f FILE   extra values file(s) for `helm template` (default: the chart's values.yaml only)
#   -o FILE   output path (default: stdout)
# Prints nothing else on stdout when -o is given except the names of the environment variables
# that must hold the users' passwords when nats-server starts, one per line, e.g.
#   NATS_PASSWORD_ORDER
# (the config references them as $NATS_PASSWORD_ORDER; nats-server refuses to start without them).
#
# The file is a complete nats-server config (only the authorization block), so a test can run:
#   NATS_PASSWORD_ORDER=... NATS_PASSWORD_PAYMENT=... ... \
#     nats-server -c auth.conf -a 127.0.0.1 -p <port> -js -sd <tmpdir>
# and then check e.g. that user "payment" cannot publish order.confirmed.x.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
chart="$root/deploy/helm/jetmart"
helm="${HELM:-$root/.tools/bin/helm}"
python="${PYTHON:-$root/.tools/venv/bin/python}"

if [[ ! -x "$helm" ]]; then
  echo "render-nats-auth: $helm not found; run scripts/bootstrap.sh --k8s (or set HELM)" >&2
  exit 1
fi
if [[ ! -x "$python" ]]; then
  python=$(command -v python3)
fi

values=()
out=""
while (($#)); do
  case "$1" in
    -f) values+=(-f "$2"); shift 2 ;;
    -o) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "render-nats-auth: unknown argument $1" >&2; exit 64 ;;
  esac
done

rendered=$("$helm" template jetmart "$chart" --namespace jetmart "${values[@]}" \
  --show-only templates/nats-auth.yaml)

# Pull data["auth.conf"] out of the ConfigMap (PyYAML ships with the k8s checkers in the venv;
# fall back to a plain-text cut of the block scalar when it is missing).
conf=$(printf '%s\n' "$rendered" | "$python" -c '
import sys
text = sys.stdin.read()
try:
    import yaml
except ImportError:
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "auth.conf: |")
    print("\n".join(l[4:] for l in lines[start + 1:]))
else:
    print(yaml.safe_load(text)["data"]["auth.conf"], end="")
')

if [[ -n "$out" ]]; then
  mkdir -p "$(dirname "$out")"
  printf '%s\n' "$conf" >"$out"
  # The password variables the config needs, for the caller to set.
  printf '%s\n' "$conf" | grep -oE 'password: \$[A-Z0-9_]+' | sed 's/password: \$//'
else
  printf '%s\n' "$conf"
fi
