# syntax=docker/dockerfile:1
#
# One image with both binaries: `raftkv` (the entrypoint; RaftCluster member pods
# run it through `/bin/sh -c`) and `raftkv-operator` (the Helm chart's Deployment).
#
#   docker build -t raftkv:0.1.0 .
#
# Two build layers: the dependencies (RocksDB's C++ is most of the build time)
# are compiled from the manifests and stub sources alone, so editing raftkv's own
# code reuses that layer and rebuilds only the three workspace crates.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
#   libclang-dev       bindgen, for RocksDB's Rust bindings
#   g++                RocksDB's C++
#   protobuf-compiler  protoc for the etcd-client crate the operator uses (the
#                      node's and the operator's own protos use a vendored protoc)
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libclang-dev g++ protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# 1. Dependencies only: the workspace manifests, the lock file and empty crates.
#    The stubs include build.rs so the build-dependencies are cached too.
COPY Cargo.toml Cargo.lock ./
COPY proto/Cargo.toml proto/
COPY node/Cargo.toml node/
COPY operator/Cargo.toml operator/
COPY tests/Cargo.toml tests/
RUN for crate in proto node operator tests; do \
      mkdir -p "$crate/src" \
      && echo 'fn main() {}' > "$crate/src/main.rs" \
      && touch "$crate/src/lib.rs"; \
    done \
 && echo 'fn main() {}' > proto/build.rs \
 && cargo build --release --locked -p raftkv-node -p raftkv-operator \
 && rm -rf proto node operator tests

# 2. The real sources. COPY keeps the files' own timestamps, which can be older
#    than the stub build, so touch them: cargo rebuilds by modification time.
COPY proto proto
COPY node node
COPY operator operator
COPY tests tests
RUN find proto node operator tests -type f -exec touch {} + \
 && cargo build --release --locked -p raftkv-node -p raftkv-operator --bins \
 && mkdir -p /out \
 && cp target/release/raftkv target/release/raftkv-operator /out/

FROM debian:${DEBIAN_RELEASE}-slim
# No extra packages: the binaries need only glibc and libstdc++ (RocksDB), both
# in the slim image, and /bin/sh, which the member pods' command uses.
# A fixed numeric uid/gid, so Kubernetes can check runAsNonRoot (the chart sets
# the same ids).
RUN groupadd --gid 65532 raftkv \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /var/lib/raftkv \
      --shell /usr/sbin/nologin raftkv \
 && mkdir -p /var/lib/raftkv \
 && chown raftkv:raftkv /var/lib/raftkv
COPY --from=build /out/raftkv /out/raftkv-operator /usr/local/bin/
USER 65532:65532
# `raftkv serve` keeps its data in ./raftkv.data by default; member pods mount
# their volume here and pass --data-dir /var/lib/raftkv.
WORKDIR /var/lib/raftkv
# client, peer, member metrics/health, operator metrics/health
EXPOSE 2379 2380 2381 8080
ENTRYPOINT ["raftkv"]
CMD ["--help"]
