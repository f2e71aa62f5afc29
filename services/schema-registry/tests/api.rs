//! The registry's REST API on a real Postgres, served over HTTP: every endpoint, the
//! Confluent error codes, all seven compatibility levels, stable ids, and interop with
//! `schema_registry_converter`.

use reqwest::{Client, StatusCode};
use schema_registry::CONTENT_TYPE;
use serde_json::{Value, json};
use test_support::{database, unique};

struct Registry {
    url: String,
    database_url: String,
    http: Client,
}

impl Registry {
    async fn start() -> Self {
        let database_url = database();
        Self {
            url: schema_registry::spawn_local(&database_url)
                .await
                .expect("serve the registry"),
            database_url,
            http: Client::new(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(
                method.parse().expect("method"),
                format!("{}{path}", self.url),
            )
            .header("content-type", CONTENT_TYPE);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(content_type, CONTENT_TYPE, "{method} {path}");
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn register(&self, subject: &str, schema: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/subjects/{subject}/versions"),
            Some(json!({ "schema": schema })),
        )
        .await
    }

    async fn set_level(&self, subject: &str, level: &str) {
        let (status, body) = self
            .call(
                "PUT",
                &format!("/config/{subject}"),
                Some(json!({ "compatibility": level })),
            )
            .await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({ "compatibility": level }))
        );
    }
}

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"R","namespace":"test","fields":[{fields}]}}"#)
}

const A: &str = r#"{"name":"a","type":"string"}"#;
const B_DEFAULT: &str = r#"{"name":"b","type":"int","default":0}"#;
const B: &str = r#"{"name":"b","type":"int"}"#;

#[tokio::test]
async fn register_read_back_and_ids_are_global_and_stable() {
    let registry = Registry::start().await;
    let (s1, s2) = (unique("s1"), unique("s2"));
    let v1 = record(A);

    let (status, body) = registry.register(&s1, &v1).await;
    assert_eq!(status, StatusCode::OK);
    let id = body["id"].as_i64().expect("id");
    assert_eq!(
        registry.register(&s1, &v1).await.1,
        json!({ "id": id }),
        "same schema, same id"
    );
    assert_eq!(
        registry.register(&s2, &v1).await.1,
        json!({ "id": id }),
        "ids are global"
    );
    assert_eq!(
        registry
            .call("GET", &format!("/subjects/{s1}/versions"), None)
            .await
            .1,
        json!([1])
    );

    let (_, subjects) = registry.call("GET", "/subjects", None).await;
    assert!(subjects.as_array().unwrap().contains(&json!(s1)));
    for version in ["1", "latest"] {
        let (status, body) = registry
            .call("GET", &format!("/subjects/{s1}/versions/{version}"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({ "subject": s1, "version": 1, "id": id, "schema": v1 })
        );
    }
    let (_, raw) = registry
        .call("GET", &format!("/subjects/{s1}/versions/1/schema"), None)
        .await;
    assert_eq!(raw, serde_json::from_str::<Value>(&v1).unwrap());
    assert_eq!(
        registry
            .call("GET", &format!("/schemas/ids/{id}"), None)
            .await
            .1,
        json!({ "schema": v1 })
    );
    let (_, versions) = registry
        .call("GET", &format!("/schemas/ids/{id}/versions"), None)
        .await;
    assert_eq!(versions.as_array().unwrap().len(), 2);

    let (_, other) = registry
        .register(&s1, &record(&format!("{A},{B_DEFAULT}")))
        .await;
    assert_ne!(other["id"], json!(id));
    assert_eq!(
        registry
            .call("GET", &format!("/subjects/{s1}/versions"), None)
            .await
            .1,
        json!([1, 2])
    );

    // A registry restarted on the same database answers the same ids.
    let restarted = Registry {
        url: schema_registry::spawn_local(&registry.database_url)
            .await
            .expect("serve the registry again"),
        database_url: registry.database_url.clone(),
        http: Client::new(),
    };
    assert_eq!(restarted.register(&s1, &v1).await.1, json!({ "id": id }));
    assert_eq!(
        restarted
            .call("GET", &format!("/schemas/ids/{id}"), None)
            .await
            .1,
        json!({ "schema": v1 })
    );
}

#[tokio::test]
async fn confluent_error_codes() {
    let registry = Registry::start().await;
    let subject = unique("errors");
    let expect = |(status, body): (StatusCode, Value), want_status: StatusCode, code: u64| {
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error_code"], json!(code), "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    expect(
        registry
            .call("GET", &format!("/subjects/{subject}/versions"), None)
            .await,
        StatusCode::NOT_FOUND,
        40401,
    );
    _ = registry.register(&subject, &record(A)).await;
    expect(
        registry
            .call("GET", &format!("/subjects/{subject}/versions/7"), None)
            .await,
        StatusCode::NOT_FOUND,
        40402,
    );
    expect(
        registry.call("GET", "/schemas/ids/999999", None).await,
        StatusCode::NOT_FOUND,
        40403,
    );
    expect(
        registry
            .register(&subject, r#"{"type":"record","name":"R"}"#)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42201,
    );
    expect(
        registry
            .call("GET", &format!("/subjects/{subject}/versions/abc"), None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42202,
    );
    expect(
        registry
            .call(
                "PUT",
                "/config",
                Some(json!({ "compatibility": "SIDEWAYS" })),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42203,
    );
    expect(
        registry
            .register(&subject, &record(&format!("{A},{B}")))
            .await,
        StatusCode::CONFLICT,
        409,
    );
}

/// Registers v1, v2, v3 under `level`; returns whether v3 was accepted.
async fn third_version_accepted(
    registry: &Registry,
    level: &str,
    v1: &str,
    v2: &str,
    v3: &str,
) -> bool {
    let subject = unique("level");
    registry.set_level(&subject, level).await;
    assert_eq!(
        registry.register(&subject, &record(v1)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        registry.register(&subject, &record(v2)).await.0,
        StatusCode::OK,
        "{level}"
    );
    let (status, body) = registry.register(&subject, &record(v3)).await;
    match status {
        StatusCode::OK => true,
        StatusCode::CONFLICT => {
            assert_eq!(body["error_code"], json!(409));
            false
        }
        other => panic!("{level}: {other} {body}"),
    }
}

#[tokio::test]
async fn all_seven_compatibility_levels() {
    let registry = Registry::start().await;
    let a_b_default = format!("{A},{B_DEFAULT}");
    let a_b = format!("{A},{B}");
    // v3 adds a required field: reads v2 data (which has it) but not v1 data.
    let add_required = (A, a_b_default.as_str(), a_b.as_str());
    assert!(
        third_version_accepted(
            &registry,
            "BACKWARD",
            add_required.0,
            add_required.1,
            add_required.2
        )
        .await
    );
    assert!(
        !third_version_accepted(
            &registry,
            "BACKWARD_TRANSITIVE",
            add_required.0,
            add_required.1,
            add_required.2
        )
        .await
    );
    // v3 drops a field: v2 (with a default) still reads it, v1 (no default) cannot.
    let drop_field = (a_b.as_str(), a_b_default.as_str(), A);
    assert!(
        third_version_accepted(
            &registry,
            "FORWARD",
            drop_field.0,
            drop_field.1,
            drop_field.2
        )
        .await
    );
    assert!(
        !third_version_accepted(
            &registry,
            "FORWARD_TRANSITIVE",
            drop_field.0,
            drop_field.1,
            drop_field.2
        )
        .await
    );
    assert!(
        third_version_accepted(&registry, "FULL", drop_field.0, drop_field.1, drop_field.2).await
    );
    assert!(
        !third_version_accepted(
            &registry,
            "FULL_TRANSITIVE",
            drop_field.0,
            drop_field.1,
            drop_field.2
        )
        .await
    );
    // NONE accepts even a changed type.
    let changed = r#"{"name":"a","type":"long"}"#;
    assert!(third_version_accepted(&registry, "NONE", A, A, changed).await);
    assert!(!third_version_accepted(&registry, "FULL", A, A, changed).await);
}

#[tokio::test]
async fn config_lookup_compatibility_check_and_soft_delete() {
    let registry = Registry::start().await;
    let subject = unique("misc");
    let (status, body) = registry
        .call("GET", &format!("/config/{subject}"), None)
        .await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40408))
    );
    registry.set_level(&subject, "BACKWARD_TRANSITIVE").await;
    assert_eq!(
        registry
            .call("GET", &format!("/config/{subject}"), None)
            .await
            .1,
        json!({ "compatibilityLevel": "BACKWARD_TRANSITIVE" })
    );
    let (_, global) = registry.call("GET", "/config", None).await;
    assert!(global["compatibilityLevel"].is_string());

    let v1 = record(A);
    let id = registry.register(&subject, &v1).await.1["id"].clone();
    let (status, found) = registry
        .call(
            "POST",
            &format!("/subjects/{subject}"),
            Some(json!({ "schema": v1 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        found,
        json!({ "subject": subject, "version": 1, "id": id, "schema": v1 })
    );
    let (status, body) = registry
        .call(
            "POST",
            &format!("/subjects/{subject}"),
            Some(json!({ "schema": record(B) })),
        )
        .await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40403))
    );

    let (status, verdict) = registry
        .call(
            "POST",
            &format!("/compatibility/subjects/{subject}/versions/latest?verbose=true"),
            Some(json!({ "schema": record(&format!("{A},{B}")) })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verdict["is_compatible"], json!(false));
    let messages = verdict["messages"].as_array().expect("messages");
    assert!(
        messages[0].as_str().unwrap().contains("BACKWARD"),
        "{verdict}"
    );
    let (_, verdict) = registry
        .call(
            "POST",
            &format!("/compatibility/subjects/{subject}/versions/1"),
            Some(json!({ "schema": record(&format!("{A},{B_DEFAULT}")) })),
        )
        .await;
    assert_eq!(verdict, json!({ "is_compatible": true }));

    assert_eq!(
        registry
            .call("DELETE", &format!("/subjects/{subject}"), None)
            .await
            .1,
        json!([1])
    );
    let (status, body) = registry
        .call("GET", &format!("/subjects/{subject}/versions"), None)
        .await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40401))
    );
    let (_, subjects) = registry.call("GET", "/subjects", None).await;
    assert!(!subjects.as_array().unwrap().contains(&json!(subject)));
    // Registering again after a soft delete: same id, next version number.
    assert_eq!(registry.register(&subject, &v1).await.1["id"], id);
    assert_eq!(
        registry
            .call("GET", &format!("/subjects/{subject}/versions"), None)
            .await
            .1,
        json!([2])
    );
}

#[tokio::test]
async fn schema_registry_converter_encodes_through_the_registry_and_decodes_by_id() {
    use apache_avro::types::Value as Avro;
    use contracts::{
        AvroType, EventRecord,
        records::{MemberRegistered, MemberStatus, Meta},
        wire,
    };
    use schema_registry_converter::{
        async_impl::{
            avro::{AvroDecoder, AvroEncoder},
            schema_registry::SrSettings,
        },
        schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema},
    };

    let registry = Registry::start().await;
    let settings = SrSettings::new(registry.url.clone());
    let topic = "habitat.people";
    let member = MemberRegistered {
        meta: Meta {
            event_id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
            event_type: MemberRegistered::EVENT_TYPE.into(),
            schema_version: 1,
            tenant_id: "coop-a".into(),
            occurred_at: chrono::DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap(),
            producer: "rest:test".into(),
            actor: Some("steward:ana".into()),
            correlation_id: "corr-1".into(),
            causation_id: None,
        },
        member_id: "m-1".into(),
        display_name: "Ana".into(),
        joined_on: chrono::NaiveDate::from_ymd_opt(2024, 1, 31).unwrap(),
        status: MemberStatus::Active,
        email: None,
    };
    let Avro::Record(fields) = member.to_value().expect("to value") else {
        panic!("a record");
    };
    let strategy = SubjectNameStrategy::TopicRecordNameStrategyWithSchema(
        topic.into(),
        SuppliedSchema::new(
            Some(MemberRegistered::FULL_NAME.into()),
            SchemaType::Avro,
            MemberRegistered::SCHEMA.into(),
        ),
    );
    let bytes = AvroEncoder::new(settings.clone())
        .encode(
            fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect(),
            strategy,
        )
        .await
        .expect("encode through the registry");

    // Registered under TopicRecordNameStrategy, framed in the Confluent wire format.
    let subject = wire::subject(topic, MemberRegistered::FULL_NAME);
    let (_, latest) = registry
        .call("GET", &format!("/subjects/{subject}/versions/latest"), None)
        .await;
    let (id, payload) = wire::unframe(&bytes).expect("wire format");
    assert_eq!(latest["id"], json!(id));

    // Decoded by id with the converter, and with our own types.
    let decoded = AvroDecoder::new(settings)
        .decode(Some(&bytes))
        .await
        .expect("decode");
    assert_eq!(
        MemberRegistered::from_value(decoded.value).expect("typed"),
        member
    );
    let writer = apache_avro::Schema::parse_str(latest["schema"].as_str().unwrap()).unwrap();
    assert_eq!(
        MemberRegistered::from_avro_bytes(payload, &writer).expect("ours"),
        member
    );
}

#[tokio::test]
async fn confluents_dialect_booleans_in_any_case_and_every_refusal_in_json() {
    let registry = Registry::start().await;
    let subject = unique("dialect");
    let (status, _) = registry
        .call(
            "POST",
            &format!("/subjects/{subject}/versions?normalize=False"),
            Some(json!({ "schema": record(A) })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Python's spelling of booleans, as confluent-kafka sends them.
    let (status, verdict) = registry
        .call(
            "POST",
            &format!(
                "/compatibility/subjects/{subject}/versions/latest?normalize=False&verbose=False"
            ),
            Some(json!({ "schema": record(&format!("{A},{B_DEFAULT}")) })),
        )
        .await;
    assert_eq!(
        (status, verdict),
        (StatusCode::OK, json!({ "is_compatible": true }))
    );
    let (status, verdict) = registry
        .call(
            "POST",
            &format!("/compatibility/subjects/{subject}/versions?normalize=false&verbose=TRUE"),
            Some(json!({ "schema": record(&format!("{A},{B}")) })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verdict["is_compatible"], json!(false));
    assert!(
        verdict["messages"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "{verdict}"
    );

    for (method, path, status, code) in [
        (
            "GET",
            "/nowhere".to_owned(),
            StatusCode::NOT_FOUND,
            json!(404),
        ),
        (
            "GET",
            "/schemas/ids/abc".to_owned(),
            StatusCode::NOT_FOUND,
            json!(40403),
        ),
        (
            "PUT",
            format!("/subjects/{subject}/versions"),
            StatusCode::METHOD_NOT_ALLOWED,
            json!(405),
        ),
        (
            "DELETE",
            format!("/subjects/{subject}/versions/1?permanent=True"),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!(42206),
        ),
    ] {
        let (got, body) = registry.call(method, &path, None).await;
        assert_eq!(
            (got, body["error_code"].clone()),
            (status, code),
            "{method} {path}: {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }

    // A version soft-deleted: gone from the live list, listed with deleted=true.
    assert_eq!(
        registry
            .call("DELETE", &format!("/subjects/{subject}/versions/1"), None)
            .await,
        (StatusCode::OK, json!(1))
    );
    let (status, body) = registry
        .call("GET", &format!("/subjects/{subject}/versions"), None)
        .await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (StatusCode::NOT_FOUND, json!(40401))
    );
    assert_eq!(
        registry
            .call(
                "GET",
                &format!("/subjects/{subject}/versions?deleted=True"),
                None
            )
            .await,
        (StatusCode::OK, json!([1]))
    );
}
