#!/usr/bin/env bash
# Proves the breaking-change gate works: on a scratch copy of proto/ it applies changes that break
# the wire or generated code of a published event (OrderPlaced) and asserts `buf breaking` rejects
# each, then applies additive changes and asserts it accepts them. The baseline here is an image of
# the current tree, so this tests buf.yaml's rules, independently of buf-baseline.binpb.
# Touches nothing in the repo; the scratch dir is removed on exit.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

if [[ -x "$repo/.tools/venv/bin/buf" ]]; then
  buf="$repo/.tools/venv/bin/buf"
elif command -v buf >/dev/null 2>&1 && buf --version >/dev/null 2>&1; then
  buf="$(command -v buf)"
else
  echo "buf-breaking-selftest.sh: buf not found (looked for .tools/venv/bin/buf and PATH); run scripts/bootstrap.sh" >&2
  exit 127
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/jetmart-buf-selftest.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

mkdir "$scratch/pristine"
cp -R "$repo/proto" "$repo/buf.yaml" "$scratch/pristine/"
(cd "$scratch/pristine" && "$buf" build -o "$scratch/baseline.binpb")

events="proto/jetmart/order/v1/events.proto"
failures=0

# check NAME reject|accept SED_SCRIPT [FILE]: applies SED_SCRIPT to FILE (default: order events)
# in a fresh copy of the tree and asserts buf breaking's verdict.
check() {
  local name="$1" want="$2" script="$3" file="${4:-$events}"
  local work="$scratch/work" out rc
  rm -rf "$work"
  cp -R "$scratch/pristine" "$work"
  sed -i -e "$script" "$work/$file"
  if cmp -s "$scratch/pristine/$file" "$work/$file"; then
    echo "FAIL $name: the scratch change did not apply (proto changed?)" >&2
    failures=$((failures + 1))
    return
  fi
  # A rejection only counts if the changed tree still compiles: a syntax error is not a finding.
  if ! out="$(cd "$work" && "$buf" build -o /dev/null 2>&1)"; then
    echo "FAIL $name: the scratch change does not compile: $out" >&2
    failures=$((failures + 1))
    return
  fi
  rc=0
  out="$(cd "$work" && "$buf" breaking --against "$scratch/baseline.binpb" 2>&1)" || rc=$?
  if [[ "$want" == reject && "$rc" -ne 0 && -n "$out" ]]; then
    echo "ok   $name: rejected: ${out%%$'\n'*}"
  elif [[ "$want" == accept && "$rc" -eq 0 ]]; then
    echo "ok   $name: accepted"
  else
    echo "FAIL $name: wanted $want, buf breaking exited $rc: $out" >&2
    failures=$((failures + 1))
  fi
}

# Edits are confined to `message OrderPlaced { ... }` by a sed address range.
in_placed='/^message OrderPlaced {/,/^}/'

check "renumber OrderPlaced.payment_token" reject \
  "${in_placed}s/string payment_token = 6;/string payment_token = 16;/"
check "delete OrderPlaced.customer_email" reject \
  "${in_placed}{/string customer_email = 3;/d}"
check "retype OrderPlaced.total" reject \
  "${in_placed}s/jetmart.common.v1.Money total = 5;/int64 total = 5;/"
check "rename OrderPlaced (its ce-type)" reject \
  "s/^message OrderPlaced {/message OrderCreated {/"
check "rename an enum value of CancelReason" reject \
  "s/CANCEL_REASON_CUSTOMER = 3;/CANCEL_REASON_BY_CUSTOMER = 3;/" \
  "proto/jetmart/order/v1/order.proto"
check "add a field to OrderPlaced" accept \
  "${in_placed}s|^}|  // Scratch additive field.\n  string coupon_code = 8;\n}|"
check "add a new event message" accept \
  "\$a\\
\\
// Scratch additive message.\\
message OrderShipped {\\
  // The order.\\
  string order_id = 1;\\
}"

if [[ "$failures" -ne 0 ]]; then
  echo "buf-breaking-selftest.sh: $failures check(s) failed" >&2
  exit 1
fi
echo "buf-breaking-selftest.sh: ok"
