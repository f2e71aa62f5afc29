//! The sink waits out Postgres: its own Postgres is shut down as a crash would (immediate
//! shutdown) while records keep coming, then started again. The sink is not restarted; it
//! reports the database unreachable and itself not ready meanwhile, and afterwards every
//! record is in `event_log` exactly once.

mod common;

use common::{Post, Stack, post};
use devstack::{
    postgres::throwaway_cluster,
    process::{free_port, http_get, metric_value},
};
use std::time::Duration;
use test_support::{scratch_dir, unique, wait_for};

const LONG: Duration = Duration::from_secs(180);

fn database_up(port: u16) -> Option<f64> {
    metric_value(
        &http_get(port, "/metrics")?,
        "habitat_dependency_up",
        &[("dependency", "database")],
    )
}

#[test]
fn the_sink_waits_out_a_postgres_crash_and_writes_everything_once() {
    let dir = scratch_dir().join(unique("sink-pg-outage"));
    let (cluster, _stop) = throwaway_cluster(&dir, "sink").expect("a Postgres of its own");
    let stack = Stack::with_database(cluster.url("sink"));
    let metrics = free_port().expect("port");
    let mut sink = stack.sink_with(&[("HABITAT_METRICS_LISTEN", format!("127.0.0.1:{metrics}"))]);

    let mut coop = common::Coop::new(&unique("outage"));
    let members: Vec<Post> = (0..200)
        .map(|i| coop.member(&format!("m{i}"), &format!("Member {i}")).into())
        .collect();
    post(&stack.codec, &members[..100]);
    stack.caught_up();
    assert_eq!(database_up(metrics), Some(1.0));

    cluster.stop_immediately().expect("crash Postgres");
    post(&stack.codec, &members[100..]);
    wait_for(LONG, "the sink to find the database unreachable", || {
        (database_up(metrics)? == 0.0).then_some(())
    });
    let ready = http_get(metrics, "/readyz").unwrap_or_default();
    assert!(
        ready.starts_with("not ready: database unreachable"),
        "{ready}"
    );
    assert!(sink.is_running(), "the sink exited while Postgres was down");
    cluster.start().expect("restart Postgres");

    stack.caught_up();
    wait_for(LONG, "the sink ready again", || {
        http_get(metrics, "/readyz")?
            .starts_with("ready")
            .then_some(())
    });
    assert!(sink.is_running(), "the sink is still running");
    let (rows, distinct): (i64, i64) = stack.query(
        sqlx::query_as(
            "SELECT count(*), count(DISTINCT event_id) FROM event_log WHERE tenant_id = $1",
        )
        .bind(&coop.tenant)
        .fetch_one(&stack.pool),
    );
    assert_eq!((rows, distinct), (200, 200));
}
