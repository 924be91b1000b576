# source-loop: Airbyte source connector for the Loop Subscriptions Admin API.
#
#   docker build -t airbyte/source-loop:0.1.0 .
#   docker run --rm airbyte/source-loop:0.1.0 spec
#   docker run --rm -v "$PWD/secrets:/secrets:ro" airbyte/source-loop:0.1.0 check --config /secrets/config.json
#
# On machines without a Docker engine, /work/shared/tools/container.sh builds this same file with
# podman/buildah; it overrides the two base images with local stand-ins and mounts the host's
# Rust toolchain and cargo registry at /usr/local/rustup and /usr/local/cargo.
ARG BUILD_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# Only what the build needs (see .dockerignore); the schemas are compiled in with include_str!.
COPY . .
# The target directory is a cache mount so rebuilds reuse compiled dependencies (BuildKit and
# buildah both support it); the binary is copied out of it inside the same step. COPY keeps the
# context's mtimes, which can be older than the cached build, so the workspace's own sources
# are touched first: cargo then always recompiles them (seconds) and never trusts a stale copy.
RUN --mount=type=cache,id=source-loop-target,target=/src/target \
    find . -path ./target -prune -o -type f \( -name '*.rs' -o -name '*.json' -o -name 'Cargo.toml' \) -exec touch {} + \
 && cargo build --release --locked -p source-loop --bin source-loop \
 && mkdir -p /out \
 && cp target/release/source-loop /out/source-loop \
 && /out/source-loop spec > /dev/null \
 && mkdir -p /out/airbyte \
 && if [ -d schemas ]; then cp -r schemas /out/airbyte/schemas; fi \
 && if [ -f spec.json ]; then cp spec.json /out/airbyte/spec.json; fi

FROM ${RUNTIME_IMAGE}
# reqwest uses rustls with the webpki root store compiled in: no OpenSSL, no CA bundle needed.
# A numeric non-root user, so Kubernetes' runAsNonRoot can verify it.
RUN (groupadd --gid 1000 airbyte && useradd --uid 1000 --gid 1000 --home-dir /airbyte --no-create-home --shell /usr/sbin/nologin airbyte) \
    || (echo 'airbyte:x:1000:' >> /etc/group && echo 'airbyte:x:1000:1000::/airbyte:/usr/sbin/nologin' >> /etc/passwd) \
 && mkdir -p /airbyte && chown 1000:1000 /airbyte
COPY --from=build /out/source-loop /usr/local/bin/source-loop
COPY --from=build /out/airbyte/ /airbyte/
WORKDIR /airbyte
USER 1000:1000
ENV AIRBYTE_ENTRYPOINT="/usr/local/bin/source-loop"
ENTRYPOINT ["/usr/local/bin/source-loop"]
LABEL io.airbyte.name="airbyte/source-loop" \
      io.airbyte.version="0.1.0" \
      org.opencontainers.image.title="source-loop" \
      org.opencontainers.image.description="Airbyte source connector for the Loop Subscriptions Admin API" \
      org.opencontainers.image.licenses="MIT"
