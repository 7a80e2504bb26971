# A stand-in for the compose stack's pinned Prometheus image, for a machine without a container
# registry: Debian's `prometheus` package on the local runtime base image (built by
# local-base-images.sh, which passes RUNTIME_IMAGE). It keeps what the compose file relies on:
# the entrypoint takes the same flags, the config is read from /etc/prometheus, the data lives
# in the volume /prometheus, owned by the unprivileged user it runs as (nobody, as upstream).
ARG RUNTIME_IMAGE=debian:bookworm-slim
FROM ${RUNTIME_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o nobody -g nogroup /prometheus
USER nobody
WORKDIR /prometheus
VOLUME ["/prometheus"]
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
