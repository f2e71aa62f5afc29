//! The committed sqlx query cache (`.sqlx/`, what the query macros compile against
//! offline) still describes the migrated schema: every cached query is described again by
//! Postgres and must give the same parameters, columns, types and nullability. When this
//! fails, run `scripts/sqlx-prepare` and commit `.sqlx/`.

use std::path::Path;

use sqlx::{Column, Connection, Either, Executor, PgConnection, TypeInfo};

fn normalise(name: &str) -> String {
    name.to_ascii_uppercase().replace("[]", "ARRAY")
}

#[test]
fn query_cache_matches_the_migrations() {
    let url = test_support::database();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        postgres_sink::store::migrate(&url, "habitat")
            .await
            .expect("migrate");
        let mut conn = PgConnection::connect_with(
            &postgres_sink::store::options(&url, "habitat").expect("url"),
        )
        .await
        .expect("connect");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.sqlx");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect(".sqlx exists") {
            let path = entry.expect("entry").path();
            let cached: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
            let query = cached["query"].as_str().expect("query text");
            let described = (&mut conn)
                .describe(query)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}\n{query}", path.display()));
            let parameters: Vec<String> = match described.parameters() {
                Some(Either::Left(types)) => types.iter().map(|t| normalise(t.name())).collect(),
                _ => Vec::new(),
            };
            let cached_parameters: Vec<String> = cached["describe"]["parameters"]["Left"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|t| normalise(t.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                parameters,
                cached_parameters,
                "parameters of {}",
                path.display()
            );
            let columns: Vec<(String, String, Option<bool>)> = described
                .columns()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        c.name().to_owned(),
                        normalise(c.type_info().name()),
                        described.nullable(i),
                    )
                })
                .collect();
            let cached_columns: Vec<(String, String, Option<bool>)> = cached["describe"]["columns"]
                .as_array()
                .expect("columns")
                .iter()
                .zip(cached["describe"]["nullable"].as_array().expect("nullable"))
                .map(|(c, n)| {
                    (
                        c["name"].as_str().unwrap_or("").to_owned(),
                        normalise(c["type_info"].as_str().unwrap_or("")),
                        n.as_bool(),
                    )
                })
                .collect();
            assert_eq!(columns, cached_columns, "columns of {}", path.display());
            checked += 1;
        }
        assert!(
            checked >= 10,
            "only {checked} cached queries in {}",
            dir.display()
        );
    });
}
