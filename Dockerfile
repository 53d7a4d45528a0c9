#
# One image for every jetmart binary. Each Kubernetes workload picks its binary with `command`
# (see deploy/helm/jetmart). Works with BuildKit and with the legacy builder (no cache mounts, no
# `# syntax` line to pull).
#
#   docker build -t jetmart:dev .
#       compiles the workspace inside rust:<RUST_VERSION>-slim-bookworm, runtime distroless/cc.
#   scripts/images/build.sh
#       no registry, no network in the build: copies the host-built, stripped release binaries
#       (BINARIES=.docker/bin) onto the offline bases of scripts/images/offline-bases.sh
#       (BUILD_IMAGE=jetmart-offline/build:bookworm, RUNTIME_IMAGE=jetmart-offline/runtime:bookworm).
#
# RUST_VERSION must equal the channel in rust-toolchain.toml: scripts/ci/k8s-checks.sh fails when
# they drift, so a toolchain bump cannot silently build the image with the old compiler.
ARG RUST_VERSION=1.95.0
ARG BUILD_IMAGE=rust:${RUST_VERSION}-slim-bookworm
# distroless/cc: glibc + libgcc + CA certificates (async-nats loads the system roots), no shell,
# no package manager. Tag `nonroot` runs as uid/gid 65532.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
# The image's toolchain is the pinned one; stop rustup from fetching the clippy/rustfmt
# components that rust-toolchain.toml lists for developers (not needed to build).
ARG RUST_VERSION
# Directory in the build context holding prebuilt binaries (scripts/images/build.sh fills
# .docker/bin from target/release); empty means compile here.
ARG BINARIES=""
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    # sqlx query! macros must not need a live database inside the build: they use the
    # committed .sqlx/ query data (`cargo sqlx prepare --workspace`).
    SQLX_OFFLINE=true
WORKDIR /src
COPY . .
# `cp` fails the build when a binary named below is missing, so a renamed crate is caught here,
# in both modes. The prebuilt binaries must be glibc-compatible with the runtime (Debian 12).
RUN set -eu; \
    bins="jetmart-order jetmart-inventory jetmart-payment jetmart-notification jetmart-survey \
          jetmart-analytics jetmartctl jetmart-check jetmart-loadgen"; \
    if [ -n "${BINARIES}" ]; then \
      from="/src/${BINARIES}"; \
    else \
      cargo build --release --locked --workspace --bins; \
      from=/src/target/release; \
    fi; \
    mkdir -p /out; \
    for bin in $bins; do cp "${from}/${bin}" "/out/${bin}"; done; \
    rm -rf /src/target

FROM ${RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.title="jetmart" \
      org.opencontainers.image.description="jetmart services and tools (one binary per workload)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /usr/local/bin/
# Notification templates are embedded in the binary: no asset directories to copy.
USER 65532:65532
EXPOSE 50051 8080
# No default service: every workload sets `command`. Running the image bare prints the CLI help.
CMD ["/usr/local/bin/jetmartctl", "--help"]
