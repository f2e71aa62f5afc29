//! Instances of the sink starting together on a new database each create the schema and
//! migrate it; none of them fails because another got there first.

use sqlx::Connection;

#[test]
fn instances_starting_at_once_all_migrate() {
    let url = test_support::database();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for round in 0..8 {
            let schema = format!("habitat_{round}");
            // Four connections at once, interleaved on this task.
            let migrate = || postgres_sink::store::migrate(&url, &schema);
            let (a, b, c, d) = tokio::join!(migrate(), migrate(), migrate(), migrate());
            for result in [a, b, c, d] {
                result.unwrap_or_else(|e| panic!("round {round}: {e:#}"));
            }
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            let tables: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1
                    AND table_name IN ('event_log', 'sink_offsets', 'contributions')",
            )
            .bind(&schema)
            .fetch_one(&mut conn)
            .await
            .expect("tables");
            assert_eq!(tables, 3, "round {round}");
        }
    });
}

/// A schema written before migration 0010 keeps its log: the payloads become `json` with
/// the same content, the key compares the partition and offset first, and `exceptions`
/// still lists a refusal read from the log's payload.
#[tokio::test]
async fn the_log_payload_becomes_json_with_its_rows() {
    let url = test_support::database();
    let schema = "habitat_before_json";
    let older = std::env::temp_dir().join(format!("habitat-migrations-{}", std::process::id()));
    std::fs::create_dir_all(&older).expect("a directory");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(&source).expect("the migrations") {
        let path = entry.expect("a migration").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name < "0010" {
            _ = std::fs::copy(&path, older.join(name)).expect("a copy");
        }
    }
    let before = sqlx::migrate::Migrator::new(older.as_path())
        .await
        .expect("the older migrations");
    let mut conn = postgres_sink::store::prepare_schema(&url, schema, 1, &before)
        .await
        .expect("the schema before 0010");
    std::fs::remove_dir_all(&older).expect("removed");
    let refused = r#"{"period_id": "2026", "status": "APPROVAL_REJECTED", "reason": "hash \"x\" unknown", "decision_event_id": "d-1", "amounts": [1.50, 2]}"#;
    for (offset, event_type, payload) in [
        (
            0_i64,
            "agreements.AllocationSetStatusChanged",
            Some(refused),
        ),
        (
            1,
            "people.MemberRegistered",
            Some(r#"{"member_id": "m-1"}"#),
        ),
        (2, "people.MemberRegistered", None),
    ] {
        _ = sqlx::query(
            "INSERT INTO event_log (source_topic, source_partition, source_offset, record_key,
                                    event_type, tenant_id, occurred_at, payload)
             VALUES ('habitat.agreements', 0, $1, 'coop/set/2026', $2, 'coop', now(), $3::jsonb)",
        )
        .bind(offset)
        .bind(event_type)
        .bind(payload)
        .execute(&mut conn)
        .await
        .expect("a log row");
    }
    let kept: Vec<Option<String>> =
        sqlx::query_scalar("SELECT payload::text FROM event_log ORDER BY source_offset")
            .fetch_all(&mut conn)
            .await
            .expect("the log");
    conn.close().await.expect("closed");

    postgres_sink::store::migrate(&url, schema)
        .await
        .expect("migrated");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let ty: String = sqlx::query_scalar(
        "SELECT data_type FROM information_schema.columns
          WHERE table_schema = $1 AND table_name = 'event_log' AND column_name = 'payload'",
    )
    .bind(schema)
    .fetch_one(&mut conn)
    .await
    .expect("the column");
    assert_eq!(ty, "json");
    let key: String = sqlx::query_scalar(&format!(
        "SELECT pg_get_indexdef('{schema}.event_log_pkey'::regclass)"
    ))
    .fetch_one(&mut conn)
    .await
    .expect("the log's key");
    assert!(
        key.ends_with("(source_partition, source_offset, source_topic)"),
        "{key}"
    );
    let now: Vec<Option<String>> = sqlx::query_scalar(&format!(
        "SELECT payload::text FROM {schema}.event_log ORDER BY source_offset"
    ))
    .fetch_all(&mut conn)
    .await
    .expect("the log");
    assert_eq!(now, kept, "the payloads' text as JSONB printed it");
    let listed: Vec<(String, Option<String>, Option<String>, String)> = sqlx::query_as(&format!(
        "SELECT kind, period_id, subject, detail FROM {schema}.exceptions"
    ))
    .fetch_all(&mut conn)
    .await
    .expect("the exceptions");
    assert_eq!(
        listed,
        vec![(
            "APPROVAL_REJECTED".to_owned(),
            Some("2026".to_owned()),
            Some("d-1".to_owned()),
            "hash \"x\" unknown".to_owned()
        )]
    );
}
