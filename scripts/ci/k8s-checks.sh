#!/usr/bin/env bash
# Static checks of the Kubernetes delivery (no Docker engine, no API server needed):
#   Dockerfile      hadolint; checkov; Dockerfile RUST_VERSION == rust-toolchain.toml channel
#   scripts         shellcheck on every shell script under scripts/ and k8s/
#   Helm chart      helm lint --strict and helm template for every CI value set; the values schema
#                   must reject a misspelt key
#   manifests       kubernetes-validate (strict) for Kubernetes 1.30 and 1.35, minimal schemas for
#                   the CRDs (KEDA, prometheus-operator) and the kind config, chart invariants
#                   (restricted PSS, grace period vs SHUTDOWN_DEADLINE_SECS, references, ...)
#   checkov         on every rendering, with the documented skips only (scripts/ci/k8s/checkov-skips.yaml)
#   NATS            the rendered authorization config: `nats-server -t`, then a real nats-server
#                   2.15 with it, probing every service user's allowed and denied flows; the
#                   in-chart cluster config (nats.conf + auth.conf) parsed by `nats-server -t`
#   Postgres        the in-chart init script run twice on a local Postgres; every generated
#                   DATABASE_URL logs in to its own database only (skipped, with the reason printed,
#                   where no Postgres server binaries are installed)
#   Tiltfile        evaluated with starlark-pyo3 against recording stubs of Tilt's builtins
#
# Tools come from .tools (scripts/bootstrap.sh --k8s installs them; run here when missing).
# Usage: scripts/ci/k8s-checks.sh [--keep DIR]   (--keep: write the renderings to DIR and keep them)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
here="$root/scripts/ci/k8s"
chart_dir="$root/deploy/helm"
chart="$chart_dir/jetmart"

keep=""
while (($#)); do
  case "$1" in
    --keep) keep="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "k8s-checks: unknown argument $1" >&2; exit 64 ;;
  esac
done

# ------------------------------------------------------------------------------------------ tools
bin="$root/.tools/bin"
vbin="$root/.tools/venv/bin"
HELM="$bin/helm"
PY="$vbin/python"
need=("$HELM" "$PY" "$vbin/checkov" "$vbin/hadolint" "$vbin/shellcheck" "$vbin/kubernetes-validate" "$vbin/nats-server")
missing_tools() {
  local t
  for t in "${need[@]}"; do [[ -x "$t" ]] || echo "$t"; done
  [[ -x "$PY" ]] && "$PY" -c 'import starlark, kubernetes_validate, jsonschema, yaml' 2>/dev/null || echo "python modules starlark/kubernetes_validate/jsonschema/yaml"
}
if [[ -n "$(missing_tools)" ]]; then
  if [[ -x "$root/scripts/bootstrap.sh" ]]; then
    echo "k8s-checks: installing the checkers: scripts/bootstrap.sh --k8s"
    "$root/scripts/bootstrap.sh" --k8s
  fi
  if [[ -n "$(missing_tools)" ]]; then
    echo "k8s-checks: missing tools (run scripts/bootstrap.sh --k8s):" >&2
    missing_tools | sed 's/^/  /' >&2
    exit 1
  fi
fi

if [[ -n "$keep" ]]; then
  mkdir -p "$keep"
  work=$(cd "$keep" && pwd)
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/render"

# ------------------------------------------------------------------------------------ value sets
# name -> values files (relative to deploy/helm), layered left to right.
set_names=(defaults ha addons external kind tilt)
declare -A set_files=(
  [defaults]="ci-values/defaults.yaml"
  [ha]="ci-values/ha.yaml"
  [addons]="ci-values/addons.yaml"
  [external]="ci-values/external.yaml"
  [kind]="jetmart/values-kind.yaml ci-values/kind.yaml"
  [tilt]="jetmart/values-kind.yaml"
)
values_args() {
  local f
  for f in ${set_files[$1]}; do printf -- '-f\n%s\n' "$chart_dir/$f"; done
}

# ----------------------------------------------------------------------------------------- steps
results=()
passed=0
failed=0
skipped=0
step() { # name, command... (exit status 2 = skipped, the command printed why)
  local name="$1" rc=0; shift
  printf '\n== %s\n' "$name"
  "$@" || rc=$?
  case "$rc" in
    0) results+=("PASS  $name"); passed=$((passed + 1)) ;;
    2) results+=("SKIP  $name"); skipped=$((skipped + 1)) ;;
    *) results+=("FAIL  $name"); failed=$((failed + 1)) ;;
  esac
}

check_toolchain_pin() {
  local dockerfile toolchain
  dockerfile=$(sed -n 's/^ARG RUST_VERSION=//p' Dockerfile | head -n 1)
  toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
  echo "  Dockerfile RUST_VERSION=$dockerfile, rust-toolchain.toml channel=$toolchain"
  [[ -n "$dockerfile" && "$dockerfile" == "$toolchain" ]]
}

run_hadolint() {
  "$vbin/hadolint" --failure-threshold info Dockerfile && echo "  Dockerfile: no findings"
}

run_checkov_dockerfile() {
  "$PY" "$here/checkov_run.py" --checkov "$vbin/checkov" --skips "$here/checkov-skips.yaml" \
    --framework dockerfile --print-reasons Dockerfile
}

run_shellcheck() {
  local files=() f first
  while IFS= read -r -d '' f; do
    first=$(head -n 1 "$f")
    if [[ "$f" == *.sh || "$first" =~ ^#!.*(ba)?sh ]]; then files+=("$f"); fi
  done < <(find scripts k8s -type f \( -name '*.sh' -o -perm -u+x \) -print0 | sort -z)
  echo "  ${#files[@]} scripts: ${files[*]}"
  "$vbin/shellcheck" --external-sources "${files[@]}"
}

run_helm_lint() {
  local s rc=0 args
  for s in "${set_names[@]}"; do
    mapfile -t args < <(values_args "$s")
    if "$HELM" lint --strict "$chart" --namespace jetmart "${args[@]}" >"$work/lint-$s.log" 2>&1; then
      echo "  $s: ok"
    else
      echo "  $s: FAILED"; sed 's/^/    /' "$work/lint-$s.log"; rc=1
    fi
  done
  return "$rc"
}

run_helm_template() {
  local s rc=0 args
  for s in "${set_names[@]}"; do
    mapfile -t args < <(values_args "$s")
    if "$HELM" template jetmart "$chart" --namespace jetmart "${args[@]}" >"$work/render/$s.yaml" 2>"$work/template-$s.log"; then
      echo "  $s: $(grep -c '^kind: ' "$work/render/$s.yaml") objects (${set_files[$s]})"
    else
      echo "  $s: FAILED"; sed 's/^/    /' "$work/template-$s.log"; rc=1
    fi
  done
  # The schema must stay strict: a misspelt service or setting has to fail the render.
  if "$HELM" template jetmart "$chart" --set services.odrer.replicas=1 >/dev/null 2>&1 \
    || "$HELM" template jetmart "$chart" --set serviceDefaults.autoscaling.enabeld=false >/dev/null 2>&1; then
    echo "  values.schema.json accepted a misspelt key"; rc=1
  else
    echo "  values.schema.json rejects misspelt keys: ok"
  fi
  return "$rc"
}

run_validate() {
  "$PY" "$here/validate_manifests.py" --k8s-version 1.30.0 --k8s-version 1.35.0 \
    --crd-schemas "$here/crd-schemas" \
    --extra "$here/crd-schemas/kind-cluster.json:k8s/kind-config.yaml" \
    k8s/namespace.yaml "$work"/render/*.yaml
}

run_checkov_manifests() {
  "$PY" "$here/checkov_run.py" --checkov "$vbin/checkov" --skips "$here/checkov-skips.yaml" \
    --framework kubernetes --print-reasons "$work"/render/*.yaml
}

# Note: these functions run as `if` conditions, where bash ignores `set -e`: every failure is
# turned into the return status explicitly.
run_nats() {
  local auth="$work/nats/auth.conf" vars=() envs=() v rc=0
  mkdir -p "$work/nats/cluster"
  # 1. The standalone authorization config (what tests get from render-nats-auth.sh).
  "$here/render-nats-auth.sh" -o "$auth" >"$work/nats/vars" || return 1
  mapfile -t vars <"$work/nats/vars"
  ((${#vars[@]} > 0)) || { echo "  no users rendered"; return 1; }
  for v in "${vars[@]}"; do envs+=("$v=check-only-$RANDOM"); done
  echo "  auth.conf: ${#vars[@]} users (${vars[*]})"
  env "${envs[@]}" "$vbin/nats-server" -c "$auth" -t 2>&1 | sed 's/^/  /' || rc=1
  # 2. Real server, real protocol: allowed and denied flows of every service user.
  "$PY" "$here/nats_auth_probe.py" --nats-server "$vbin/nats-server" --auth-conf "$auth" \
    --values "$chart/values.yaml" 2>&1 | sed 's/^/  /' || rc=1
  # 3. The in-chart cluster config (kind rendering): nats.conf including ./auth.conf.
  "$PY" - "$work/render/kind.yaml" "$work/nats/cluster" <<'EOF_PY' || rc=1
import sys, yaml
found = set()
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "ConfigMap":
        for key in ("nats.conf", "auth.conf"):
            if key in d.get("data", {}):
                open(f"{sys.argv[2]}/{key}", "w").write(d["data"][key])
                found.add(key)
sys.exit(0 if found == {"nats.conf", "auth.conf"} else f"  missing in the kind rendering: {sorted({'nats.conf', 'auth.conf'} - found)}")
EOF_PY
  env "${envs[@]}" POD_NAME=jetmart-nats-0 "$vbin/nats-server" -c "$work/nats/cluster/nats.conf" -t 2>&1 \
    | sed 's/^/  cluster /' || rc=1
  return "$rc"
}

run_pg_init() {
  "$here/pg-init-check.sh" "$work/render/tilt.yaml"
}

run_tiltfile() {
  "$PY" "$here/tiltfile_check.py" --tiltfile Tiltfile --helm "$HELM"
}

echo "k8s-checks: helm $("$HELM" version --short), $("$vbin/nats-server" --version), checkov $("$vbin/checkov" --version)"
step "toolchain pin: Dockerfile vs rust-toolchain.toml" check_toolchain_pin
step "hadolint Dockerfile" run_hadolint
step "checkov Dockerfile" run_checkov_dockerfile
step "shellcheck scripts/ and k8s/" run_shellcheck
step "helm lint --strict (${set_names[*]})" run_helm_lint
step "helm template (${set_names[*]})" run_helm_template
step "kubernetes-validate 1.30 + 1.35 strict, CRD schemas, chart invariants" run_validate
step "checkov rendered manifests" run_checkov_manifests
step "NATS authorization: nats-server -t and permission probe" run_nats
step "Postgres init script vs generated DATABASE_URLs (local Postgres)" run_pg_init
step "Tiltfile (starlark-pyo3 with Tilt stubs)" run_tiltfile

printf '\n== summary\n'
printf '  %s\n' "${results[@]}"
[[ -n "$keep" ]] && echo "  renderings kept in $work/render"
echo "k8s-checks: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
