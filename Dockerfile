# graygate's image: built with the official Rust image, run on Debian slim as a
# non-root user. The same image runs the gateway, the demo upstreams
# (`graygate demo-upstream`) and the load generator (`graygate demo-load`).
#
#   docker build -t graygate .
#   docker run --rm -p 8080:8080 -v "$PWD/my-config:/etc/graygate:ro" graygate

# The toolchain the tests run with; the runtime's Debian release matches its glibc.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY benches ./benches
RUN cargo build --release --locked --bin graygate \
    && cp target/release/graygate /usr/local/bin/graygate

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 graygate \
    && useradd --system --uid 10001 --gid graygate --no-create-home --shell /usr/sbin/nologin graygate \
    && mkdir -p /etc/graygate /var/lib/graygate \
    && chown graygate:graygate /var/lib/graygate
COPY --from=build /usr/local/bin/graygate /usr/local/bin/graygate
# The example configs, for `graygate check` and as a start; mount your own config
# directory on /etc/graygate (a directory, so the watcher sees edits saved by rename).
COPY config /usr/share/graygate/examples
USER 10001:10001
# Traffic, then the admin listener (status page, /metrics, /admin/*).
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/graygate"]
CMD ["run", "--config", "/etc/graygate/graygate.toml"]
