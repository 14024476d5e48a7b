# syntax=docker/dockerfile:1
# sagaflow container image. Build:  docker build -t sagaflow:local .
# The build commands live in scripts/docker-build-steps, which scripts/check-packaging
# also runs on the host, so a broken build step fails the test command.

# ---- build stage: Rust toolchain and the C build tools librdkafka needs -------------
FROM rust:1.95-slim-bookworm AS build

# rdkafka-sys builds librdkafka from source (configure + make) and links OpenSSL and
# zlib dynamically; zstd is compiled in. Versions come from the pinned Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make g++ pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
ENV CARGO_TARGET_DIR=/build/target

# Dependencies first: this layer is rebuilt only when Cargo.toml or Cargo.lock change.
COPY scripts/docker-build-steps scripts/docker-build-steps
COPY Cargo.toml Cargo.lock ./
RUN scripts/docker-build-steps deps

# Then sagaflow itself. Migrations and the console's files are embedded (sqlx::migrate!,
# include_str!) and no compile-time checked queries are used, so no database is needed.
COPY src src
COPY migrations migrations
COPY ui ui
RUN DOCKER_BUILD_BIN_OUT=/build/out/sagaflow scripts/docker-build-steps app

# ---- runtime stage ------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="sagaflow" \
      org.opencontainers.image.description="Saga orchestration over Kafka with state in PostgreSQL" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.documentation="docs/deployment.md" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

# libssl3 for librdkafka's TLS (SASL_SSL), CA certificates for TLS to Kafka and
# PostgreSQL. Unpinned on purpose: Debian security updates must reach the image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sagaflow \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin sagaflow

COPY --from=build /build/out/sagaflow /usr/local/bin/sagaflow

# The example sagas are baked in; mount a directory over /etc/sagaflow/sagas (or point
# SAGAFLOW_RUNTIME__SAGAS_DIR elsewhere) to run your own. See docs/deployment.md.
COPY sagas/ /etc/sagaflow/sagas/
RUN ["/usr/local/bin/sagaflow", "validate", "/etc/sagaflow/sagas"]

ENV SAGAFLOW_RUNTIME__SAGAS_DIR=/etc/sagaflow/sagas \
    SAGAFLOW_HTTP__LISTEN=0.0.0.0:8080

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["sagaflow", "healthcheck", "--addr", "127.0.0.1:8080"]

ENTRYPOINT ["sagaflow"]
CMD ["serve"]
