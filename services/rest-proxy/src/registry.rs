//! Schemas named by a Confluent REST v3 request — by id, or by subject and version — read
//! from the schema registry and kept: a registered schema never changes, so an id or a
//! numbered version is asked for once per process (`latest` is asked every time).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use apache_avro::Schema;
use habitat_runtime::config::RegistryAuth;
use serde::Deserialize;

/// A registered schema and where it is registered.
#[derive(Debug)]
pub struct Registered {
    pub id: u32,
    pub subject: String,
    pub version: i32,
    pub schema: Schema,
    /// The record's full name (`habitat.people.MemberRegistered`).
    pub full_name: String,
}

/// Why a schema could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Lookup {
    /// The registry has no such id, subject or version (or it is not an Avro record).
    #[error("{0}")]
    NotFound(String),
    /// The registry did not answer.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
}

/// The registry client with its cache.
pub struct Schemas {
    url: String,
    auth: Option<RegistryAuth>,
    client: reqwest::Client,
    by_id: RwLock<HashMap<u32, Arc<Registered>>>,
    by_version: RwLock<HashMap<(String, i32), u32>>,
}

#[derive(Deserialize)]
struct SchemaText {
    schema: String,
}

#[derive(Deserialize)]
struct SubjectVersion {
    subject: String,
    version: i32,
}

#[derive(Deserialize)]
struct Version {
    id: u32,
    version: i32,
}

impl Schemas {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            auth: None,
            client: reqwest::Client::new(),
            by_id: RwLock::new(HashMap::new()),
            by_version: RwLock::new(HashMap::new()),
        }
    }

    /// Asks with HTTP Basic credentials, when given.
    #[must_use]
    pub fn with_auth(mut self, auth: Option<RegistryAuth>) -> Self {
        self.auth = auth;
        self
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str, what: &str) -> Result<T, Lookup> {
        let mut request = self.client.get(format!("{}{path}", self.url));
        if let Some(auth) = &self.auth {
            request = request.basic_auth(&auth.user, Some(&auth.password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| Lookup::Unavailable(e.to_string()))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(Lookup::NotFound(format!("the registry has no {what}")));
        }
        if !response.status().is_success() {
            return Err(Lookup::Unavailable(format!(
                "{what}: the registry answered {}",
                response.status()
            )));
        }
        response
            .json()
            .await
            .map_err(|e| Lookup::Unavailable(format!("{what}: {e}")))
    }

    /// The schema registered with `id` (and the first subject and version that hold it).
    pub async fn by_id(&self, id: u32) -> Result<Arc<Registered>, Lookup> {
        if let Some(found) = self.by_id.read().expect("schemas lock").get(&id) {
            return Ok(found.clone());
        }
        let what = format!("schema id {id}");
        let text: SchemaText = self.get(&format!("/schemas/ids/{id}"), &what).await?;
        let versions: Vec<SubjectVersion> = self
            .get(&format!("/schemas/ids/{id}/versions"), &what)
            .await?;
        let first = versions
            .into_iter()
            .next()
            .ok_or_else(|| Lookup::NotFound(format!("{what} is under no subject")))?;
        let schema = Schema::parse_str(&text.schema)
            .map_err(|e| Lookup::NotFound(format!("{what} is not an Avro schema: {e}")))?;
        let Schema::Record(record) = &schema else {
            return Err(Lookup::NotFound(format!("{what} is not an Avro record")));
        };
        let registered = Arc::new(Registered {
            id,
            subject: first.subject,
            version: first.version,
            full_name: record.name.fullname(None),
            schema,
        });
        _ = self
            .by_id
            .write()
            .expect("schemas lock")
            .insert(id, registered.clone());
        Ok(registered)
    }

    /// The schema of `subject` at `version` (the latest when `None`).
    pub async fn by_subject(
        &self,
        subject: &str,
        version: Option<i32>,
    ) -> Result<Arc<Registered>, Lookup> {
        if let Some(v) = version {
            let cached = self
                .by_version
                .read()
                .expect("schemas lock")
                .get(&(subject.to_owned(), v))
                .copied();
            if let Some(id) = cached {
                return self.by_id(id).await;
            }
        }
        let label = version.map_or_else(|| "latest".to_owned(), |v| v.to_string());
        let what = format!("version {label} of subject {subject}");
        let found: Version = self
            .get(
                &format!("/subjects/{}/versions/{label}", encode(subject)),
                &what,
            )
            .await?;
        let registered = self.by_id(found.id).await?;
        if let Some(v) = version {
            _ = self
                .by_version
                .write()
                .expect("schemas lock")
                .insert((subject.to_owned(), v), found.id);
        }
        // The id may be registered under several subjects; answer with the one asked for.
        Ok(Arc::new(Registered {
            id: registered.id,
            subject: subject.to_owned(),
            version: found.version,
            schema: registered.schema.clone(),
            full_name: registered.full_name.clone(),
        }))
    }
}

/// A subject as one URL path segment.
fn encode(subject: &str) -> String {
    subject
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
