//! Registry credentials: writes (register, delete, set a compatibility level) need HTTP
//! Basic credentials; reads are open unless the registry is told otherwise; the operational
//! routes are always open; our own client registers with the credentials and is refused
//! without them.

use reqwest::{Client, StatusCode};
use schema_registry::access::Access;
use serde_json::{Value, json};
use test_support::{database, unique};

const SCHEMA: &str = r#"{"type": "record", "name": "Probe", "namespace": "habitat.test",
    "fields": [{"name": "n", "type": "long"}]}"#;

async fn registry(reads_need_credentials: bool) -> String {
    schema_registry::spawn_local_with(
        &database(),
        Access {
            credentials: Some("registry:s3cret".parse().expect("credentials")),
            reads_need_credentials,
        },
    )
    .await
    .expect("serve the registry")
}

/// A call with `user:password`, or none: its status, its `error_code` and its
/// `WWW-Authenticate`.
async fn call(
    url: &str,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
) -> (StatusCode, Option<i64>, Option<String>) {
    let mut request = Client::new()
        .request(method.parse().expect("method"), format!("{url}{path}"))
        .header("content-type", schema_registry::CONTENT_TYPE);
    if method != "GET" && method != "DELETE" {
        request = request.body(
            if path.starts_with("/config") {
                json!({"compatibility": "BACKWARD"})
            } else {
                json!({"schema": SCHEMA})
            }
            .to_string(),
        );
    }
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["error_code"].as_i64(), challenge)
}

#[tokio::test]
async fn writes_need_the_credentials_and_reads_are_open() {
    let url = registry(false).await;
    let subject = format!("{}-habitat.test.Probe", unique("topic"));
    let good = Some(("registry", "s3cret"));
    let writes = [
        ("PUT", format!("/config/{subject}")),
        ("POST", format!("/subjects/{subject}/versions")),
        ("PUT", "/config".to_owned()),
        ("DELETE", format!("/subjects/{subject}")),
    ];
    for (method, path) in &writes {
        for auth in [None, Some(("registry", "wrong")), Some(("other", "s3cret"))] {
            let (status, code, challenge) = call(&url, method, path, auth).await;
            assert_eq!(
                (status, code),
                (StatusCode::UNAUTHORIZED, Some(40101)),
                "{method} {path} with {auth:?}"
            );
            assert_eq!(
                challenge.as_deref(),
                Some("Basic realm=\"schema-registry\"")
            );
        }
    }
    // Nothing was written by the refused calls.
    let (status, code, _) = call(&url, "GET", &format!("/subjects/{subject}/versions"), None).await;
    assert_eq!((status, code), (StatusCode::NOT_FOUND, Some(40401)));
    // With the credentials each write goes through.
    for (method, path) in &writes {
        let (status, _, _) = call(&url, method, path, good).await;
        assert!(status.is_success(), "{method} {path}: {status}");
    }
    // Reads, lookups and compatibility checks are open.
    let (status, _, _) = call(&url, "POST", &format!("/subjects/{subject}/versions"), good).await;
    assert!(status.is_success());
    for (method, path) in [
        ("GET", "/subjects".to_owned()),
        ("GET", format!("/subjects/{subject}/versions")),
        ("POST", format!("/subjects/{subject}")),
        (
            "POST",
            format!("/compatibility/subjects/{subject}/versions/latest"),
        ),
        ("GET", "/config".to_owned()),
    ] {
        let (status, _, _) = call(&url, method, &path, None).await;
        assert!(status.is_success(), "{method} {path}: {status}");
    }
}

#[tokio::test]
async fn reads_need_the_credentials_when_told_and_operations_stay_open() {
    let url = registry(true).await;
    let (status, code, _) = call(&url, "GET", "/subjects", None).await;
    assert_eq!((status, code), (StatusCode::UNAUTHORIZED, Some(40101)));
    let (status, _, _) = call(&url, "GET", "/subjects", Some(("registry", "s3cret"))).await;
    assert_eq!(status, StatusCode::OK);
    let http = Client::new();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = http.get(format!("{url}{path}")).send().await.expect("get");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "habitat_http_requests_total{route=\"/subjects\",status=\"401\",program=\"schema-registry\"} 1",
        "habitat_http_requests_total{route=\"/subjects\",status=\"200\",program=\"schema-registry\"} 1",
        "process_resident_memory_bytes ",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[test]
fn the_codec_registers_with_the_credentials_and_is_refused_without() {
    use contracts::records::Event;
    use habitat_runtime::{Codec, CodecError, avro::AvroCodec};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let url = rt.block_on(registry(false));
    let event: Event = serde_json::from_value::<contracts::records::MemberRegistered>(json!({
        "meta": {"event_id": "0190a0a0-0000-7000-8000-000000000000",
                 "event_type": "people.MemberRegistered", "schema_version": 1,
                 "tenant_id": "coop-a", "occurred_at": "2026-01-01T00:00:00Z",
                 "producer": "test", "correlation_id": "c"},
        "member_id": "m-1", "display_name": "Ana", "joined_on": "2026-01-01",
        "status": "ACTIVE"}))
    .expect("a record")
    .into();
    let open = AvroCodec::new(&url, rt.handle().clone()).expect("codec");
    let refused = std::thread::scope(|s| {
        s.spawn(|| open.encode("habitat.people", &event))
            .join()
            .expect("thread")
    });
    assert!(
        matches!(&refused, Err(CodecError::Unauthorized(m)) if m.contains("401") && m.contains("HABITAT_SCHEMA_REGISTRY_AUTH")),
        "{refused:?}"
    );
    let auth = "registry:s3cret".parse().expect("auth");
    let codec = AvroCodec::with_auth(&url, Some(&auth), rt.handle().clone()).expect("codec");
    let encoded = std::thread::scope(|s| {
        s.spawn(|| codec.encode("habitat.people", &event))
            .join()
            .expect("thread")
    })
    .expect("registered and encoded");
    let decoded = std::thread::scope(|s| {
        s.spawn(|| open.decode("habitat.people", &encoded))
            .join()
            .expect("thread")
    })
    .expect("read without credentials");
    assert_eq!(decoded, event);
}
