//! API keys: bound to tenants and event types, revocable, rate-limited, shaped before any query; a producer writes only the records it owns.

use super::*;

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
