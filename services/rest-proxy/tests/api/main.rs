//! The HTTP API on devbroker with the registry: what is accepted is read back exactly; every
//! refusal has its status and its JSON body; a batch with one bad event writes nothing.

mod access;
#[path = "../common/mod.rs"]
mod common;
mod events;
mod openapi;
mod replays;
mod v3;

use common::client;
use std::{sync::Arc, time::Duration};

use contracts::records::Event;
use end_to_end::TopicReader;
use habitat_runtime::avro::AvroCodec;
use rest_proxy::{
    Accepted, AppState, ErrorBody, HttpMetrics, Limits, Partitions, RateLimit,
    idempotency::Idempotency,
    keys::{self, Keys},
    registry::Schemas,
    router,
    writer::{Writer, WriterConfig},
};
use serde_json::{Value, json};
use test_support::{kafka, unique};

struct Proxy {
    rt: &'static tokio::runtime::Runtime,
    url: String,
    codec: AvroCodec,
    pool: sqlx::PgPool,
    /// The tenant of `token`.
    tenant: String,
    /// A key for `tenant`, every event type.
    token: String,
    registry: String,
}

/// One runtime and registry for the binary: its tests share the topics, so they must share
/// the schema ids too.
fn shared() -> &'static (tokio::runtime::Runtime, String) {
    static SHARED: std::sync::OnceLock<(tokio::runtime::Runtime, String)> =
        std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let rt = end_to_end::runtime();
        let (registry, _) = end_to_end::stack(&rt);
        (rt, registry)
    })
}

fn start(bootstrap: &str) -> Proxy {
    start_with(bootstrap, |_, _| {})
}

/// A proxy whose state `adjust` may change first; served with the clients' addresses.
fn start_with(bootstrap: &str, adjust: impl FnOnce(&mut AppState, &sqlx::PgPool)) -> Proxy {
    let (rt, registry) = shared();
    let codec = AvroCodec::new(registry, rt.handle().clone()).expect("codec");
    let writer = Writer::start(WriterConfig {
        bootstrap_servers: bootstrap.to_owned(),
        transactional_id: unique("rest-proxy"),
        producers: 2,
        linger: Duration::from_millis(2),
        timeout: Duration::from_secs(5),
        kafka: vec![("broker.address.family".to_owned(), "v4".to_owned())],
    });
    let tenant = unique("coop");
    let (pool, token) = common::key_store(rt, &unique("apps"), std::slice::from_ref(&tenant));
    let mut state = AppState {
        keys: Arc::new(Keys::new(pool.clone(), Duration::ZERO)),
        rate: Arc::new(RateLimit::unlimited()),
        idempotency: Idempotency::new(pool.clone()),
        writer,
        codec: Arc::new(AvroCodec::new(registry, rt.handle().clone()).expect("codec")),
        partitions: Arc::new(Partitions::new(client(bootstrap))),
        schemas: Arc::new(Schemas::new(registry)),
        limits: Limits {
            body_bytes: 16 * 1024,
            batch_events: 10,
        },
        metrics: HttpMetrics::default(),
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    adjust(&mut state, &pool);
    _ = rt.spawn(async move {
        axum::serve(
            listener,
            router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    Proxy {
        rt,
        url,
        codec,
        pool,
        tenant,
        token,
        registry: registry.clone(),
    }
}

impl Proxy {
    fn post(&self, path: &str, body: &Value) -> (u16, Option<String>, Value) {
        self.post_as(
            Some(&self.token),
            path,
            serde_json::to_vec(body).expect("json"),
        )
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.rt.block_on(async {
            let response = reqwest::Client::new()
                .get(format!("{}{path}", self.url))
                .bearer_auth(&self.token)
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        })
    }

    fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Option<String>, Value) {
        self.post_as(Some(&self.token), path, body)
    }

    fn post_as(
        &self,
        token: Option<&str>,
        path: &str,
        body: Vec<u8>,
    ) -> (u16, Option<String>, Value) {
        self.send(token, None, path, body)
    }

    /// Posts `body` with an `Idempotency-Key`.
    fn post_keyed(
        &self,
        idempotency: &str,
        path: &str,
        body: &Value,
    ) -> (u16, Option<String>, Value) {
        self.send(
            Some(&self.token),
            Some(idempotency),
            path,
            serde_json::to_vec(body).expect("json"),
        )
    }

    fn send(
        &self,
        token: Option<&str>,
        idempotency: Option<&str>,
        path: &str,
        body: Vec<u8>,
    ) -> (u16, Option<String>, Value) {
        self.rt.block_on(async {
            let mut request = reqwest::Client::new()
                .post(format!("{}{path}", self.url))
                .header("content-type", "application/json")
                .body(body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(key) = idempotency {
                request = request.header("idempotency-key", key);
            }
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            (status, retry, body)
        })
    }
}

fn contribution(id: &str, value: &str) -> Value {
    json!({"contribution_id": id, "member_id": "m-1", "period_id": "2026", "kind": "LABOR",
           "quantity": "8.5000", "unit": "HOURS", "value": value, "description": "barn roof",
           "status": "APPROVED", "submitted_by": "member:m-1",
           "submitted_at": "2026-02-01T09:00:00Z", "reviewed_by": "steward:ana",
           "reviewed_at": "2026-02-02T10:00:00Z"})
}

fn submission(tenant: &str, payload: Value) -> Value {
    json!({"event_type": "people.ContributionApproved", "tenant_id": tenant,
           "actor": "steward:ana", "payload": payload})
}

fn without_meta(event: &Event) -> Value {
    let mut value = serde_json::to_value(event).expect("json");
    _ = value.as_object_mut().expect("object").remove("meta");
    value
}

/// A loopback port nothing listens on.
fn devstack_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
