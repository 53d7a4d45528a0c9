#!/usr/bin/env bash
# Makes every image the container run needs without a registry: a Debian 12 root filesystem from
# `debootstrap` (Debian packages only), turned into images with `docker import` and the legacy
# builder. Nothing is pulled.
#
#   jetmart-offline/build:bookworm     minbase (shell, coreutils): the Dockerfile's BUILD_IMAGE when
#                                      it copies host-built binaries (BINARIES=.docker/bin)
#   jetmart-offline/runtime:bookworm   distroless/cc-like: glibc, libgcc, libstdc++, libssl3, CA
#                                      certificates, tzdata, /etc/passwd with nonroot 65532, no shell,
#                                      no package manager; the Dockerfile's RUNTIME_IMAGE
#   stand-ins for the chart's upstream infra images (deploy/helm/ci-values/containers.yaml):
#   jetmart-standin/nats:2.15          nats-server 2.15 from .tools/venv      (for nats:2.15-alpine)
#   jetmart-standin/postgres:15        Debian's Postgres 15, entrypoint with the official image's
#                                      POSTGRES_* / PGDATA / initdb.d contract (for postgres:17)
#   jetmart-standin/redis:7            Debian's redis-server 7.0              (for redis:7.4-alpine)
#   jetmart-standin/mailpit:sink       aiosmtpd SMTP sink on 1025 + a small Mailpit-style API on 8025
#                                      (for axllent/mailpit:v1.20)
#
# The debootstrap trees and the downloaded .debs are cached under .local/images (gitignored): a
# second run only re-imports what changed (each image carries a stamp label of its inputs).
# Usage: scripts/images/offline-bases.sh [--refresh]   (--refresh: debootstrap again)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/scripts/images"
cache="$root/.local/images"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
refresh=0
case "${1:-}" in
  --refresh) refresh=1 ;;
  "") ;;
  -h | --help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) echo "offline-bases: unknown argument $1" >&2; exit 64 ;;
esac

say() { echo "offline-bases: $*"; }
die() { echo "offline-bases: error: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info)"
nats_bin="$root/.tools/venv/bin/nats-server"
[[ -x "$nats_bin" ]] || die "$nats_bin missing: run scripts/bootstrap.sh"

# Legacy builder: no BuildKit (buildx) needed, and nothing below pulls.
export DOCKER_BUILDKIT=0

# ---------------------------------------------------------------------------------- debootstrap
# rootfs NAME PACKAGES: a cached debootstrap tree under .local/images/rootfs-NAME.
rootfs() {
  local name="$1" include="$2" dir="$cache/rootfs-$1" stamp
  stamp="$suite minbase $include"
  if ((refresh == 0)) && [[ -f "$dir/.jetmart-stamp" && "$(cat "$dir/.jetmart-stamp")" == "$stamp" ]]; then
    say "rootfs $name: cached ($dir)"
    return
  fi
  [[ $EUID -eq 0 ]] || die "debootstrap needs root"
  if ! command -v debootstrap >/dev/null; then
    say "apt-get install debootstrap (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  say "rootfs $name: debootstrap --variant=minbase --include=$include $suite (a few minutes once)"
  rm -rf "$dir"
  mkdir -p "$cache/debs"
  debootstrap --variant=minbase --include="$include" --cache-dir="$cache/debs" \
    "$suite" "$dir" "$mirror" >"$cache/debootstrap-$name.log" 2>&1 \
    || { tail -n 20 "$cache/debootstrap-$name.log" >&2; die "debootstrap $name failed (log: $cache/debootstrap-$name.log)"; }
  # Package lists and caches are not needed in an image.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  echo "$stamp" >"$dir/.jetmart-stamp"
}

# image_stamp IMAGE: the stamp label of a local image ("" when absent).
image_stamp() {
  docker image inspect --format '{{ index .Config.Labels "io.jetmart.offline.stamp" }}' "$1" 2>/dev/null || true
}

# import_tree IMAGE DIR STAMP [docker import -c CHANGE ...]
import_tree() {
  local image="$1" dir="$2" stamp="$3"; shift 3
  local changes=() c
  for c in "$@"; do changes+=(-c "$c"); done
  if [[ "$(image_stamp "$image")" == "$stamp" ]]; then
    say "$image: up to date"
    return
  fi
  say "$image: docker import of $dir"
  tar --numeric-owner --exclude=./.jetmart-stamp -C "$dir" -c . \
    | docker import "${changes[@]}" -c "LABEL io.jetmart.offline.stamp=$stamp" - "$image" >/dev/null
}

# build_standin IMAGE CONTEXT STAMP: legacy `docker build` of a stand-in (its FROM is local).
build_standin() {
  local image="$1" context="$2" stamp="$3"
  if [[ "$(image_stamp "$image")" == "$stamp" ]]; then
    say "$image: up to date"
    return
  fi
  say "$image: docker build $context"
  docker build -q --pull=false --label "io.jetmart.offline.stamp=$stamp" -t "$image" "$context" >/dev/null
}

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

base_pkgs="ca-certificates,tzdata,netbase"
infra_pkgs="$base_pkgs,postgresql-15,redis-server,python3-aiosmtpd"
# An image's stamp is a hash of this script and its package list: when the images carry it, the
# debootstrap trees are not needed at all (a fresh clone on a machine that has the images skips
# debootstrap). --refresh rebuilds everything from a new debootstrap.
script_hash=$(hash_of "${BASH_SOURCE[0]}")
base_stamp="$script_hash-$(echo "$suite $base_pkgs" | sha256sum | cut -c1-16)"
infra_stamp="$script_hash-$(echo "$suite $infra_pkgs" | sha256sum | cut -c1-16)"
if ((refresh)); then base_stamp="$base_stamp-$(date +%s)"; infra_stamp="$infra_stamp-$(date +%s)"; fi

base="$cache/rootfs-base"
infra="$cache/rootfs-infra"
if [[ "$(image_stamp jetmart-offline/build:bookworm)" != "$base_stamp" \
  || "$(image_stamp jetmart-offline/runtime:bookworm)" != "$base_stamp" ]]; then
  rootfs base "$base_pkgs"
fi
if [[ "$(image_stamp jetmart-offline/infra:bookworm)" != "$infra_stamp" ]]; then
  rootfs infra "$infra_pkgs"
fi

# ------------------------------------------------------------------------------------ build base
import_tree jetmart-offline/build:bookworm "$base" "$base_stamp" \
  'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'CMD ["/bin/bash"]'

# ------------------------------------------------------------------------------- runtime (no shell)
# Like gcr.io/distroless/cc-debian12: the files of libc6, libgcc-s1, libstdc++6 and libssl3
# (binaries and shared objects only), the CA bundle, tzdata, netbase's /etc files, and users
# root, nobody and nonroot (65532). No shell, no coreutils, no apt/dpkg.
runtime="$cache/runtime"
if [[ "$(image_stamp jetmart-offline/runtime:bookworm)" == "$base_stamp" ]]; then
  say "jetmart-offline/runtime:bookworm: up to date"
else
rm -rf "$runtime"
mkdir -p "$runtime/usr"
# Merged /usr first (Debian 12: /lib, /lib64, /bin, /sbin are symlinks into /usr), so that the
# packages' /lib/... paths land in /usr/lib/... through them.
for l in lib lib64 bin sbin; do
  if [[ -L "$base/$l" ]]; then
    mkdir -p "$runtime/usr/$l"
    cp -a "$base/$l" "$runtime/$l"
  fi
done
for pkg in libc6 libgcc-s1 libstdc++6 libssl3 tzdata netbase; do
  list="$base/var/lib/dpkg/info/$pkg:amd64.list"
  [[ -f "$list" ]] || list="$base/var/lib/dpkg/info/$pkg.list"
  [[ -f "$list" ]] || die "package $pkg is not in the base rootfs"
  # Regular files and symlinks, without docs, locales' message catalogs and the gconv modules.
  while IFS= read -r f; do
    [[ -n "$f" && ( -f "$base$f" || -L "$base$f" ) && ! -d "$base$f" ]] || continue
    case "$f" in /usr/share/doc/* | /usr/share/lintian/* | /usr/share/man/* | /usr/share/locale/* | */gconv/* | /usr/bin/* | /usr/sbin/* | /sbin/* | /bin/*) continue ;; esac
    mkdir -p "$runtime$(dirname "$f")"
    cp -a "$base$f" "$runtime$f"
  done <"$list"
done
mkdir -p "$runtime/etc/ssl/certs" "$runtime/tmp" "$runtime/home/nonroot" "$runtime/root"
cp -L "$base/etc/ssl/certs/ca-certificates.crt" "$runtime/etc/ssl/certs/ca-certificates.crt"
cp "$base/etc/os-release" "$runtime/etc/os-release" 2>/dev/null || cp -L "$base/usr/lib/os-release" "$runtime/etc/os-release"
cat >"$runtime/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$runtime/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
printf 'hosts: files dns\n' >"$runtime/etc/nsswitch.conf"
chmod 1777 "$runtime/tmp"
chmod 0700 "$runtime/root"
chown 65532:65532 "$runtime/home/nonroot"
[[ ! -e "$runtime/usr/bin/sh" && ! -e "$runtime/usr/bin/bash" ]] || die "the runtime tree has a shell"
[[ -e "$runtime/lib64/ld-linux-x86-64.so.2" && -e "$runtime/lib/x86_64-linux-gnu/libc.so.6" ]] \
  || die "the runtime tree lacks the dynamic loader or libc"
import_tree jetmart-offline/runtime:bookworm "$runtime" "$base_stamp" \
  'ENV PATH=/usr/local/bin:/usr/bin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  'USER 65532:65532' 'WORKDIR /home/nonroot'
fi

# ------------------------------------------------------------------------------------- stand-ins
if [[ "$(image_stamp jetmart-offline/infra:bookworm)" != "$infra_stamp" ]]; then
# Debian's postgresql postinst created a cluster in the tree: the stand-in runs initdb itself.
rm -rf "$infra/var/lib/postgresql/15" "$infra/etc/postgresql/15"
# The chart runs every infra pod as 65532; initdb refuses a uid without a passwd entry (the
# official images solve that with nss_wrapper).
grep -q '^nonroot:' "$infra/etc/passwd" || echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin' >>"$infra/etc/passwd"
grep -q '^nonroot:' "$infra/etc/group" || echo 'nonroot:x:65532:' >>"$infra/etc/group"
mkdir -p "$infra/home/nonroot"
chown 65532:65532 "$infra/home/nonroot"
fi
import_tree jetmart-offline/infra:bookworm "$infra" "$infra_stamp" \
  'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
for s in nats postgres redis mailpit; do
  mkdir -p "$ctx/$s"
  cp -a "$here/standins/$s/." "$ctx/$s/"
done
cp "$nats_bin" "$ctx/nats/nats-server"
build_standin jetmart-standin/nats:2.15 "$ctx/nats" \
  "$(hash_of "$here/standins/nats/Dockerfile" "$nats_bin")-$(image_stamp jetmart-offline/build:bookworm)"
for s in postgres redis mailpit; do
  tag=$(sed -n 's/^# tag: //p' "$here/standins/$s/Dockerfile")
  [[ -n "$tag" ]] || die "standins/$s/Dockerfile has no '# tag:' line"
  build_standin "jetmart-standin/$s:$tag" "$ctx/$s" \
    "$(cd "$here/standins/$s" && find . -type f -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)-$(image_stamp jetmart-offline/infra:bookworm)"
done

say "images:"
docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^ *jetmart-(offline|standin)/' | sort | sed 's/^ */  /'
