#!/usr/bin/env bash
# The chart, really run: offline base and stand-in images (offline-bases.sh), the jetmart image
# from the release binaries (build.sh), then every pod of the kind rendering as Docker containers
# with exactly the manifests' command, args, env, volumes, securityContext, limits and probes, on
# one network where every Service name resolves, and finally the `helm test` pod (jetmart-podrun,
# tools/podrun). Any value the chart gets wrong fails this script.
#
#   scripts/images/chart-run.sh [--no-build] [--debug] [-- jetmart-podrun args...]
#     --no-build   reuse the images as they are
#     --debug      the image from the debug binaries (what .ci/run uses: its chaos step has
#                  already built them; a release build of the workspace adds ~20 min on 2 cores)
#
# Needs Docker (no registry access), root for debootstrap on the first run, and the k8s tools
# (scripts/bootstrap.sh --k8s: helm). Prints the time of each stage.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
build=1
build_args=()
podrun_args=()
while (($#)); do
  case "$1" in
    --no-build) build=0; shift ;;
    --debug) build_args+=(--debug); shift ;;
    --) shift; podrun_args=("$@"); break ;;
    -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "chart-run: unknown argument $1" >&2; exit 64 ;;
  esac
done
stage() { printf '\n== chart-run: %s (%ss)\n' "$1" "$SECONDS"; }

helm="$root/.tools/bin/helm"
[[ -x "$helm" ]] || { echo "chart-run: $helm missing: run scripts/bootstrap.sh --k8s" >&2; exit 1; }

if ((build)); then
  stage "offline base and stand-in images"
  scripts/images/offline-bases.sh
  stage "jetmart image from the ${build_args[*]:+debug }binaries"
  scripts/images/build.sh "${build_args[@]}"
fi

stage "jetmart-podrun"
cargo build -p jetmart-podrun --locked
# The tool's own tests, with the real chart rendering (helm is here, so they must not skip).
PODRUN_REQUIRE_HELM=1 HELM="$helm" cargo test -p jetmart-podrun --locked

stage "the kind rendering as containers, then helm test"
HELM="$helm" target/debug/jetmart-podrun --chart deploy/helm/jetmart \
  -f deploy/helm/jetmart/values-kind.yaml -f deploy/helm/ci-values/containers.yaml \
  --release jetmart --namespace jetmart "${podrun_args[@]}"
stage "done"
