# One image with every Habitat Streams program; a container runs one of them:
#   patronage-aggregator, allocation-calculator, payment-schedule-creator,
#   distribution-recorder, postgres-sink, rest-proxy, outbox-relay, habitat (topics,
#   schemas, reports).
# Build: docker build -t habitat-streams:0.1.0 .

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev libcurl4-openssl-dev libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# SQLx checks its queries against the committed .sqlx/ cache; no database at build time.
ENV SQLX_OFFLINE=true
RUN cargo build --locked --release \
      -p patronage-aggregator -p allocation-calculator -p payment-schedule-creator \
      -p distribution-recorder -p postgres-sink -p rest-proxy -p outbox-relay -p habitat \
 && mkdir /out \
 && cp target/release/patronage-aggregator target/release/allocation-calculator \
       target/release/payment-schedule-creator target/release/distribution-recorder \
       target/release/postgres-sink target/release/rest-proxy target/release/outbox-relay \
       target/release/habitat /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home habitat
COPY --from=build /out/ /usr/local/bin/
USER 10001
ENV HABITAT_LOG_FORMAT=json
# Processors and the sink serve /metrics, /healthz and /readyz on HABITAT_METRICS_LISTEN
# (9100 in docker-compose.yml and the chart); the REST proxy serves its API and the same
# endpoints on HABITAT_LISTEN (8080).
EXPOSE 9100 8080
CMD ["habitat", "--help"]
