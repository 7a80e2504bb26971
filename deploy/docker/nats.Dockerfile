# A stand-in for the cluster compose file's pinned NATS image, for a machine without a container
# registry: Debian's `nats-server` package (2.9.x, JetStream included) on the local runtime base
# image (built by local-base-images.sh --nats, which passes RUNTIME_IMAGE). It keeps what
# deploy/docker-compose.cluster.yml relies on: the entrypoint is `nats-server` and takes the same
# flags as upstream's, JetStream stores under the volume /data, and it runs unprivileged.
ARG RUNTIME_IMAGE=debian:bookworm-slim
FROM ${RUNTIME_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nats-server \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o nobody -g nogroup /data
USER nobody
WORKDIR /data
VOLUME ["/data"]
# Clients, cluster routes, monitoring.
EXPOSE 4222 6222 8222
ENTRYPOINT ["/usr/sbin/nats-server"]
CMD ["--jetstream", "--store_dir", "/data"]
