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
