//! The OpenAPI document of the proxy (`openapi.json` next to `Cargo.toml`, generated from
//! the catalog by [`generate`]), served at `/openapi.json` with `servers` naming the address
//! the request came to. Tests hold it to the routers (every documented operation is
//! routed, every route documented) and to the catalog (a stale file fails).

pub mod generate;

use axum::{
    http::{HeaderMap, header},
    response::IntoResponse,
};
use serde_json::{Value, json};

/// The committed document.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

/// `GET /openapi.json`: the document, its `servers` the proxy as the client reached it —
/// through a reverse proxy, `X-Forwarded-Proto` and `X-Forwarded-Host` say how.
pub async fn serve(headers: HeaderMap) -> impl IntoResponse {
    static PARSED: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let parsed =
        PARSED.get_or_init(|| serde_json::from_str(DOCUMENT).expect("openapi.json is JSON"));
    let body = match base_url(&headers) {
        Some(url) => {
            let mut document = parsed.clone();
            document["servers"] = json!([{"url": url}]);
            document.to_string()
        }
        None => DOCUMENT.to_owned(),
    };
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// The Redoc bundle the page runs, shipped with the program (`vendor/redoc`, fetched from
/// npm by `scripts/vendor-redoc` at a pinned version and integrity): no CDN.
pub const REDOC: &[u8] = include_bytes!("../../vendor/redoc/redoc.standalone.js");

/// The reference page: Redoc rendering `/openapi.json`.
pub const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Habitat Streams REST API</title>
<style>body { margin: 0; padding: 0; }</style>
</head>
<body>
<redoc spec-url="/openapi.json" hide-download-button="false" expand-responses="202"></redoc>
<script src="/docs/redoc.standalone.js"></script>
</body>
</html>
"#;

/// `GET /docs`.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                 worker-src 'self' blob:; font-src 'self' data:",
            ),
        ],
        PAGE,
    )
}

/// `GET /docs/redoc.standalone.js`.
pub async fn redoc() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        REDOC,
    )
}

/// `<scheme>://<host>` the request was sent to, when its headers say.
pub fn base_url(headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or(v).trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let host = header("x-forwarded-host").or_else(|| header("host"))?;
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c))
    {
        return None;
    }
    let scheme = match header("x-forwarded-proto").as_deref() {
        Some("https") => "https",
        _ => "http",
    };
    Some(format!("{scheme}://{host}"))
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
            include_str!("../http/v1.rs"),
            include_str!("../http/v3.rs"),
            include_str!("../http/ops.rs"),
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
                    producers: 1,
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
