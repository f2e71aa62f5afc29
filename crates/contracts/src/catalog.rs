//! The event catalog (`docs/event-catalog.md`), rendered from `schemas/` and
//! `topics.yaml`: every event record, its topic, key, writer, readers and fields.

use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::Value;

use crate::{records::CATALOG, topology::Topology, wire::subject};

/// Where the rendered catalog is committed, relative to the workspace root.
pub const PATH: &str = "docs/event-catalog.md";

/// A readable type name for a field's schema; named types defined inline are collected
/// into `shared` so they are described once.
fn type_name(schema: &Value, shared: &mut BTreeMap<String, Value>) -> String {
    match schema {
        Value::String(name) => name.clone(),
        Value::Array(branches) => {
            let inner = branches
                .iter()
                .find(|b| *b != "null")
                .map_or("null".to_owned(), |b| type_name(b, shared));
            format!("{inner} (nullable)")
        }
        Value::Object(map) => {
            let kind = map.get("type").and_then(Value::as_str).unwrap_or("?");
            match (kind, map.get("logicalType").and_then(Value::as_str)) {
                ("bytes", Some("decimal")) => format!(
                    "decimal({},{})",
                    map.get("precision").and_then(Value::as_u64).unwrap_or(0),
                    map.get("scale").and_then(Value::as_u64).unwrap_or(0)
                ),
                (_, Some(logical)) => logical.to_owned(),
                ("array", _) => format!("array of {}", type_name(&map["items"], shared)),
                ("record" | "enum", _) => {
                    let name = full_name(map);
                    _ = shared.entry(name.clone()).or_insert_with(|| schema.clone());
                    if kind == "record" {
                        for field in map["fields"].as_array().into_iter().flatten() {
                            _ = type_name(&field["type"], shared);
                        }
                    }
                    name
                }
                (other, None) => other.to_owned(),
            }
        }
        other => other.to_string(),
    }
}

fn full_name(map: &serde_json::Map<String, Value>) -> String {
    let name = map.get("name").and_then(Value::as_str).unwrap_or("?");
    match map.get("namespace").and_then(Value::as_str) {
        Some(ns) if !name.contains('.') => format!("{ns}.{name}"),
        _ => name.to_owned(),
    }
}

fn doc(value: &Value) -> String {
    value
        .get("doc")
        .and_then(Value::as_str)
        .unwrap_or("")
        .replace('|', "\\|")
}

fn fields_table(out: &mut String, record: &Value, shared: &mut BTreeMap<String, Value>) {
    out.push_str("| field | type | meaning |\n|---|---|---|\n");
    for field in record["fields"].as_array().into_iter().flatten() {
        _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            field["name"].as_str().unwrap_or("?"),
            type_name(&field["type"], shared),
            doc(field)
        );
    }
}

/// The catalog as Markdown.
pub fn render(topology: &Topology) -> String {
    let mut out = String::new();
    out.push_str("# Event catalog\n\n");
    out.push_str(
        "Generated from `schemas/` and `topics.yaml` by `habitat catalog`; do not edit by \
         hand (a test fails when this file is stale).\n\n",
    );
    out.push_str(
        "Values are Avro in the Confluent wire format; subjects follow \
                  TopicRecordNameStrategy (`<topic>-<record full name>`) with \
                  BACKWARD_TRANSITIVE compatibility. Keys are UTF-8 strings; the partition \
                  is murmur2 of the tenant id.\n\n",
    );

    out.push_str(
        "## Topics\n\n| topic | partitions | cleanup.policy | record types |\n|---|---|---|---|\n",
    );
    let specs = topology.context_topics("dev").unwrap_or_default();
    for topic in &topology.topics {
        let spec = specs.iter().find(|s| s.name == topic.name);
        _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            topic.name,
            spec.map_or(0, |s| s.partitions),
            spec.and_then(|s| s.config.get("cleanup.policy"))
                .map_or("", String::as_str),
            topic.records.len()
        );
    }
    _ = writeln!(
        out,
        "\nInternal topics: state-store changelogs `{}`, dead letters `{}`.\n",
        topology.internal.changelog.name, topology.internal.dead_letter.name
    );

    let mut shared = BTreeMap::new();
    for topic in &topology.topics {
        _ = writeln!(out, "## {}\n", topic.name);
        for binding in &topic.records {
            let Some(info) = CATALOG.iter().find(|i| i.full_name == binding.full_name) else {
                continue;
            };
            let schema: Value = serde_json::from_str(info.schema).unwrap_or(Value::Null);
            _ = writeln!(out, "### {}\n", info.event_type);
            _ = writeln!(out, "{}\n", doc(&schema));
            _ = writeln!(out, "- Record: `{}`", info.full_name);
            _ = writeln!(out, "- Subject: `{}`", subject(info.topic, info.full_name));
            _ = writeln!(out, "- Key: `{}`", info.key_pattern);
            _ = writeln!(out, "- Writer: {}", info.writer);
            _ = writeln!(out, "- Readers: {}\n", info.readers.join(", "));
            fields_table(&mut out, &schema, &mut shared);
            out.push('\n');
        }
    }

    out.push_str("## Shared types\n\n");
    for (name, schema) in &shared {
        _ = writeln!(out, "### {name}\n\n{}\n", doc(schema));
        match schema.get("type").and_then(Value::as_str) {
            Some("enum") => {
                let symbols: Vec<&str> = schema["symbols"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                _ = writeln!(out, "Symbols: {}.\n", symbols.join(", "));
            }
            _ => {
                let mut nested = BTreeMap::new();
                fields_table(&mut out, schema, &mut nested);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_catalog_is_current() {
        let rendered = render(&Topology::embedded());
        let committed = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(PATH),
        )
        .unwrap_or_default();
        assert!(
            committed == rendered,
            "{PATH} is stale: regenerate it with `./habitat catalog`"
        );
    }

    #[test]
    fn every_event_record_is_described_with_its_key_and_readers() {
        let rendered = render(&Topology::embedded());
        for info in CATALOG {
            assert!(
                rendered.contains(&format!("### {}\n", info.event_type)),
                "{}",
                info.full_name
            );
            assert!(rendered.contains(&format!("- Key: `{}`", info.key_pattern)));
        }
        assert!(rendered.contains("### habitat.Meta"));
        assert!(rendered.contains("| `value` | decimal(18,2) |"));
    }
}
