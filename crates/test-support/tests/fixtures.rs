//! The fixtures themselves: a shared Postgres with a fresh database per test, and waits
//! that return as soon as their condition holds.

use std::time::Duration;

use test_support::{database, postgres, wait_for};

fn psql(url: &str, sql: &str) -> String {
    let output = postgres()
        .cluster
        .client("psql")
        .args([
            "-d",
            url.rsplit('/').next().expect("database name"),
            "-tAc",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[test]
fn each_test_gets_its_own_empty_database() {
    let first = database();
    let second = database();
    assert_ne!(first, second);
    _ = psql(&first, "CREATE TABLE marker (id int)");
    assert_eq!(
        psql(
            &first,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'"
        ),
        "1"
    );
    assert_eq!(
        psql(
            &second,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'"
        ),
        "0"
    );
}

#[test]
fn wait_for_returns_the_first_value_that_holds() {
    let mut calls = 0;
    let value = wait_for(Duration::from_secs(5), "the third call", || {
        calls += 1;
        (calls == 3).then_some(calls * 10)
    });
    assert_eq!(value, 30);
}

#[test]
#[should_panic(expected = "timed out after 50ms waiting for something that never holds")]
fn wait_for_fails_with_what_it_waited_for() {
    wait_for(
        Duration::from_millis(50),
        "something that never holds",
        || None::<()>,
    );
}
