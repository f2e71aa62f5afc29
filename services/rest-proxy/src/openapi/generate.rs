//! The OpenAPI document generated from the catalog: `openapi/base.json` (the operations,
//! written by hand) completed with a schema per event type from `schemas/`, as the REST
//! API reads it (`/v1/events`: decimals as strings, dates and instants as text, ids and
//! currencies with their patterns) and as Avro's JSON encoding reads it (`/v3` records),
//! and an example per event type from `openapi/examples.json` — the fixture the proxy's
//! tests post. `habitat catalog` writes it to `openapi.json`; a test fails when that file
//! is stale.

use std::collections::BTreeMap;

use contracts::records::CATALOG;
use serde_json::{Map, Value, json};

/// The operations, written by hand.
pub const BASE: &str = include_str!("../../openapi/base.json");
/// One payload per event type a producer may write: the documented examples, posted by the
/// proxy's tests.
pub const EXAMPLES: &str = include_str!("../../openapi/examples.json");
/// Where the generated document is kept, from the workspace root.
pub const PATH: &str = "services/rest-proxy/openapi.json";

/// The pattern of ids and tenant ids (SPEC §4).
const ID_PATTERN: &str = "^[A-Za-z0-9._:-]{1,64}$";
/// The tenant every example is posted for.
pub const EXAMPLE_TENANT: &str = "demo-coop";

/// Named types of a schema (full and short name → definition), to follow references.
type Names = BTreeMap<String, Value>;

/// Every named type defined in `avro`, under its full and its short name.
fn collect_names(avro: &Value, namespace: Option<&str>, names: &mut Names) {
    match avro {
        Value::Array(branches) => {
            for branch in branches {
                collect_names(branch, namespace, names);
            }
        }
        Value::Object(object) => {
            let own = object
                .get("namespace")
                .and_then(Value::as_str)
                .or(namespace);
            if let Some(name) = object.get("name").and_then(Value::as_str)
                && matches!(
                    object.get("type").and_then(Value::as_str),
                    Some("record" | "enum" | "fixed")
                )
            {
                let full = match own {
                    Some(ns) if !name.contains('.') => format!("{ns}.{name}"),
                    _ => name.to_owned(),
                };
                let short = full.rsplit('.').next().unwrap_or(&full).to_owned();
                _ = names.insert(full, avro.clone());
                _ = names.entry(short).or_insert_with(|| avro.clone());
            }
            for key in ["fields", "items", "values"] {
                if let Some(inner) = object.get(key) {
                    collect_names(inner, own, names);
                }
            }
            if let Some(field_type) = object.get("type").filter(|t| !t.is_string()) {
                collect_names(field_type, own, names);
            }
        }
        _ => {}
    }
}

/// How a schema is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// `/v1/events`' JSON: decimals as strings, dates and instants as text, nullable fields
    /// plain or absent.
    Rest,
    /// Avro's JSON encoding (`/v3`): decimals as byte strings, dates and instants as
    /// numbers, a non-null union branch wrapped in `{"<branch>": value}`.
    Avro,
}

/// The examples: event type → payload.
pub fn examples() -> BTreeMap<String, Value> {
    serde_json::from_str(EXAMPLES).expect("openapi/examples.json is a JSON object")
}

/// A submission of an example, as `/v1/events` takes it.
pub fn example_submission(event_type: &str, payload: &Value) -> Value {
    json!({
        "event_type": event_type,
        "tenant_id": EXAMPLE_TENANT,
        "actor": "steward:ana",
        "payload": payload,
    })
}

/// The whole document, pretty-printed with a final newline (what `openapi.json` holds).
pub fn render() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("a JSON document");
    text.push('\n');
    text
}

/// The whole document.
pub fn document() -> Value {
    let mut doc: Value = serde_json::from_str(BASE).expect("openapi/base.json is JSON");
    let examples = examples();
    let mut schemas = Map::new();
    let mut submissions = Vec::new();
    let mut mapping = Map::new();
    let mut request_examples = Map::new();
    let mut records = Vec::new();
    for info in CATALOG.iter().filter(|info| info.producer_writable) {
        let avsc: Value = serde_json::from_str(info.schema).expect("a catalog schema is JSON");
        let mut names = Names::new();
        collect_names(&avsc, None, &mut names);
        let mut payload = record_schema(&avsc, Encoding::Rest, true, &names);
        let example = examples.get(info.event_type).unwrap_or_else(|| {
            panic!(
                "openapi/examples.json has no example of {}",
                info.event_type
            )
        });
        payload["examples"] = json!([example]);
        let payload_name = info.event_type.to_owned();
        let submission_name = format!("{}.Submission", info.event_type);
        let submission = json!({
            "type": "object",
            "title": info.event_type,
            "description": format!(
                "{} Written to `{}` under the key `{}`.",
                avsc["doc"].as_str().unwrap_or_default(),
                info.topic,
                info.key_pattern
            ),
            "required": ["event_type", "tenant_id", "payload"],
            "additionalProperties": false,
            "properties": {
                "event_type": {"type": "string", "const": info.event_type},
                "tenant_id": {"type": "string", "pattern": ID_PATTERN},
                "actor": {
                    "type": ["string", "null"],
                    "description": "Who did it: member:…, steward:…, system:…"
                },
                "correlation_id": {
                    "type": ["string", "null"],
                    "pattern": ID_PATTERN,
                    "description": "Shared by every event of one business flow; the event id when absent."
                },
                "payload": {"$ref": format!("#/components/schemas/{payload_name}")}
            },
            "examples": [example_submission(info.event_type, example)]
        });
        _ = schemas.insert(payload_name, payload);
        _ = schemas.insert(submission_name.clone(), submission);
        let reference = format!("#/components/schemas/{submission_name}");
        submissions.push(json!({"$ref": reference}));
        _ = mapping.insert(info.event_type.to_owned(), Value::String(reference));
        _ = request_examples.insert(
            info.event_type.to_owned(),
            json!({
                "summary": info.event_type,
                "value": example_submission(info.event_type, example),
            }),
        );

        let subject = format!("{}-{}", info.topic, info.full_name);
        let mut record = record_schema(&avsc, Encoding::Avro, false, &names);
        record["title"] = Value::String(subject.clone());
        _ = schemas.insert(subject.clone(), record);
        records.push(json!({"$ref": format!("#/components/schemas/{subject}")}));
    }
    _ = schemas.insert(
        "Submission".to_owned(),
        json!({
            "description": "One event: its type, the tenant, who did it and the record's fields except `meta` (stamped by the proxy: event id, producer, time).",
            "oneOf": submissions,
            "discriminator": {"propertyName": "event_type", "mapping": mapping},
        }),
    );
    _ = schemas.insert(
        "AvroRecord".to_owned(),
        json!({
            "description": "A record a producer may write, whole (`meta` included; its event id, producer and time are replaced by the proxy), in Avro's JSON encoding of the schema its subject names.",
            "oneOf": records,
        }),
    );
    let components = doc["components"]["schemas"]
        .as_object_mut()
        .expect("base.json has components.schemas");
    components.extend(schemas);
    doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["examples"] =
        Value::Object(request_examples);
    doc
}

/// A record's JSON Schema; `skip_meta` leaves the envelope out (the proxy stamps it).
fn record_schema(record: &Value, encoding: Encoding, skip_meta: bool, names: &Names) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for field in record["fields"].as_array().into_iter().flatten() {
        let name = field["name"].as_str().unwrap_or_default();
        if skip_meta && name == "meta" {
            continue;
        }
        let mut schema = type_schema(&field["type"], name, encoding, names);
        if let Some(doc) = field["doc"].as_str() {
            schema = with_description(schema, doc);
        }
        if field.get("default").is_none() {
            required.push(Value::String(name.to_owned()));
        }
        _ = properties.insert(name.to_owned(), schema);
    }
    let mut schema = json!({
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": properties,
    });
    if let Some(doc) = record["doc"].as_str() {
        schema["description"] = Value::String(doc.to_owned());
    }
    schema
}

/// Adds a description, keeping one the type gave (a decimal's precision, an enum's doc).
fn with_description(mut schema: Value, doc: &str) -> Value {
    let text = match schema.get("description").and_then(Value::as_str) {
        Some(own) => format!("{doc} {own}"),
        None => doc.to_owned(),
    };
    if schema.get("$ref").is_some() {
        return json!({"allOf": [schema], "description": text});
    }
    schema["description"] = Value::String(text);
    schema
}

/// The JSON Schema of an Avro type, for a field named `field`.
fn type_schema(avro: &Value, field: &str, encoding: Encoding, names: &Names) -> Value {
    match avro {
        Value::String(name) => match names.get(name) {
            Some(named) => type_schema(named, field, encoding, names),
            None => primitive_schema(name, field),
        },
        Value::Array(branches) => union_schema(branches, field, encoding, names),
        Value::Object(object) => {
            let logical = object.get("logicalType").and_then(Value::as_str);
            match (
                object.get("type").and_then(Value::as_str),
                logical,
                encoding,
            ) {
                (Some("bytes"), Some("decimal"), Encoding::Rest) => {
                    let precision = object
                        .get("precision")
                        .and_then(Value::as_u64)
                        .unwrap_or(18);
                    let scale = object.get("scale").and_then(Value::as_u64).unwrap_or(0);
                    let whole = precision.saturating_sub(scale).max(1);
                    json!({
                        "type": "string",
                        "format": "decimal",
                        "pattern": if scale == 0 {
                            format!("^-?[0-9]{{1,{whole}}}$")
                        } else {
                            format!("^-?[0-9]{{1,{whole}}}(\\.[0-9]{{1,{scale}}})?$")
                        },
                        "description": format!("(decimal({precision},{scale}) as a string: at most {scale} decimals)"),
                    })
                }
                (Some("bytes"), Some("decimal"), Encoding::Avro) => json!({
                    "type": "string",
                    "description": "(Avro decimal: the unscaled value's two's-complement big-endian bytes, one character per byte)",
                }),
                (Some("int"), Some("date"), Encoding::Rest) => {
                    json!({"type": "string", "format": "date"})
                }
                (Some("int"), Some("date"), Encoding::Avro) => json!({
                    "type": "integer", "format": "int32",
                    "description": "(days since 1970-01-01)",
                }),
                (Some("long"), Some("timestamp-micros" | "timestamp-millis"), Encoding::Rest) => {
                    json!({"type": "string", "format": "date-time"})
                }
                (
                    Some("long"),
                    Some(unit @ ("timestamp-micros" | "timestamp-millis")),
                    Encoding::Avro,
                ) => json!({
                    "type": "integer", "format": "int64",
                    "description": if unit == "timestamp-micros" {
                        "(microseconds since 1970-01-01T00:00:00Z)"
                    } else {
                        "(milliseconds since 1970-01-01T00:00:00Z)"
                    },
                }),
                (Some("enum"), _, _) => {
                    let mut schema = json!({"type": "string", "enum": object["symbols"]});
                    if let Some(doc) = object.get("doc").and_then(Value::as_str) {
                        schema["description"] = Value::String(format!("({doc})"));
                    }
                    schema
                }
                (Some("array"), _, _) => json!({
                    "type": "array",
                    "items": type_schema(&object["items"], field, encoding, names),
                }),
                (Some("map"), _, _) => json!({
                    "type": "object",
                    "additionalProperties": type_schema(&object["values"], field, encoding, names),
                }),
                (Some("record"), _, _) => record_schema(avro, encoding, false, names),
                (Some(primitive), _, _) => primitive_schema(primitive, field),
                (None, _, _) => json!({}),
            }
        }
        _ => json!({}),
    }
}

fn primitive_schema(primitive: &str, field: &str) -> Value {
    match primitive {
        "string" if field.ends_with("_id") => json!({"type": "string", "pattern": ID_PATTERN}),
        "string" if field == "currency" => {
            json!({"type": "string", "pattern": "^[A-Z]{3}$", "description": "(ISO 4217)"})
        }
        "string" => json!({"type": "string"}),
        "int" => json!({"type": "integer", "format": "int32"}),
        "long" => json!({"type": "integer", "format": "int64"}),
        "boolean" => json!({"type": "boolean"}),
        "float" | "double" => json!({"type": "number"}),
        "null" => json!({"type": "null"}),
        "bytes" => json!({"type": "string"}),
        _ => json!({}),
    }
}

/// A union: nullable in the REST form; in Avro's JSON encoding `null` or the branch
/// wrapped in an object named by it.
fn union_schema(branches: &[Value], field: &str, encoding: Encoding, names: &Names) -> Value {
    let mut options = Vec::new();
    for branch in branches {
        if branch == "null" {
            options.push(json!({"type": "null"}));
            continue;
        }
        let schema = type_schema(branch, field, encoding, names);
        options.push(match encoding {
            Encoding::Rest => schema,
            Encoding::Avro => {
                let name = branch_name(branch);
                json!({
                    "type": "object",
                    "additionalProperties": false,
                    "required": [name],
                    "properties": {name: schema},
                })
            }
        });
    }
    json!({"anyOf": options})
}

/// The name of a union branch in Avro's JSON encoding: a named type's full name, else the
/// underlying primitive's.
fn branch_name(branch: &Value) -> String {
    match branch {
        Value::String(name) => name.clone(),
        Value::Object(object) => match (object.get("name"), object.get("namespace")) {
            (Some(Value::String(name)), Some(Value::String(namespace))) if !name.contains('.') => {
                format!("{namespace}.{name}")
            }
            (Some(Value::String(name)), _) => name.clone(),
            _ => object
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("null")
                .to_owned(),
        },
        _ => "null".to_owned(),
    }
}
