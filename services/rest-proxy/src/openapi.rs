//! The OpenAPI document of the proxy (`openapi.json` next to `Cargo.toml`), served at
//! `/openapi.json`. A test holds it to the routers: every documented operation is routed,
//! and every route is documented.

use axum::{http::header, response::IntoResponse};

/// The committed document.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// `GET /openapi.json`.
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, sync::Arc, time::Duration};

    use axum::{body::Body, http::Request};
    use rdkafka::ClientConfig;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::DOCUMENT;
    use crate::{
        AppState, HttpMetrics, Limits, Partitions, RateLimit,
        idempotency::Idempotency,
        keys::Keys,
        registry::Schemas,
        router,
        writer::{Writer, WriterConfig},
    };

    /// (method, path) of every operation in the document.
    fn documented() -> BTreeSet<(String, String)> {
        let document: Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
        assert_eq!(document["openapi"], "3.1.0");
        document["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, operations)| {
                operations
                    .as_object()
                    .expect("operations")
                    .keys()
                    .map(|method| (method.to_uppercase(), path.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// (method, path) of every `.route(…)` of the routers' sources.
    fn routed() -> BTreeSet<(String, String)> {
        let source = [
            include_str!("http/v1.rs"),
            include_str!("http/v3.rs"),
            include_str!("http/ops.rs"),
        ]
        .concat();
        let mut routes = BTreeSet::new();
        for piece in source.split(".route(").skip(1) {
            let path = piece.split('"').nth(1).expect("a path literal");
            let rest = piece.split_once(',').expect("a handler").1.trim_start();
            // This route's handlers: up to the next route or the end of the router.
            let handlers = rest.split(".route(").next().unwrap_or(rest);
            let handlers = handlers.split("\n}").next().unwrap_or(handlers);
            for method in ["get", "post", "put", "delete"] {
                if handlers.starts_with(&format!("{method}("))
                    || handlers.contains(&format!(".{method}("))
                {
                    _ = routes.insert((method.to_uppercase(), path.to_owned()));
                }
            }
        }
        routes
    }

    #[test]
    fn every_route_is_documented_and_every_documented_operation_is_routed() {
        let documented = documented();
        let routed = routed();
        assert!(routed.len() >= 10, "routes read from app.rs: {routed:?}");
        assert_eq!(documented, routed, "openapi.json and the router differ");

        // And the live router answers each of them (not axum's 404/405 for no route).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none")
                .expect("lazy pool");
            let mut client = ClientConfig::new();
            _ = client.set("bootstrap.servers", "127.0.0.1:1");
            let state = AppState {
                keys: Arc::new(Keys::new(pool.clone(), Duration::from_secs(5))),
                rate: Arc::new(RateLimit::unlimited()),
                idempotency: Idempotency::new(pool),
                writer: Writer::start(WriterConfig {
                    bootstrap_servers: "127.0.0.1:1".to_owned(),
                    transactional_id: "openapi-test".to_owned(),
                    linger: Duration::from_millis(1),
                    timeout: Duration::from_secs(1),
                    kafka: Vec::new(),
                }),
                codec: Arc::new(
                    habitat_runtime::avro::AvroCodec::new(
                        "http://127.0.0.1:1",
                        tokio::runtime::Handle::current(),
                    )
                    .expect("codec"),
                ),
                partitions: Arc::new(Partitions::new(client)),
                schemas: Arc::new(Schemas::new("http://127.0.0.1:1")),
                limits: Limits::default(),
                metrics: HttpMetrics::default(),
            };
            let app = router(state);
            for (method, path) in &documented {
                if path == "/readyz" {
                    continue; // asks the broker (covered by the API tests)
                }
                let uri = path
                    .replace("{cluster_id}", "c")
                    .replace("{topic_name}", "habitat.people");
                let request = Request::builder()
                    .method(method.as_str())
                    .uri(&uri)
                    .header("content-type", "application/json")
                    .body(Body::from("{}"))
                    .expect("request");
                let response = app.clone().oneshot(request).await.expect("answer");
                let status = response.status().as_u16();
                // Unauthenticated writes and v3 reads answer 401; the others 200.
                let expected = if path.starts_with("/v1/") || path.starts_with("/v3/") {
                    401
                } else {
                    200
                };
                assert_eq!(status, expected, "{method} {uri}");
            }
        });
    }
}
