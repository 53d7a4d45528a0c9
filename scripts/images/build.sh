#!/usr/bin/env bash
# Builds the jetmart image with no registry and no network inside the build: the host's release
# binaries (cargo build --release --workspace --bins --locked; a no-op when target/release is
# fresh), stripped into .docker/bin, copied by the Dockerfile onto the offline bases made by
# scripts/images/offline-bases.sh (legacy builder: BuildKit is not needed).
#
# Checks before the build that every shared library the binaries need (ldd) is in the runtime
# base, and after it that every binary starts in the image as the chart runs it (uid 65532,
# read-only root filesystem, all capabilities dropped). Prints the image size and build time.
#
# Usage: scripts/images/build.sh [--tag jetmart:dev] [--no-cargo] [--debug]
#   --no-cargo   use the binaries in target/ as they are (fails when one is missing)
#   --debug      the debug binaries (cargo build --workspace --bins --locked): a faster loop,
#                not what CI ships
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
tag=jetmart:dev
cargo_build=1
profile=release
while (($#)); do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --no-cargo) cargo_build=0; shift ;;
    --debug) profile=debug; shift ;;
    -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build-image: unknown argument $1" >&2; exit 64 ;;
  esac
done
say() { echo "build-image: $*"; }
die() { echo "build-image: error: $*" >&2; exit 1; }

build_image=jetmart-offline/build:bookworm
runtime_image=jetmart-offline/runtime:bookworm
for i in "$build_image" "$runtime_image"; do
  docker image inspect "$i" >/dev/null 2>&1 || die "$i missing: run scripts/images/offline-bases.sh"
done

# The binary list of the Dockerfile's RUN (one source: the Dockerfile).
mapfile -t bins < <(sed -n '/bins="/,/";/p' Dockerfile | tr -d '\\";' | sed 's/bins=//' | tr ' ' '\n' | grep -E '^jetmart' | sort -u)
((${#bins[@]} > 0)) || die "no binary list found in the Dockerfile"

cargo_args=(build --workspace --bins --locked)
[[ "$profile" == release ]] && cargo_args+=(--release)
if ((cargo_build)); then
  say "cargo ${cargo_args[*]}"
  t0=$SECONDS
  cargo "${cargo_args[@]}"
  say "$profile build: $((SECONDS - t0))s"
fi

out=.docker/bin
rm -rf "$out"
mkdir -p "$out"
for b in "${bins[@]}"; do
  [[ -x "target/$profile/$b" ]] || die "target/$profile/$b missing (cargo ${cargo_args[*]})"
  strip -o "$out/$b" "target/$profile/$b"
done
say "${#bins[@]} $profile binaries stripped into $out: $(du -sh "$out" | cut -f1)"

# Every library ldd resolves must be in the runtime base (distroless-like, no shell).
files=$(mktemp)
trap 'rm -f "$files"; [[ -n "${probe:-}" ]] && docker rm -f "$probe" >/dev/null 2>&1 || true' EXIT
probe=$(docker create "$runtime_image" /none)
docker export "$probe" | tar -t | sed 's#^\./##; s#^#/#' >"$files"
missing=0
for b in "${bins[@]}"; do
  while read -r lib; do
    # Debian 12 has merged /usr: /lib/x86_64-linux-gnu/x = /usr/lib/x86_64-linux-gnu/x.
    if ! grep -qxF -e "$lib" -e "/usr$lib" -e "${lib#/usr}" "$files"; then
      echo "  $b needs $lib, which $runtime_image lacks" >&2
      missing=1
    fi
  done < <(ldd "$out/$b" | grep -oE '/[^ ]+' | sort -u)
done
((missing == 0)) || die "the runtime base lacks libraries the binaries need"
say "ldd: every library of the ${#bins[@]} binaries is in $runtime_image"

say "docker build -t $tag (legacy builder, BINARIES=$out)"
t0=$(date +%s%N)
DOCKER_BUILDKIT=0 docker build -q --pull=false -t "$tag" \
  --build-arg BUILD_IMAGE="$build_image" --build-arg RUNTIME_IMAGE="$runtime_image" \
  --build-arg BINARIES="$out" . >/dev/null
ms=$((($(date +%s%N) - t0) / 1000000))
size=$(docker image inspect --format '{{.Size}}' "$tag")
say "built $tag in $((ms / 1000)).$((ms % 1000 / 100))s, size $((size / 1000000)) MB ($size bytes)"

# Every binary starts in the image exactly as the chart's securityContext runs it.
for b in "${bins[@]}"; do
  if ! v=$(docker run --rm --read-only --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges \
    --network none --entrypoint "/usr/local/bin/$b" "$tag" --version 2>&1); then
    die "$b does not start in $tag: $v"
  fi
done
docker run --rm --read-only --network none "$tag" >/dev/null || die "the image's default command (jetmartctl --help) fails"
if docker run --rm --network none --entrypoint /bin/sh "$tag" -c true >/dev/null 2>&1; then
  die "$tag has a shell; the runtime must not"
fi
say "every binary runs --version in $tag as uid 65532 with a read-only root filesystem; no shell"
