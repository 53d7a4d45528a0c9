#!/usr/bin/env bash
# Lints the protobuf contracts (buf.yaml: STANDARD + comment rules) and checks them for breaking
# changes (FILE rules) against the committed baseline image buf-baseline.binpb. Exits non-zero on
# any finding. Works offline: buf.yaml has no remote deps.
#
# Refreshing the baseline: only when a release freezes the contracts (never to silence a breaking
# finding during development; field numbers are forever, changes must be additive):
#   cd <repo> && .tools/venv/bin/buf build -o buf-baseline.binpb
# and commit buf-baseline.binpb together with the release. It lives outside the module path
# (proto/) so buf never reads it as a source.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

if [[ -x "$repo/.tools/venv/bin/buf" ]]; then
  buf="$repo/.tools/venv/bin/buf"
elif command -v buf >/dev/null 2>&1 && buf --version >/dev/null 2>&1; then
  buf="$(command -v buf)"
else
  echo "buf.sh: buf not found (looked for .tools/venv/bin/buf and PATH); run scripts/bootstrap.sh" >&2
  exit 127
fi

baseline="buf-baseline.binpb"
if [[ ! -f "$baseline" ]]; then
  echo "buf.sh: missing $repo/$baseline; see the comment at the top of this script" >&2
  exit 1
fi

version="$("$buf" --version)"
echo "buf.sh: buf ${version}: lint"
"$buf" lint
echo "buf.sh: breaking --against $baseline"
"$buf" breaking --against "$baseline"
echo "buf.sh: ok"
