# The dcsync agent image: docker build -t dcsync .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p dcsync-agent

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/dcsync /usr/local/bin/dcsync
WORKDIR /var/lib/dcsync
ENTRYPOINT ["dcsync"]
