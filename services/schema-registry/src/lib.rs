//! A schema registry speaking the Confluent Schema Registry REST API (the subset Kafka
//! clients, serializers and tools use), stored in Postgres.
//!
//! Ids are global and stable: the same schema registered under any subject keeps one id,
//! across restarts. Compatibility is decided by apache-avro's schema-compatibility
//! checker for all seven Confluent levels.

pub mod access;
pub mod compatibility;
pub mod error;
pub mod params;
pub mod store;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{
    access::{Access, Metrics},
    compatibility::Level,
    error::{RegistryError, Result},
    params::Params,
    store::{Against, Store},
};

/// The media type of every answer.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub access: Arc<Access>,
    pub metrics: Metrics,
}

impl AppState {
    /// An open registry (tests and tools): no credentials asked.
    pub fn new(pool: PgPool) -> Self {
        Self::with_access(pool, Access::default())
    }

    pub fn with_access(pool: PgPool, access: Access) -> Self {
        Self {
            store: Store::new(pool),
            access: Arc::new(access),
            metrics: Metrics::default(),
        }
    }
}

/// Applies the registry's migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations").run(pool).await?;
    Ok(())
}

/// Connects to `database_url`, migrates, and serves the registry on a free loopback port
/// in a task of the current runtime; returns its URL (tests and tools).
pub async fn spawn_local(database_url: &str) -> anyhow::Result<String> {
    spawn_local_with(database_url, Access::default()).await
}

/// As [`spawn_local`], asking callers what `access` says.
pub async fn spawn_local_with(database_url: &str, access: Access) -> anyhow::Result<String> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect(database_url)
        .await?;
    migrate(&pool).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    _ = tokio::spawn(async move {
        axum::serve(listener, app(AppState::with_access(pool, access))).await
    });
    Ok(url)
}

/// A JSON answer with the registry's media type.
struct RegistryJson(Value);

impl IntoResponse for RegistryJson {
    fn into_response(self) -> Response {
        let mut response = Json(self.0).into_response();
        _ = response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

/// The registry's routes.
pub fn app(state: AppState) -> Router {
    let guarded = (state.access.clone(), state.metrics.clone());
    Router::new()
        .route("/", get(|| async { RegistryJson(json!({})) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route("/schemas/ids/{id}", get(get_schema))
        .route("/schemas/ids/{id}/versions", get(get_schema_versions))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_compatibility),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_compatibility_by_level),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config).put(put_subject_config),
        )
        .route_layer(axum::middleware::from_fn_with_state(guarded, access::guard))
        .fallback(|| async {
            RegistryError::http(
                axum::http::StatusCode::NOT_FOUND,
                "HTTP 404 Not Found".into(),
            )
        })
        .layer(axum::middleware::map_response(params::errors_as_json))
        .with_state(state)
}

/// Ready when the store answers.
async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(error) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store: {error}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<Value>>,
}

impl SchemaBody {
    fn parse(json: &str) -> Result<Self> {
        let body: Self = serde_json::from_str(json)
            .map_err(|e| RegistryError::invalid_schema(format!("Invalid request body: {e}")))?;
        if let Some(kind) = body.schema_type.as_deref().filter(|k| *k != "AVRO") {
            return Err(RegistryError::invalid_schema(format!(
                "Schema type {kind} is not supported; this registry holds AVRO schemas"
            )));
        }
        if body.references.as_ref().is_some_and(|r| !r.is_empty()) {
            return Err(RegistryError::invalid_schema(
                "Schema references are not supported; register independent schemas".into(),
            ));
        }
        Ok(body)
    }
}

/// A version path segment: a number ≥ 1, or `latest` / -1.
#[derive(Clone, Copy, Debug)]
pub enum VersionRef {
    Latest,
    Number(i32),
}

impl VersionRef {
    fn parse(text: &str) -> Result<Self> {
        match text {
            "latest" | "-1" => Ok(Self::Latest),
            number => number
                .parse::<i32>()
                .ok()
                .filter(|n| *n >= 1)
                .map(Self::Number)
                .ok_or_else(|| RegistryError::invalid_version(text)),
        }
    }
}

/// A subject's live versions; none means the subject is unknown (40401).
fn of_known_subject(versions: Vec<i32>, subject: &str) -> Result<Vec<i32>> {
    if versions.is_empty() {
        Err(RegistryError::subject_not_found(subject))
    } else {
        Ok(versions)
    }
}

async fn list_subjects(State(state): State<AppState>, params: Params) -> Result<RegistryJson> {
    let mut subjects = state.store.subjects(params.flag("deleted")).await?;
    if let Some(prefix) = params.text("subjectPrefix").or(params.text("subject")) {
        subjects.retain(|s| s.starts_with(prefix));
    }
    Ok(RegistryJson(json!(params.page(subjects)?)))
}

async fn list_versions(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    params: Params,
) -> Result<RegistryJson> {
    let versions = state
        .store
        .versions(&subject, params.flag("deleted"))
        .await?;
    Ok(RegistryJson(json!(
        params.page(of_known_subject(versions, &subject)?)?
    )))
}

/// `normalize` is accepted (Confluent's clients send it): identity is already the schema's
/// JSON without whitespace.
async fn register(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    params: Params,
    body: String,
) -> Result<RegistryJson> {
    _ = params.flag("normalize");
    let body = SchemaBody::parse(&body)?;
    let schema = compatibility::parse(&body.schema)?;
    let id = state
        .store
        .register(&subject, &body.schema, &schema)
        .await?;
    Ok(RegistryJson(json!({ "id": id })))
}

async fn lookup(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    params: Params,
    body: String,
) -> Result<RegistryJson> {
    let deleted = params.flag("deleted");
    let body = SchemaBody::parse(&body)?;
    let schema = compatibility::parse(&body.schema)?;
    _ = of_known_subject(state.store.versions(&subject, deleted).await?, &subject)?;
    let found = state
        .store
        .lookup(&subject, &body.schema, &schema, deleted)
        .await?
        .ok_or_else(RegistryError::schema_not_found)?;
    Ok(RegistryJson(found.to_json()))
}

async fn get_version(
    State(state): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<RegistryJson> {
    let version = VersionRef::parse(&version)?;
    Ok(RegistryJson(
        state.store.version(&subject, version).await?.to_json(),
    ))
}

async fn get_version_schema(
    State(state): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response> {
    let version = VersionRef::parse(&version)?;
    let found = state.store.version(&subject, version).await?;
    let mut response = found.schema.into_response();
    _ = response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

/// A schema id path segment; anything else names no schema (40403).
fn schema_id(text: &str) -> Result<i32> {
    text.parse().map_err(|_| RegistryError::schema_not_found())
}

async fn get_schema(State(state): State<AppState>, Path(id): Path<String>) -> Result<RegistryJson> {
    let id = schema_id(&id)?;
    let schema = state
        .store
        .schema(id)
        .await?
        .ok_or_else(RegistryError::schema_not_found)?;
    Ok(RegistryJson(json!({ "schema": schema })))
}

async fn get_schema_versions(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<RegistryJson> {
    let id = schema_id(&id)?;
    if state.store.schema(id).await?.is_none() {
        return Err(RegistryError::schema_not_found());
    }
    let versions: Vec<Value> = state
        .store
        .schema_versions(id)
        .await?
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(RegistryJson(json!(versions)))
}

async fn delete_subject(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    params: Params,
) -> Result<RegistryJson> {
    if params.flag("permanent") {
        return Err(RegistryError::hard_delete());
    }
    let deleted = state.store.soft_delete(&subject).await?;
    Ok(RegistryJson(json!(of_known_subject(deleted, &subject)?)))
}

async fn delete_version(
    State(state): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    params: Params,
) -> Result<RegistryJson> {
    if params.flag("permanent") {
        return Err(RegistryError::hard_delete());
    }
    let version = VersionRef::parse(&version)?;
    Ok(RegistryJson(json!(
        state.store.soft_delete_version(&subject, version).await?
    )))
}

/// Against one version (`latest` included): `POST /compatibility/subjects/{s}/versions/{v}`.
async fn check_compatibility(
    State(state): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    params: Params,
    body: String,
) -> Result<RegistryJson> {
    let version = VersionRef::parse(&version)?;
    compatibility_answer(&state, &subject, Against::Version(version), &params, &body).await
}

/// Against what the subject's level names (every live version at a transitive level, the
/// latest otherwise): `POST /compatibility/subjects/{s}/versions`.
async fn check_compatibility_by_level(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    params: Params,
    body: String,
) -> Result<RegistryJson> {
    compatibility_answer(&state, &subject, Against::Level, &params, &body).await
}

async fn compatibility_answer(
    state: &AppState,
    subject: &str,
    against: Against,
    params: &Params,
    body: &str,
) -> Result<RegistryJson> {
    _ = params.flag("normalize");
    let body = SchemaBody::parse(body)?;
    let schema = compatibility::parse(&body.schema)?;
    let messages = state
        .store
        .compatibility_problems(subject, against, &schema)
        .await?;
    let mut answer = json!({ "is_compatible": messages.is_empty() });
    if params.flag("verbose") {
        answer["messages"] = json!(messages);
    }
    Ok(RegistryJson(answer))
}

/// `{"compatibility": …}`, or `{"compatibilityLevel": …}` as newer clients send it.
#[derive(Debug, Deserialize)]
struct ConfigBody {
    #[serde(alias = "compatibilityLevel")]
    compatibility: String,
}

async fn get_global_config(State(state): State<AppState>) -> Result<RegistryJson> {
    let level = state.store.level(None).await?;
    Ok(RegistryJson(
        json!({ "compatibilityLevel": level.as_str() }),
    ))
}

async fn put_global_config(State(state): State<AppState>, body: String) -> Result<RegistryJson> {
    let level = parse_config(&body)?;
    state.store.set_level(None, level).await?;
    Ok(RegistryJson(json!({ "compatibility": level.as_str() })))
}

async fn get_subject_config(
    State(state): State<AppState>,
    Path(subject): Path<String>,
) -> Result<RegistryJson> {
    let level = state
        .store
        .subject_level(&subject)
        .await?
        .ok_or_else(|| RegistryError::subject_level_not_found(&subject))?;
    Ok(RegistryJson(
        json!({ "compatibilityLevel": level.as_str() }),
    ))
}

async fn put_subject_config(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    body: String,
) -> Result<RegistryJson> {
    let level = parse_config(&body)?;
    state.store.set_level(Some(&subject), level).await?;
    Ok(RegistryJson(json!({ "compatibility": level.as_str() })))
}

fn parse_config(body: &str) -> Result<Level> {
    let body: ConfigBody = serde_json::from_str(body)
        .map_err(|e| RegistryError::invalid_compatibility(&format!("invalid body: {e}")))?;
    body.compatibility
        .parse()
        .map_err(|_| RegistryError::invalid_compatibility(&body.compatibility))
}
