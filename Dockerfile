# syntax=docker/dockerfile:1
#
# wxbroker container image. Build and run: docs/deployment.md.
#   docker build -t wxbroker .
#   docker run -v ./wxbroker.toml:/etc/wxbroker/wxbroker.toml:ro wxbroker

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin wxbroker \
    && install -D -m 0755 target/release/wxbroker /out/wxbroker

FROM debian:bookworm-slim
# A fixed uid/gid, so volumes and a Kubernetes fsGroup can be set to match.
RUN groupadd --system --gid 10001 wxbroker \
    && useradd --system --uid 10001 --gid wxbroker --no-create-home \
       --home-dir /var/lib/wxbroker --shell /usr/sbin/nologin wxbroker \
    && install -d -m 0755 /etc/wxbroker \
    && install -d -m 0750 -o wxbroker -g wxbroker /run/wxbroker \
    && install -d -m 0700 -o wxbroker -g wxbroker /var/lib/wxbroker
COPY --from=build /out/wxbroker /usr/local/bin/wxbroker

USER wxbroker:wxbroker
ENV WXBROKER_CONFIG=/etc/wxbroker/wxbroker.toml
# The socket directory and the state directory (file store).
VOLUME ["/run/wxbroker", "/var/lib/wxbroker"]
# Token API (if `listen` is set), operations listener (metrics, probes).
EXPOSE 8930 9930
STOPSIGNAL SIGTERM
# Healthy once every app holds a valid token (`/readyz` on metrics_listen,
# which must then be 127.0.0.1:9930 or 0.0.0.0:9930).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/wxbroker", "probe", "readyz", "--url", "http://127.0.0.1:9930", "--timeout", "4s"]
ENTRYPOINT ["/usr/local/bin/wxbroker", "serve"]
