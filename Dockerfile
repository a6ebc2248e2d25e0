# chatd's image: built in one stage, run as a non-root user in another, so no
# compiler ships. Both stages start from BASE, the Debian 12 base that
# scripts/images.sh makes with debootstrap (`make images` builds every image);
# on a host that reaches a registry, --build-arg BASE=debian:12-slim works too.
#   podman build --pull=never --format docker -t localhost/chatd:local .
# The runtime reads only its environment (README.md, "Configuration").
ARG BASE=localhost/chatd-base:bookworm

FROM ${BASE} AS build
# scripts/images.sh rm finds this stage's cached layers by it
LABEL io.chatd.stage=build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake gcc libc6-dev make pkg-config python3 python3-yaml \
      libuv1-dev libhttp-parser-dev libpq-dev libjansson-dev libssl-dev libhiredis-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake ./cmake
COPY tools ./tools
# compiled into the binary: the web client and the OpenAPI document (as JSON)
COPY web ./web
COPY docs/openapi.yaml ./docs/openapi.yaml
COPY scripts/openapi-json.py ./scripts/openapi-json.py
COPY sql ./sql
COPY src ./src
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
 && cmake --build build -j"$(nproc)" --target chatd \
 && strip --strip-debug build/chatd

FROM ${BASE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libuv1 libhttp-parser2.9 libpq5 libjansson4 libssl3 libhiredis0.14 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 chatd \
 && useradd --system --uid 10001 --gid chatd --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin chatd
COPY --from=build /src/build/chatd /usr/local/bin/chatd
USER 10001:10001
ENV CHATD_LISTEN=0.0.0.0:3000
EXPOSE 3000
# chatd exits on SIGTERM after finishing requests in flight (CHATD_SHUTDOWN_TIMEOUT_MS)
STOPSIGNAL SIGTERM
# liveness: GET /healthz on the port of CHATD_LISTEN (bash's /dev/tcp; no curl in the image)
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD ["/bin/bash", "-c", "p=${CHATD_LISTEN##*:}; exec 3<>/dev/tcp/127.0.0.1/$p && printf 'GET /healthz HTTP/1.1\\r\\nHost: l\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/chatd"]
