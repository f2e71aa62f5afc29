//! Who may call the registry, as Confluent's registry does with HTTP Basic credentials
//! (`basic.auth.user.info` on the client side): writes — registering a schema, deleting a
//! subject or a version, setting a compatibility level — always need them; reads need them
//! only when the registry is told so. Every request is counted by route and status.

use std::sync::Arc;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use prometheus::{IntCounterVec, Opts, Registry, TextEncoder};
use subtle::ConstantTimeEq;

use crate::error::RegistryError;

/// The credentials the registry accepts, written `user:password`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
}

impl std::str::FromStr for Credentials {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (user, password) = text
            .trim_end()
            .split_once(':')
            .filter(|(user, password)| !user.is_empty() && !password.is_empty())
            .ok_or("credentials are written user:password, neither empty")?;
        Ok(Self {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:***", self.user)
    }
}

impl Credentials {
    /// Whether `headers` carry these credentials (compared in constant time).
    fn admit(&self, headers: &HeaderMap) -> bool {
        let Some(encoded) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let expected = format!("{}:{}", self.user, self.password);
        bool::from(decoded.ct_eq(expected.as_bytes()))
    }
}

/// What the registry asks of callers.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Credentials for writes (and reads when `reads_need_credentials`); `None` leaves the
    /// registry open, which only a throwaway registry of a test or tool may be.
    pub credentials: Option<Credentials>,
    pub reads_need_credentials: bool,
}

/// Whether a request changes what the registry holds.
fn is_write(method: &Method, path: &str) -> bool {
    match *method {
        Method::DELETE | Method::PUT => true,
        // POST /subjects/{s}/versions registers; POST /subjects/{s} (lookup) and POST
        // /compatibility/... only read.
        Method::POST => path.starts_with("/subjects/") && path.ends_with("/versions"),
        _ => false,
    }
}

/// The operational routes, open to every caller.
fn is_operational(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

impl Access {
    fn admits(&self, request: &Request) -> bool {
        let Some(credentials) = &self.credentials else {
            return true;
        };
        let path = request.uri().path();
        let needed = !is_operational(path)
            && (self.reads_need_credentials || is_write(request.method(), path));
        !needed || credentials.admit(request.headers())
    }
}

/// Requests by route and status, rendered on `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        // `program` tells the registry's requests from the proxy's on one dashboard.
        let labels =
            std::collections::HashMap::from([("program".to_owned(), "schema-registry".to_owned())]);
        let registry = Registry::new_custom(None, Some(labels)).expect("valid registry");
        let requests = IntCounterVec::new(
            Opts::new(
                "habitat_http_requests_total",
                "HTTP requests by route and status.",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric");
        // The process's own: CPU, memory, open files.
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        Self { registry, requests }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// The guard every request passes: refused with 401 (Confluent's `40101`) without the
/// credentials it needs, then counted by route and status.
pub async fn guard(
    State((access, metrics)): State<(Arc<Access>, Metrics)>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = if access.admits(&request) {
        next.run(request).await
    } else {
        let mut refused = RegistryError::unauthorized().into_response();
        _ = refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"schema-registry\""),
        );
        refused
    };
    metrics
        .requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_register_delete_and_config() {
        assert!(is_write(&Method::POST, "/subjects/t-r/versions"));
        assert!(is_write(&Method::DELETE, "/subjects/t-r"));
        assert!(is_write(&Method::DELETE, "/subjects/t-r/versions/1"));
        assert!(is_write(&Method::PUT, "/config"));
        assert!(is_write(&Method::PUT, "/config/t-r"));
        assert!(!is_write(&Method::POST, "/subjects/t-r"));
        assert!(!is_write(
            &Method::POST,
            "/compatibility/subjects/t-r/versions/latest"
        ));
        assert!(!is_write(&Method::GET, "/subjects/t-r/versions"));
    }

    #[test]
    fn credentials_are_user_colon_password_and_never_print() {
        let credentials: Credentials = "registry:p:w".parse().expect("credentials");
        assert_eq!(format!("{credentials:?}"), "registry:***");
        let mut headers = HeaderMap::new();
        let basic = |text: &str| {
            HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(text)
            ))
            .expect("header")
        };
        _ = headers.insert(header::AUTHORIZATION, basic("registry:p:w"));
        assert!(credentials.admit(&headers));
        _ = headers.insert(header::AUTHORIZATION, basic("registry:p:x"));
        assert!(!credentials.admit(&headers));
        assert!(":pw".parse::<Credentials>().is_err());
        assert!("user:".parse::<Credentials>().is_err());
    }
}
