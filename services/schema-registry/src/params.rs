//! Query parameters as Confluent's registry reads them, and its error bodies for every
//! refusal.
//!
//! Confluent's registry (JAX-RS) reads a boolean parameter with Java's
//! `Boolean.parseBoolean`: `true` in any case is true, anything else false. Its Python
//! client sends Python's spelling (`?normalize=False&verbose=True`), so a strict parser
//! would refuse the most used client after Java's. Unknown parameters are ignored, as there.

use axum::{
    extract::FromRequestParts,
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};

use crate::error::{RegistryError, Result};

/// A request's query parameters, decoded.
#[derive(Clone, Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a query string (`a=1&b=two`).
    pub fn parse(query: &str) -> Self {
        Self(
            form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter: true when its value is `true` in any case (absent: false).
    pub fn flag(&self, name: &str) -> bool {
        self.text(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// `items` from `offset` (default 0), at most `limit` of them (default, or -1: all).
    pub fn page<T>(&self, items: Vec<T>) -> Result<Vec<T>> {
        let number = |name: &str, default: i64| -> Result<i64> {
            self.text(name).map_or(Ok(default), |v| {
                v.parse().map_err(|_| {
                    RegistryError::http(
                        StatusCode::BAD_REQUEST,
                        format!("{name} must be a whole number, not {v:?}"),
                    )
                })
            })
        };
        let offset = usize::try_from(number("offset", 0)?.max(0)).unwrap_or(usize::MAX);
        let limit = number("limit", -1)?;
        let items = items.into_iter().skip(offset);
        Ok(match usize::try_from(limit) {
            Ok(limit) if limit > 0 => items.take(limit).collect(),
            _ => items.collect(),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        Ok(parts.uri.query().map(Self::parse).unwrap_or_default())
    }
}

/// Every refusal as Confluent's `{error_code, message}`: the HTTP layer's own (an unknown
/// path, a method a path does not take, a body that is not UTF-8) arrive as plain text and
/// are rewritten; the registry's own are JSON already. Health and metrics are left as they
/// are.
pub async fn errors_as_json(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if status.as_u16() < 400 || json || status == StatusCode::SERVICE_UNAVAILABLE {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        )
    } else {
        text
    };
    RegistryError::http(status, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_read_as_confluents_registry_reads_them() {
        let params = Params::parse("normalize=False&verbose=True&deleted=TRUE&permanent=yes");
        assert!(!params.flag("normalize"));
        assert!(params.flag("verbose"));
        assert!(params.flag("deleted"));
        assert!(!params.flag("permanent"));
        assert!(!params.flag("absent"));
    }

    #[test]
    fn pages_take_offset_and_limit() {
        let params = Params::parse("offset=1&limit=2");
        assert_eq!(params.page(vec![1, 2, 3, 4]).expect("page"), vec![2, 3]);
        let all = Params::parse("offset=0&limit=-1");
        assert_eq!(all.page(vec![1, 2]).expect("page"), vec![1, 2]);
        assert!(Params::parse("limit=many").page(vec![1]).is_err());
    }
}
