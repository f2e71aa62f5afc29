//! Idempotency keys: concurrent retries write once; answers are kept, recorded even after a failed first try, and expire.

use super::*;

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
