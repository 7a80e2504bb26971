# ffd in a container: `ffd serve` listening on 0.0.0.0:8080 as the unprivileged user ffd
# (uid 10001), config in /etc/ffd/ffd.toml, state in the volume /var/lib/ffd.
#
#   docker build -t ffd .
#   docker run --rm -p 8080:8080 -v ffd-data:/var/lib/ffd ffd
#
# Builder and runtime share a Debian release (bookworm), so the binary's glibc matches.
#
# Needs BuildKit (the default builder since Docker 23; DOCKER_BUILDKIT=1 with older clients) for
# the cache mounts below, and nothing else from a registry than the two base images: there is
# no `# syntax=` line, because that line makes BuildKit pull its Dockerfile frontend as an image,
# which fails on a machine without registry access; the frontend built into BuildKit reads
# everything here, cache mounts included. On such a machine, deploy/docker/local-base-images.sh
# builds stand-ins for the base images from Debian packages (deploy/README.md).

ARG RUST_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target/ between builds (BuildKit); target/ is not part of
# the layer, hence the copy out in the same step. No debug info: the image only needs to run.
# Cargo decides what is stale by modification times, and COPY keeps the context's: sources older
# than the cached build (another checkout built first) would yield the cached, stale binary. This
# step runs only when the context changed, so the crate's two roots are touched and the crate is
# always rebuilt here; the dependencies stay cached.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    touch src/lib.rs src/main.rs \
    && CARGO_PROFILE_RELEASE_DEBUG=0 cargo build --release --locked --bin ffd \
    && cp target/release/ffd /usr/local/bin/ffd

FROM ${RUNTIME_IMAGE}
RUN groupadd --system --gid 10001 ffd \
    && useradd --system --uid 10001 --gid ffd --home-dir /var/lib/ffd --no-create-home \
        --shell /usr/sbin/nologin ffd \
    && install -d -o ffd -g ffd -m 0750 /var/lib/ffd \
    && install -d -m 0755 /etc/ffd
COPY --from=build /usr/local/bin/ffd /usr/local/bin/ffd
COPY config/default.toml /etc/ffd/ffd.toml
# Overrides `listen` from the config file: inside the container the server must accept
# connections from outside its own loopback.
ENV FFD_LISTEN=0.0.0.0:8080
# Checkpoints and the write-ahead log go to the volume.
ENV FFD_DATA_DIR=/var/lib/ffd
WORKDIR /var/lib/ffd
VOLUME ["/var/lib/ffd"]
# Numeric, so that Kubernetes' runAsNonRoot can check it; 10001 is ffd.
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["ffd", "healthcheck", "--url", "http://127.0.0.1:8080"]
ENTRYPOINT ["ffd"]
CMD ["serve", "--config", "/etc/ffd/ffd.toml"]
