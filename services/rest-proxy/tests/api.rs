//! The HTTP API on devbroker with the registry: what is accepted is read back exactly; every
//! refusal has its status and its JSON body; a batch with one bad event writes nothing.

mod common;

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

#[test]
fn accepted_events_are_read_back_exactly_and_refusals_say_why() {
    let proxy = start(&kafka().bootstrap);
    let tenant = proxy.tenant.clone();

    // Accepted: 202 with where it went; the record read back is what was sent.
    let payload = contribution("c-1", "1234.50");
    let (status, _, body) = proxy.post("/v1/events", &submission(&tenant, payload.clone()));
    assert_eq!(status, 202, "{body}");
    let accepted: Accepted = serde_json::from_value(body).expect("accepted body");
    assert_eq!(accepted.topic, "habitat.people");
    assert_eq!(accepted.key, format!("{tenant}/contribution/c-1"));
    assert_eq!(
        accepted.partition,
        habitat_runtime::partition_for(&accepted.key, end_to_end::PARTITIONS)
    );
    let mut people = TopicReader::new("habitat.people");
    let read = people.until(&proxy.codec, &tenant, "the posted event", |events| {
        events.first().cloned()
    });
    assert_eq!(without_meta(&read), payload);
    let meta = read.meta();
    assert_eq!(meta.event_id, accepted.event_id);
    assert_eq!(meta.event_type, "people.ContributionApproved");
    assert_eq!(meta.actor.as_deref(), Some("steward:ana"));
    assert_eq!(meta.correlation_id, accepted.event_id);
    assert!(meta.producer.starts_with("rest:apps-"), "{}", meta.producer);

    // 404, 422 with paths, 413, malformed body.
    let (status, _, body) = proxy.post(
        "/v1/events",
        &json!({"event_type": "people.Nope", "tenant_id": tenant, "payload": {}}),
    );
    assert_eq!(status, 404);
    let error: ErrorBody = serde_json::from_value(body).expect("error body");
    assert_eq!(error.error_code, "unknown_event_type");
    let (status, _, body) = proxy.post(
        "/v1/events",
        &submission(&tenant, contribution("c-2", "12.345")),
    );
    assert_eq!(status, 422, "{body}");
    let error: ErrorBody = serde_json::from_value(body).expect("error body");
    assert_eq!(
        (error.error_code.as_str(), error.details[0].path.as_str()),
        ("invalid_event", "payload.value")
    );
    let (status, _, body) = proxy.post_raw("/v1/events", vec![b' '; 20 * 1024]);
    assert_eq!(status, 413);
    assert_eq!(body["error_code"], "payload_too_large");
    let (status, _, body) = proxy.post_raw("/v1/events", b"{\"event_type\": 7}".to_vec());
    assert_eq!(status, 422);
    assert_eq!(body["details"][0]["path"], "event_type");

    // A batch with one bad event writes nothing; a good batch is written whole.
    let batch = json!({"events": [
        submission(&tenant, contribution("c-10", "1.00")),
        submission(&tenant, contribution("c-11", "-5.00")),
        submission(&tenant, contribution("c-12", "3.00")),
    ]});
    let (status, _, body) = proxy.post("/v1/events:batch", &batch);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["details"][0]["path"], "events[1].payload.value");
    let good = json!({"events": [
        submission(&tenant, contribution("c-20", "1.00")),
        submission(&tenant, contribution("c-21", "2.00")),
    ]});
    let (status, _, body) = proxy.post("/v1/events:batch", &good);
    assert_eq!(status, 202, "{body}");
    let accepted: Vec<Accepted> = serde_json::from_value(body).expect("list");
    assert_eq!(accepted.len(), 2);
    let ids = people.until(&proxy.codec, &tenant, "the good batch", |events| {
        (events.len() == 3).then(|| {
            events
                .iter()
                .map(|e| match e {
                    Event::ContributionApproved(c) => c.contribution_id.clone(),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        })
    });
    assert_eq!(ids, ["c-1", "c-20", "c-21"], "nothing of the refused batch");
    let (status, _, _) = proxy.post("/v1/events:batch", &json!({"events": (0..11).map(|i| submission(&tenant, contribution(&format!("c-{i}"), "1.00"))).collect::<Vec<_>>()}));
    assert_eq!(status, 422, "more than the batch limit");

    let metrics = proxy.rt.block_on(async {
        reqwest::get(format!("{}/metrics", proxy.url))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    });
    assert!(
        metrics.contains("habitat_http_requests_total{route=\"/v1/events\",status=\"202\"} 1"),
        "{metrics}"
    );
}

#[test]
fn an_unreachable_broker_is_a_503_with_retry_after() {
    let closed = format!("127.0.0.1:{}", devstack_port());
    let proxy = start(&closed);
    let (status, retry, body) = proxy.post(
        "/v1/events",
        &submission(&proxy.tenant, contribution("c-1", "1.00")),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry.as_deref(), Some("5"));
    assert_eq!(body["error_code"], "broker_unavailable");
    // What failed inside is logged, not answered.
    assert_eq!(
        body["message"],
        "the Kafka broker is unavailable; nothing was written: retry after Retry-After"
    );
}

/// A loopback port nothing listens on.
fn devstack_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn keys_are_required_bound_to_tenants_and_event_types_and_revocable() {
    let proxy = start(&kafka().bootstrap);
    let body =
        serde_json::to_vec(&submission(&proxy.tenant, contribution("c-1", "1.00"))).expect("json");
    let (status, _, error) = proxy.post_as(None, "/v1/events", body.clone());
    assert_eq!(
        (status, error["error_code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _, _) = proxy.post_as(Some("hsk_nope_nope"), "/v1/events", body.clone());
    assert_eq!(status, 401);
    let forged = format!("{}0", proxy.token);
    let (status, _, _) = proxy.post_as(Some(&forged), "/v1/events", body.clone());
    assert_eq!(status, 401);

    // Tenant A's key cannot write for tenant B.
    let other = serde_json::to_vec(&submission(&unique("coop-b"), contribution("c-1", "1.00")))
        .expect("json");
    let (status, _, error) = proxy.post_as(Some(&proxy.token), "/v1/events", other);
    assert_eq!(
        (status, error["error_code"].as_str()),
        (403, Some("forbidden"))
    );

    // A key for one event type only.
    let name = unique("stewards");
    let (_, narrow) = proxy
        .rt
        .block_on(keys::create(
            &proxy.pool,
            &name,
            std::slice::from_ref(&proxy.tenant),
            &["treasury.PeriodOpened".to_owned()],
        ))
        .expect("key");
    let (status, _, error) = proxy.post_as(Some(&narrow), "/v1/events", body.clone());
    assert_eq!(status, 403, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("people.ContributionApproved"),
        "{error}"
    );
    let (status, _, _) = proxy.post_as(Some(&proxy.token), "/v1/events", body.clone());
    assert_eq!(status, 202);

    assert!(
        proxy
            .rt
            .block_on(keys::revoke(&proxy.pool, &name))
            .expect("revoke")
    );
    let (status, _, error) = proxy.post_as(Some(&narrow), "/v1/events", body);
    assert_eq!(
        (status, error["message"].as_str()),
        (401, Some("the API key was revoked"))
    );
    let listed = proxy.rt.block_on(keys::list(&proxy.pool)).expect("list");
    assert!(
        listed
            .iter()
            .any(|k| k.name == name && k.revoked_at.is_some())
    );
}

#[test]
fn twenty_concurrent_retries_with_one_idempotency_key_write_one_record() {
    let proxy = start(&kafka().bootstrap);
    let body = serde_json::to_vec(&submission(&proxy.tenant, contribution("c-once", "7.00")))
        .expect("json");
    let answers: Vec<(u16, Value)> = proxy.rt.block_on(async {
        let client = reqwest::Client::new();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let request = client
                    .post(format!("{}/v1/events", proxy.url))
                    .bearer_auth(&proxy.token)
                    .header("content-type", "application/json")
                    .header("idempotency-key", "retry-me")
                    .body(body.clone());
                tokio::spawn(async move {
                    let response = request.send().await.expect("request");
                    let status = response.status().as_u16();
                    (status, response.json::<Value>().await.expect("json"))
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("task"));
        }
        answers
    });
    let first = &answers[0];
    assert_eq!(first.0, 202, "{}", first.1);
    assert!(answers.iter().all(|a| a == first), "{answers:?}");

    // The same key with another body is a conflict; nothing is written for it.
    let other = serde_json::to_vec(&submission(&proxy.tenant, contribution("c-other", "8.00")))
        .expect("json");
    let with_key = |key: String, body: Vec<u8>| {
        proxy.rt.block_on(async {
            let response = reqwest::Client::new()
                .post(format!("{}/v1/events", proxy.url))
                .bearer_auth(&proxy.token)
                .header("idempotency-key", key)
                .body(body)
                .send()
                .await
                .expect("request");
            (
                response.status().as_u16(),
                response.json::<Value>().await.expect("json"),
            )
        })
    };
    let (status, error) = with_key("retry-me".to_owned(), other.clone());
    assert_eq!(
        (status, error["error_code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    // A key over 255 characters is a bad request (400), and nothing is written for it.
    let (status, error) = with_key("k".repeat(256), other);
    assert_eq!(
        (status, error["error_code"].as_str()),
        (400, Some("bad_idempotency_key"))
    );

    // A marker after them: exactly one c-once before it.
    let (status, _, _) = proxy.post(
        "/v1/events",
        &submission(&proxy.tenant, contribution("c-marker", "1.00")),
    );
    assert_eq!(status, 202);
    let mut people = TopicReader::new("habitat.people");
    let ids = people.until(&proxy.codec, &proxy.tenant, "the marker", |events| {
        let ids: Vec<String> = events
            .iter()
            .map(|e| match e {
                Event::ContributionApproved(c) => c.contribution_id.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        ids.iter().any(|i| i == "c-marker").then_some(ids)
    });
    assert_eq!(ids, ["c-once", "c-marker"]);
}

#[test]
fn a_key_over_its_rate_gets_429_with_retry_after() {
    // Two a minute: the third request cannot have earned a new token.
    let proxy = start_with(&kafka().bootstrap, |state, _| {
        state.rate = Arc::new(RateLimit::per_minute(2));
    });
    let body = submission(&proxy.tenant, contribution("c-r", "1.00"));
    let statuses: Vec<(u16, Option<String>)> = (0..3)
        .map(|_| {
            let (status, retry, _) = proxy.post("/v1/events", &body);
            (status, retry)
        })
        .collect();
    assert_eq!(statuses[0].0, 202);
    assert_eq!(statuses[1].0, 202);
    assert_eq!(statuses[2].0, 429, "{statuses:?}");
    let retry: u64 = statuses[2]
        .1
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=31).contains(&retry), "{retry}");
}

/// A `ContributionApproved` in Avro's JSON encoding: decimals as byte strings (1234.50 is
/// 123450 unscaled = 01 E2 3A; 8.5000 is 85000 = 01 4C 08), unions wrapped.
fn avro_contribution(tenant: &str, id: &str, event_id: &str) -> Value {
    json!({
        "meta": {"event_id": event_id, "event_type": "people.ContributionApproved",
                 "schema_version": 1, "tenant_id": tenant,
                 "occurred_at": 1_770_000_000_000_000_i64, "producer": "connect:legacy",
                 "actor": {"string": "steward:ana"}, "correlation_id": event_id,
                 "causation_id": null},
        "contribution_id": id, "member_id": "m-1", "period_id": "2026",
        "kind": "LABOR", "quantity": "\u{0001}\u{004c}\u{0008}", "unit": "HOURS",
        "value": "\u{0001}\u{00e2}\u{003a}", "description": "barn roof", "status": "APPROVED",
        "submitted_by": "member:m-1", "submitted_at": 1_769_936_400_000_000_i64,
        "reviewed_by": {"string": "steward:ana"},
        "reviewed_at": {"long": 1_770_026_400_000_000_i64}
    })
}

#[test]
fn confluent_v3_records_are_checked_like_events_and_read_back_exactly() {
    let proxy = start(&kafka().bootstrap);
    let tenant = proxy.tenant.clone();

    // The cluster and the topics the proxy writes.
    let (status, body) = proxy.get("/v3/clusters");
    assert_eq!(status, 200, "{body}");
    let cluster = body["data"][0]["cluster_id"]
        .as_str()
        .expect("cluster id")
        .to_owned();
    let (status, body) = proxy.get(&format!("/v3/clusters/{cluster}/topics"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "KafkaTopicList");
    let topics: Vec<(String, i64)> = body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| {
            (
                t["topic_name"].as_str().unwrap_or_default().to_owned(),
                t["partitions_count"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    let partitions = i64::from(end_to_end::PARTITIONS);
    assert_eq!(
        topics,
        [
            ("habitat.agreements".to_owned(), partitions),
            ("habitat.people".to_owned(), partitions),
            ("habitat.treasury".to_owned(), partitions)
        ]
    );
    let (status, body) = proxy.get("/v3/clusters/elsewhere/topics");
    assert_eq!((status, body["error_code"].as_i64()), (404, Some(404)));

    // By subject (latest version): written, answered in Confluent's shape, read back exactly.
    let records = format!("/v3/clusters/{cluster}/topics/habitat.people/records");
    let subject = "habitat.people-habitat.people.ContributionApproved";
    let event_id = uuid::Uuid::now_v7().to_string();
    let request = json!({"value": {"type": "AVRO", "subject": subject,
                                   "data": avro_contribution(&tenant, "v3-1", &event_id)}});
    let (status, _, body) = proxy.post(&records, &request);
    assert_eq!(status, 200, "{body}");
    let key = format!("{tenant}/contribution/v3-1");
    let registered: Value = proxy.rt.block_on(async {
        reqwest::get(format!(
            "{}/subjects/{subject}/versions/latest",
            proxy.registry
        ))
        .await
        .expect("registry")
        .json()
        .await
        .expect("json")
    });
    assert_eq!(body["error_code"], 200);
    assert_eq!(body["cluster_id"], cluster.as_str());
    assert_eq!(body["topic_name"], "habitat.people");
    assert_eq!(
        body["partition_id"],
        habitat_runtime::partition_for(&key, end_to_end::PARTITIONS)
    );
    assert_eq!(body["key"], json!({"type": "STRING", "size": key.len()}));
    assert_eq!(body["value"]["schema_id"], registered["id"]);
    assert_eq!(body["value"]["subject"], subject);
    assert!(
        body["offset"].as_i64().is_some() && body["timestamp"].is_string(),
        "{body}"
    );
    let mut people = TopicReader::new("habitat.people");
    let read = people.until(&proxy.codec, &tenant, "the v3 record", |events| {
        events.first().cloned()
    });
    let Event::ContributionApproved(c) = &read else {
        panic!("{read:?}")
    };
    assert_eq!(c.value, rust_decimal::Decimal::new(123_450, 2));
    assert_eq!(c.quantity, rust_decimal::Decimal::new(85_000, 4));
    assert_eq!(
        c.reviewed_at.map(|t| t.timestamp_micros()),
        Some(1_770_026_400_000_000)
    );
    // The record's identity is stamped by the proxy, as on /v1/events; what the client
    // put there travels as headers only.
    assert_ne!(c.meta.event_id, event_id);
    let stamped = uuid::Uuid::parse_str(&c.meta.event_id).expect("a UUID");
    assert_eq!(stamped.get_version_num(), 7, "{stamped}");
    assert!(
        c.meta.producer.starts_with("rest:apps-"),
        "{}",
        c.meta.producer
    );
    assert!(
        c.meta.occurred_at.timestamp_micros() > 1_770_000_000_000_000,
        "not the client's occurred_at: {}",
        c.meta.occurred_at
    );
    assert_eq!(c.meta.tenant_id, tenant);
    let headers = &people.headers[0];
    for (name, value) in [
        ("habitat.client.event_id", event_id.as_str()),
        ("habitat.client.producer", "connect:legacy"),
    ] {
        assert!(
            headers.iter().any(|(n, v)| n == name && v == value),
            "{name}: {headers:?}"
        );
    }

    // By schema id, with the key and partition SPEC §3 gives it, and a header.
    let (status, _, body) = proxy.post(
        &records,
        &json!({"partition_id": habitat_runtime::partition_for(&format!("{tenant}/contribution/v3-2"), end_to_end::PARTITIONS),
                "key": {"type": "STRING", "data": format!("{tenant}/contribution/v3-2")},
                "headers": [{"name": "source", "value": "bGVnYWN5"}],
                "value": {"schema_id": registered["id"],
                          "data": avro_contribution(&tenant, "v3-2", &uuid::Uuid::now_v7().to_string())}}),
    );
    assert_eq!(status, 200, "{body}");

    // Refusals: numeric error codes, the path of the problem.
    let refusals = [
        (
            json!({"key": {"type": "STRING", "data": "mine"},
                   "value": {"subject": subject, "data": avro_contribution(&tenant, "v3-3", &event_id)}}),
            422,
            "key.data",
        ),
        (
            json!({"value": {"subject": "habitat.treasury-habitat.people.ContributionApproved",
                             "data": avro_contribution(&tenant, "v3-3", &event_id)}}),
            422,
            "value.subject",
        ),
        (
            json!({"value": {"subject": subject,
                             "data": {"meta": avro_contribution(&tenant, "v3-3", &event_id)["meta"]}}}),
            422,
            "value.data.contribution_id",
        ),
        (
            {
                let mut data = avro_contribution(&tenant, "v3-3", &event_id);
                data["reviewed_at"] = json!(1_770_026_400_000_000_i64);
                json!({"value": {"subject": subject, "data": data}})
            },
            422,
            "value.data.reviewed_at",
        ),
        (
            {
                let mut data = avro_contribution(&tenant, "v3-3", &event_id);
                data["value"] = json!("\u{00ff}\u{00ff}"); // -1 unscaled: -0.01
                json!({"value": {"subject": subject, "data": data}})
            },
            422,
            "value.data.value",
        ),
        (
            json!({"value": {"schema_id": 999_999, "data": {}}}),
            422,
            "value.schema_id",
        ),
        (
            json!({"headers": [{"name": "habitat.event_id", "value": "eA=="}],
                   "value": {"subject": subject, "data": avro_contribution(&tenant, "v3-3", &event_id)}}),
            422,
            "headers[0].name",
        ),
    ];
    for (request, status_expected, path) in refusals {
        let (status, _, body) = proxy.post(&records, &request);
        assert_eq!(status, status_expected, "{path}: {body}");
        assert_eq!(body["error_code"], status_expected, "{body}");
        assert_eq!(body["details"][0]["path"], path, "{body}");
    }
    let other = json!({"value": {"subject": subject,
                                 "data": avro_contribution("another-coop", "v3-4", &event_id)}});
    let (status, _, body) = proxy.post(&records, &other);
    assert_eq!(
        (status, body["error_code"].as_i64()),
        (403, Some(403)),
        "{body}"
    );
    let (status, _, body) = proxy.post(
        &format!("/v3/clusters/{cluster}/topics/habitat.people-member-changelog/records"),
        &request,
    );
    assert_eq!(
        (status, body["error_code"].as_i64()),
        (404, Some(40403)),
        "{body}"
    );
    let (status, _, body) = proxy.post_as(None, &records, b"{}".to_vec());
    assert_eq!(
        (status, body["error_code"].as_i64()),
        (401, Some(401)),
        "{body}"
    );

    // Two records written in all: v3-1 and v3-2.
    let ids = people.until(&proxy.codec, &tenant, "the second v3 record", |events| {
        (events.len() == 2).then(|| events.iter().map(|e| e.key()).collect::<Vec<_>>())
    });
    assert_eq!(
        ids,
        [
            format!("{tenant}/contribution/v3-1"),
            format!("{tenant}/contribution/v3-2")
        ]
    );
}

/// A journal entry: a processor's record (the distribution recorder's).
fn journal_entry(tenant: &str) -> Value {
    json!({"event_type": "treasury.TransactionPosted", "tenant_id": tenant,
           "payload": {"transaction_id": "forged-1", "posted_on": "2026-03-01",
                       "description": "cash to capital", "currency": "USD", "source": "manual",
                       "lines": [{"account": "1010", "member_id": null, "debit": "0.00", "credit": "1000000.00"},
                                 {"account": "3100", "member_id": "m-1", "debit": "1000000.00", "credit": "0.00"}]}})
}

#[test]
fn producers_write_only_the_records_they_own() {
    let proxy = start(&kafka().bootstrap);
    let tenant = proxy.tenant.clone();

    // One event, a batch holding one, and a v3 record: 403 not_writable naming the writer.
    let (status, _, body) = proxy.post("/v1/events", &journal_entry(&tenant));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error_code"], "not_writable");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("distribution-recorder")),
        "{body}"
    );
    assert_eq!(body["details"][0]["path"], "event_type");
    let opened = json!({"event_type": "treasury.PeriodOpened", "tenant_id": tenant,
                        "payload": {"period_id": "2026", "starts_on": "2026-01-01",
                                    "ends_on": "2026-12-31", "status": "OPEN",
                                    "currency": "USD"}});
    let (status, _, body) = proxy.post(
        "/v1/events:batch",
        &json!({"events": [opened.clone(), journal_entry(&tenant)]}),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        (
            body["error_code"].as_str(),
            body["details"][0]["path"].as_str()
        ),
        (Some("not_writable"), Some("events[1].event_type"))
    );
    let (status, body) = proxy.get("/v3/clusters");
    assert_eq!(status, 200, "{body}");
    let cluster = body["data"][0]["cluster_id"].as_str().expect("cluster");
    // The processor's record is registered (by its processor, in a real deployment).
    let subject = "habitat.treasury-habitat.treasury.CapitalAccountUpdated";
    let schema = contracts::records::CATALOG
        .iter()
        .find(|info| info.event_type == "treasury.CapitalAccountUpdated")
        .expect("in the catalog")
        .schema;
    let registered = proxy.rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/subjects/{subject}/versions", proxy.registry))
            .json(&json!({ "schema": schema }))
            .send()
            .await
            .expect("registry")
            .status()
    });
    assert!(registered.is_success(), "{registered}");
    let (status, _, body) = proxy.post(
        &format!("/v3/clusters/{cluster}/topics/habitat.treasury/records"),
        &json!({"value": {"subject": subject, "data": {}}}),
    );
    assert_eq!(
        (status, body["error_code"].as_i64()),
        (403, Some(403)),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("distribution-recorder")),
        "{body}"
    );

    // A key cannot be granted a processor's record.
    let refused = proxy.rt.block_on(keys::create(
        &proxy.pool,
        &unique("ledger"),
        std::slice::from_ref(&tenant),
        &["treasury.TransactionPosted".to_owned()],
    ));
    let Err(keys::CreateError::Refused(message)) = refused else {
        panic!("{refused:?}")
    };
    assert!(message.contains("distribution-recorder"), "{message}");

    // Nothing of the refused requests reached the topic: the next accepted event is the
    // first of this tenant there.
    let (status, _, body) = proxy.post("/v1/events", &opened);
    assert_eq!(status, 202, "{body}");
    let mut treasury = TopicReader::new("habitat.treasury");
    let types = treasury.until(&proxy.codec, &tenant, "the accepted event", |events| {
        (!events.is_empty()).then(|| events.iter().map(Event::event_type).collect::<Vec<_>>())
    });
    assert_eq!(types, ["treasury.PeriodOpened"]);
}

#[test]
fn an_answer_that_cannot_be_recorded_after_the_commit_is_still_the_real_result() {
    let proxy = start_with(&kafka().bootstrap, |state, _| {
        state.idempotency.wait = Duration::from_secs(1);
    });
    // The answer store refuses every answer (a claim still goes through).
    proxy
        .rt
        .block_on(
            sqlx::raw_sql(
                "CREATE FUNCTION refuse_answers() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.status IS NOT NULL THEN RAISE EXCEPTION 'the answer store is down'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_answers BEFORE UPDATE ON idempotency_keys
                 FOR EACH ROW EXECUTE FUNCTION refuse_answers();",
            )
            .execute(&proxy.pool),
        )
        .expect("trigger");
    let event = submission(&proxy.tenant, contribution("c-kept", "5.00"));
    let (status, _, first) = proxy.post_keyed("kept-1", "/v1/events", &event);
    assert_eq!(
        status, 202,
        "the write committed: never a 503 after it ({first})"
    );
    let accepted: Accepted = serde_json::from_value(first.clone()).expect("accepted");
    assert_eq!(
        accepted.key,
        format!("{}/contribution/c-kept", proxy.tenant)
    );

    // While the answer is unrecorded a retry is told to wait, and writes nothing.
    let (status, retry, body) = proxy.post_keyed("kept-1", "/v1/events", &event);
    assert_eq!(
        (status, body["error_code"].as_str()),
        (409, Some("idempotency_key_in_progress")),
        "{body}"
    );
    assert!(retry.is_some(), "Retry-After");

    // The store comes back: the answer is recorded in the background, and a retry gets it.
    proxy
        .rt
        .block_on(
            sqlx::raw_sql("DROP TRIGGER refuse_answers ON idempotency_keys").execute(&proxy.pool),
        )
        .expect("drop trigger");
    let again = test_support::wait_for(Duration::from_secs(30), "the recorded answer", || {
        let (status, _, body) = proxy.post_keyed("kept-1", "/v1/events", &event);
        (status == 202).then_some(body)
    });
    assert_eq!(again, first);

    // Written once: a marker after it, and c-kept exactly once before it.
    let (status, _, _) = proxy.post(
        "/v1/events",
        &submission(&proxy.tenant, contribution("c-marker", "1.00")),
    );
    assert_eq!(status, 202);
    let mut people = TopicReader::new("habitat.people");
    let keys = people.until(&proxy.codec, &proxy.tenant, "the marker", |events| {
        let keys: Vec<String> = events.iter().map(Event::key).collect();
        keys.iter().any(|k| k.ends_with("c-marker")).then_some(keys)
    });
    assert_eq!(
        keys,
        [
            format!("{}/contribution/c-kept", proxy.tenant),
            format!("{}/contribution/c-marker", proxy.tenant)
        ]
    );
}

#[test]
fn kept_answers_expire_and_are_purged() {
    let proxy = start_with(&kafka().bootstrap, |state, _| {
        state.idempotency.keep = Duration::from_secs(1);
    });
    let event = submission(&proxy.tenant, contribution("c-exp", "2.00"));
    let (status, _, first) = proxy.post_keyed("exp-1", "/v1/events", &event);
    assert_eq!(status, 202, "{first}");
    let count = |sql: &str| -> i64 {
        proxy
            .rt
            .block_on(sqlx::query_scalar(sql).fetch_one(&proxy.pool))
            .expect("count")
    };
    assert_eq!(
        count("SELECT count(*) FROM idempotency_keys WHERE expires_at IS NOT NULL"),
        1
    );
    let idempotency = rest_proxy::idempotency::Idempotency::new(proxy.pool.clone());
    let purged = test_support::wait_for(Duration::from_secs(10), "the answer to expire", || {
        let purged = proxy.rt.block_on(idempotency.purge()).expect("purge");
        (purged > 0).then_some(purged)
    });
    assert_eq!(purged, 1);
    assert_eq!(count("SELECT count(*) FROM idempotency_keys"), 0);

    // The key is free again: the same request is a new write.
    let (status, _, second) = proxy.post_keyed("exp-1", "/v1/events", &event);
    assert_eq!(status, 202, "{second}");
    assert_ne!(second["event_id"], first["event_id"]);
}

#[test]
fn tokens_are_shaped_before_any_query_and_failures_are_limited_per_address() {
    // A key store that cannot be reached: a token of the wrong shape is refused without a
    // query (401); a well-shaped one needs the store, so it is 503 with Retry-After.
    let closed = format!("postgres://habitat@127.0.0.1:{}/nowhere", devstack_port());
    let proxy = start_with(&kafka().bootstrap, |state, _| {
        let _runtime = shared().0.enter();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(&closed)
            .expect("lazy pool");
        state.keys = Arc::new(Keys::new(pool, Duration::from_secs(60)));
    });
    let body =
        serde_json::to_vec(&submission(&proxy.tenant, contribution("c-1", "1.00"))).expect("json");
    let (status, _, error) = proxy.post_as(Some("hsk_nope_nope"), "/v1/events", body.clone());
    assert_eq!(
        (status, error["error_code"].as_str()),
        (401, Some("unauthorized"))
    );
    let shaped = format!("hsk_{}_{}", "a".repeat(12), "b".repeat(64));
    let (status, retry, error) = proxy.post_as(Some(&shaped), "/v1/events", body.clone());
    assert_eq!(
        (status, error["error_code"].as_str()),
        (503, Some("store_unavailable")),
        "{error}"
    );
    assert!(retry.is_some(), "Retry-After");

    // Three failures a minute per address: the fourth is 429 without a lookup; a key
    // already known still passes; the cache holds no more than its bound.
    let keys = std::cell::OnceCell::new();
    let proxy = start_with(&kafka().bootstrap, |state, pool| {
        let bounded = Arc::new(
            Keys::new(pool.clone(), Duration::from_secs(60))
                .with_failure_limit(3)
                .with_cache_entries(20),
        );
        _ = keys.set(bounded.clone());
        state.keys = bounded;
    });
    let keys = keys.get().expect("keys");
    let body =
        serde_json::to_vec(&submission(&proxy.tenant, contribution("c-1", "1.00"))).expect("json");
    let (status, _, _) = proxy.post_as(Some(&proxy.token), "/v1/events", body.clone());
    assert_eq!(status, 202);
    let unknown = |i: usize| format!("hsk_{:012x}_{}", i, "c".repeat(64));
    let statuses: Vec<u16> = (0..4)
        .map(|i| {
            proxy
                .post_as(Some(&unknown(i)), "/v1/events", body.clone())
                .0
        })
        .collect();
    assert_eq!(statuses, [401, 401, 401, 429]);
    let (status, retry, error) = proxy.post_as(Some(&unknown(99)), "/v1/events", body.clone());
    assert_eq!(
        (status, error["error_code"].as_str()),
        (429, Some("too_many_failures"))
    );
    let retry: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!((1..=61).contains(&retry), "{retry}");
    let (status, _, body_ok) = proxy.post_as(Some(&proxy.token), "/v1/events", body.clone());
    assert_eq!(status, 202, "a cached key passes: {body_ok}");
    for i in 0..100 {
        _ = proxy
            .rt
            .block_on(keys.check(Some(&unknown(1000 + i)), None));
    }
    assert!(keys.cached() <= 20, "{} key ids cached", keys.cached());
}
