//! Events posted to `/v1/events`: read back exactly, refusals with their bodies, a broker that cannot be reached.

use super::*;

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
        metrics.contains(
            "habitat_http_requests_total{route=\"/v1/events\",status=\"202\",program=\"rest-proxy\"} 1"
        ),
        "{metrics}"
    );
    // Every request timed by its route template; the process's own metrics beside.
    let timed = devstack::process::metric_value(
        &metrics,
        "habitat_http_request_duration_seconds_count",
        &[("route", "/v1/events"), ("status", "202")],
    );
    assert_eq!(timed, Some(1.0), "{metrics}");
    assert!(
        devstack::process::metric_value(&metrics, "process_resident_memory_bytes", &[])
            .is_some_and(|bytes| bytes > 0.0),
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
