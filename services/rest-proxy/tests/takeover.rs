//! An `Idempotency-Key` claimed by a proxy that dies before it answers does not stay
//! claimed: the proxy is SIGKILLed between its claim and its answer (its broker never
//! answers, so the request is held there), and a retry with the same key on a new proxy
//! takes the claim over and writes the event once.

use std::time::Duration;

use devstack::process::{free_port, signal, wait_for_tcp};
use end_to_end::{Running, TopicReader};
use rest_proxy::keys::{self, ANY};
use serde_json::{Value, json};
use test_support::{kafka, unique, wait_for};

fn proxy(registry: &str, database: &str, bootstrap: &str, port: u16) -> Running {
    let running = Running::start(
        "rest-proxy",
        registry,
        &[
            ("HABITAT_LISTEN", format!("127.0.0.1:{port}")),
            ("HABITAT_DATABASE_URL", database.to_owned()),
            ("HABITAT_BOOTSTRAP_SERVERS", bootstrap.to_owned()),
            ("HABITAT_IDEMPOTENCY_TAKEOVER_SECONDS", "3".to_owned()),
        ],
    );
    wait_for_tcp(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        Duration::from_secs(60),
    )
    .expect("the proxy listens");
    running
}

/// Posts `body` with the Idempotency-Key `order-17`.
async fn post(port: u16, token: &str, body: &Value) -> Result<(u16, Value), reqwest::Error> {
    post_with(port, token, body, Some("order-17")).await
}

async fn post_with(
    port: u16,
    token: &str,
    body: &Value,
    idempotency: Option<&str>,
) -> Result<(u16, Value), reqwest::Error> {
    let mut request = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/events"))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = idempotency {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[test]
fn a_claim_left_by_a_killed_proxy_is_taken_over_and_written_once() {
    let rt = end_to_end::runtime();
    let (registry, codec) = end_to_end::stack(&rt);
    let database = test_support::database();
    let pool = rt.block_on(keys::connect(&database)).expect("key store");
    let tenant = unique("coop");
    let (_, token) = rt
        .block_on(keys::create(
            &pool,
            "apps",
            std::slice::from_ref(&tenant),
            &[ANY.to_owned()],
        ))
        .expect("key");
    let event = json!({"event_type": "people.MemberRegistered", "tenant_id": tenant,
                       "payload": {"member_id": "m-1", "display_name": "Ana",
                                   "joined_on": "2026-01-01", "status": "ACTIVE"}});

    // A broker that accepts connections and never answers: the request waits there.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    let port = free_port().expect("port");
    let first = proxy(&registry, &database, &silent_addr, port);
    let request = {
        let (token, event) = (token.clone(), event.clone());
        rt.spawn(async move { post(port, &token, &event).await })
    };
    wait_for(Duration::from_secs(30), "the claim", || {
        let claims: i64 = rt
            .block_on(
                sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE status IS NULL")
                    .fetch_one(&pool),
            )
            .expect("count");
        (claims == 1).then_some(())
    });
    assert!(signal(first.pid(), libc::SIGKILL), "SIGKILL");
    drop(first);
    assert!(
        rt.block_on(request).expect("task").is_err(),
        "the killed proxy answered"
    );

    // A new proxy: the retry takes the claim over once it is older than any write.
    let port = free_port().expect("port");
    let _second = proxy(&registry, &database, &kafka().bootstrap, port);
    let (status, answer) = rt.block_on(post(port, &token, &event)).expect("retry");
    assert_eq!(status, 202, "{answer}");
    let (status, again) = rt
        .block_on(post(port, &token, &event))
        .expect("second retry");
    assert_eq!((status, &again), (202, &answer));

    // Written once: a marker after it, and the retried event alone before it.
    let marker = json!({"event_type": "people.MemberRegistered", "tenant_id": tenant,
                        "payload": {"member_id": "m-marker", "display_name": "Marker",
                                    "joined_on": "2026-01-01", "status": "ACTIVE"}});
    let (status, marked) = rt
        .block_on(post_with(port, &token, &marker, None))
        .expect("marker");
    assert_eq!(status, 202, "{marked}");
    let mut people = TopicReader::new("habitat.people");
    let ids = people.until(&codec, &tenant, "the marker", |events| {
        let ids: Vec<String> = events.iter().map(|e| e.meta().event_id.clone()).collect();
        ids.iter()
            .any(|id| *id == marked["event_id"])
            .then_some(ids)
    });
    let id = |answer: &Value| answer["event_id"].as_str().expect("event id").to_owned();
    assert_eq!(ids, [id(&answer), id(&marked)]);
}
