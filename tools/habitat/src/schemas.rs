//! `habitat schemas register | check`: the catalog's schemas against a schema registry
//! (ours, Redpanda's or Confluent's), under TopicRecordNameStrategy subjects with
//! BACKWARD_TRANSITIVE compatibility.

use anyhow::{Context, Result, bail};
use contracts::{records::CATALOG, wire::subject};
use habitat_runtime::config::RegistryAuth;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// The compatibility every subject of the catalog is registered under: new processors read
/// compacted topics from the beginning, so a schema must read every earlier version.
pub const COMPATIBILITY: &str = "BACKWARD_TRANSITIVE";

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A subject and the schema the catalog wants under it.
#[derive(Clone, Debug)]
pub struct SubjectSchema {
    pub subject: String,
    pub schema: String,
}

/// Every subject of the catalog with its schema.
pub fn catalog() -> Vec<SubjectSchema> {
    CATALOG
        .iter()
        .map(|info| SubjectSchema {
            subject: subject(info.topic, info.full_name),
            schema: info.schema.to_owned(),
        })
        .collect()
}

/// What `check` found for one subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not registered yet: anything may be registered.
    New,
    Compatible,
    Incompatible(Vec<String>),
}

async fn send(
    request: reqwest::RequestBuilder,
    auth: Option<&RegistryAuth>,
    what: &str,
) -> Result<(StatusCode, Value)> {
    let request = match auth {
        Some(auth) => request.basic_auth(&auth.user, Some(&auth.password)),
        None => request,
    };
    let response = request
        .header("content-type", CONTENT_TYPE)
        .send()
        .await
        .with_context(|| format!("cannot reach the schema registry ({what})"))?;
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

fn message(body: &Value) -> String {
    body["message"].as_str().unwrap_or("no message").to_owned()
}

/// Registers every schema (setting each subject's compatibility first); returns the ids.
pub async fn register(
    registry: &str,
    auth: Option<&RegistryAuth>,
    subjects: &[SubjectSchema],
) -> Result<Vec<(String, i64)>> {
    let http = Client::new();
    let mut ids = Vec::new();
    for entry in subjects {
        let (status, body) = send(
            http.put(format!("{registry}/config/{}", entry.subject))
                .body(json!({ "compatibility": COMPATIBILITY }).to_string()),
            auth,
            "set compatibility",
        )
        .await?;
        if !status.is_success() {
            bail!(
                "{}: cannot set compatibility: {}",
                entry.subject,
                message(&body)
            );
        }
        let (status, body) = send(
            http.post(format!("{registry}/subjects/{}/versions", entry.subject))
                .body(json!({ "schema": entry.schema }).to_string()),
            auth,
            "register",
        )
        .await?;
        match (status, body["id"].as_i64()) {
            (StatusCode::OK, Some(id)) => ids.push((entry.subject.clone(), id)),
            _ => bail!("{}: rejected ({status}): {}", entry.subject, message(&body)),
        }
    }
    Ok(ids)
}

/// Tests every schema against what is registered, without registering anything: against
/// what each subject's level names (every live version at BACKWARD_TRANSITIVE), as a
/// registration would be (Confluent's `POST /compatibility/subjects/{s}/versions`).
pub async fn check(
    registry: &str,
    auth: Option<&RegistryAuth>,
    subjects: &[SubjectSchema],
) -> Result<Vec<(String, Verdict)>> {
    let http = Client::new();
    let mut verdicts = Vec::new();
    for entry in subjects {
        let (status, body) = send(
            http.get(format!("{registry}/subjects/{}/versions", entry.subject)),
            auth,
            "list versions",
        )
        .await?;
        if status == StatusCode::NOT_FOUND && body["error_code"] == json!(40401) {
            verdicts.push((entry.subject.clone(), Verdict::New));
            continue;
        }
        let (status, body) = send(
            http.post(format!(
                "{registry}/compatibility/subjects/{}/versions?verbose=true",
                entry.subject
            ))
            .body(json!({ "schema": entry.schema }).to_string()),
            auth,
            "check compatibility",
        )
        .await?;
        let verdict = match (status, body["is_compatible"].as_bool()) {
            (StatusCode::OK, Some(true)) => Verdict::Compatible,
            (StatusCode::OK, Some(false)) => Verdict::Incompatible(
                body["messages"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => bail!(
                "{}: cannot check ({status}): {}",
                entry.subject,
                message(&body)
            ),
        };
        verdicts.push((entry.subject.clone(), verdict));
    }
    Ok(verdicts)
}

/// Prints `check`'s verdicts; fails when any subject is incompatible, naming it and why.
pub fn report(verdicts: &[(String, Verdict)]) -> Result<()> {
    let mut incompatible = Vec::new();
    for (subject, verdict) in verdicts {
        match verdict {
            Verdict::New => println!("new          {subject}"),
            Verdict::Compatible => println!("compatible   {subject}"),
            Verdict::Incompatible(reasons) => {
                println!("INCOMPATIBLE {subject}: {}", reasons.join("; "));
                incompatible.push(subject.as_str());
            }
        }
    }
    if !incompatible.is_empty() {
        bail!(
            "{} schema(s) incompatible with what is registered ({COMPATIBILITY}): {}",
            incompatible.len(),
            incompatible.join(", ")
        );
    }
    Ok(())
}

/// Where every released version of every subject is kept, oldest first: the schemas a
/// registry in production already holds. `check_history` tests the catalog against them.
pub const HISTORY_PATH: &str = "schemas/history.json";

/// Every released version of every subject, oldest first.
pub type History = std::collections::BTreeMap<String, Vec<String>>;

/// Reads the history file (an empty history when it does not exist).
pub fn load_history(path: &std::path::Path) -> Result<History> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a subject → versions map", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(History::new()),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Appends the catalog's schema to every subject whose latest released version differs;
/// returns the subjects that changed.
pub fn snapshot(history: &mut History, subjects: &[SubjectSchema]) -> Vec<String> {
    let mut changed = Vec::new();
    for entry in subjects {
        let versions = history.entry(entry.subject.clone()).or_default();
        if versions.last() != Some(&entry.schema) {
            versions.push(entry.schema.clone());
            changed.push(entry.subject.clone());
        }
    }
    changed
}

/// Registers every released version in order, then checks the catalog against them all:
/// the CI gate that stops a change no released reader could follow (on a throwaway, open
/// registry).
pub async fn check_history(
    registry: &str,
    history: &History,
    subjects: &[SubjectSchema],
) -> Result<Vec<(String, Verdict)>> {
    for (subject, versions) in history {
        let released: Vec<SubjectSchema> = versions
            .iter()
            .map(|schema| SubjectSchema {
                subject: subject.clone(),
                schema: schema.clone(),
            })
            .collect();
        _ = register(registry, None, &released).await?;
    }
    check(registry, None, subjects).await
}
