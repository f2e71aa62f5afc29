//! Confluent REST v3 records: checked like events and read back exactly.

use super::*;

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
