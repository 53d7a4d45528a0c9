# syntax=docker/dockerfile:1.7
#
# One image for every jetmart binary. Each Kubernetes workload picks its binary with `command`
# (see deploy/helm/jetmart). Build: `docker build -t jetmart:dev .` (BuildKit is required for the
# cache mounts; it is the default builder of current Docker and of Tilt).
#
# RUST_VERSION must equal the channel in rust-toolchain.toml: scripts/ci/k8s-checks.sh fails when
# they drift, so a toolchain bump cannot silently build the image with the old compiler.
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# The image's toolchain is the pinned one; stop rustup from fetching the clippy/rustfmt
# components that rust-toolchain.toml lists for developers (not needed to build).
ARG RUST_VERSION
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    # sqlx query! macros must not need a live database inside the build: they use the
    # committed .sqlx/ query data (`cargo sqlx prepare --workspace`).
    SQLX_OFFLINE=true
WORKDIR /src
COPY . .
# The registry, git checkouts and target/ live in BuildKit cache mounts: a source edit rebuilds
# only the workspace crates, never the ~350 dependencies. The binaries are copied out of the
# cache mount inside the same RUN (a cache mount is not part of the image layer).
# `cp` fails the build when a binary named below is missing, so a renamed crate is caught here.
RUN --mount=type=cache,id=jetmart-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=jetmart-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=jetmart-target,target=/src/target,sharing=locked \
    cargo build --release --locked --workspace --bins \
 && mkdir -p /out \
 && for bin in jetmart-order jetmart-inventory jetmart-payment jetmart-notification \
               jetmart-survey jetmart-analytics jetmartctl jetmart-check jetmart-loadgen; do \
      cp "target/release/${bin}" "/out/${bin}"; \
    done

# distroless/cc: glibc + libgcc + CA certificates (async-nats loads the system roots), no shell,
# no package manager. Tag `nonroot` runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="jetmart" \
      org.opencontainers.image.description="jetmart services and tools (one binary per workload)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /usr/local/bin/
# Notification templates are embedded in the binary: no asset directories to copy.
USER 65532:65532
EXPOSE 50051 8080
# No default service: every workload sets `command`. Running the image bare prints the CLI help.
CMD ["/usr/local/bin/jetmartctl", "--help"]
