//! Avro's JSON encoding (the Avro specification, "JSON Encoding"), read against a schema:
//! the form Confluent's REST Proxy and console tools use for an `AVRO` value. Unions are
//! `null` or `{"<branch>": value}` (a named type's full name, else the primitive's name);
//! `bytes` and `fixed` — so also decimals — are strings whose characters are the bytes
//! (code points 0–255); dates and timestamps are their underlying `int`/`long`; a record's
//! missing field takes its default.

use std::collections::HashMap;

use apache_avro::{
    Decimal, Schema,
    schema::{InnerDecimalSchema, RecordField, ResolvedSchema, UuidSchema},
    types::Value as Avro,
};
use serde_json::Value as Json;

use crate::validate::Problem;

/// Named types of a schema by full name, to follow `Schema::Ref`s.
struct Names<'s>(HashMap<String, &'s Schema>);

/// `json` read as a value of `schema`; a problem names the JSON path (under `path`).
pub fn decode(json: &Json, schema: &Schema, path: &str) -> Result<Avro, Problem> {
    let resolved = ResolvedSchema::try_from(schema).map_err(|e| problem(path, e.to_string()))?;
    let names = Names(
        resolved
            .get_names()
            .iter()
            .map(|(name, schema)| (name.fullname(None), *schema))
            .collect(),
    );
    names.read(json, schema, path)
}

fn problem(path: &str, text: impl Into<String>) -> Problem {
    Problem {
        path: path.to_owned(),
        problem: text.into(),
    }
}

fn expected(path: &str, what: &str, json: &Json) -> Problem {
    problem(path, format!("expected {what}, found {json}"))
}

/// The name of a union branch in the JSON encoding.
fn branch_name(schema: &Schema) -> String {
    match schema {
        Schema::Null => "null".to_owned(),
        Schema::Boolean => "boolean".to_owned(),
        Schema::Int | Schema::Date | Schema::TimeMillis => "int".to_owned(),
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => "long".to_owned(),
        Schema::Float => "float".to_owned(),
        Schema::Double => "double".to_owned(),
        Schema::Bytes | Schema::BigDecimal => "bytes".to_owned(),
        Schema::String => "string".to_owned(),
        Schema::Array(_) => "array".to_owned(),
        Schema::Map(_) => "map".to_owned(),
        Schema::Decimal(d) => match &d.inner {
            InnerDecimalSchema::Bytes => "bytes".to_owned(),
            InnerDecimalSchema::Fixed(f) => f.name.fullname(None),
        },
        Schema::Uuid(UuidSchema::String) => "string".to_owned(),
        Schema::Uuid(UuidSchema::Bytes) => "bytes".to_owned(),
        Schema::Uuid(UuidSchema::Fixed(f)) | Schema::Fixed(f) | Schema::Duration(f) => {
            f.name.fullname(None)
        }
        Schema::Record(r) => r.name.fullname(None),
        Schema::Enum(e) => e.name.fullname(None),
        Schema::Ref { name } => name.fullname(None),
        Schema::Union(_) => "union".to_owned(),
    }
}

/// Bytes from a string of code points 0–255.
fn bytes(json: &Json, path: &str) -> Result<Vec<u8>, Problem> {
    let text = json
        .as_str()
        .ok_or_else(|| expected(path, "a string of bytes", json))?;
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| problem(path, "bytes are characters U+0000 to U+00FF"))
}

fn int(json: &Json, path: &str) -> Result<i32, Problem> {
    json.as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| expected(path, "a 32-bit integer", json))
}

fn long(json: &Json, path: &str) -> Result<i64, Problem> {
    json.as_i64()
        .ok_or_else(|| expected(path, "a 64-bit integer", json))
}

impl Names<'_> {
    fn read(&self, json: &Json, schema: &Schema, path: &str) -> Result<Avro, Problem> {
        Ok(match schema {
            Schema::Null => match json {
                Json::Null => Avro::Null,
                other => return Err(expected(path, "null", other)),
            },
            Schema::Boolean => Avro::Boolean(
                json.as_bool()
                    .ok_or_else(|| expected(path, "true or false", json))?,
            ),
            Schema::Int => Avro::Int(int(json, path)?),
            Schema::Date => Avro::Date(int(json, path)?),
            Schema::TimeMillis => Avro::TimeMillis(int(json, path)?),
            Schema::Long => Avro::Long(long(json, path)?),
            Schema::TimeMicros => Avro::TimeMicros(long(json, path)?),
            Schema::TimestampMillis => Avro::TimestampMillis(long(json, path)?),
            Schema::TimestampMicros => Avro::TimestampMicros(long(json, path)?),
            Schema::TimestampNanos => Avro::TimestampNanos(long(json, path)?),
            Schema::LocalTimestampMillis => Avro::LocalTimestampMillis(long(json, path)?),
            Schema::LocalTimestampMicros => Avro::LocalTimestampMicros(long(json, path)?),
            Schema::LocalTimestampNanos => Avro::LocalTimestampNanos(long(json, path)?),
            Schema::Float | Schema::Double => {
                let n = json
                    .as_f64()
                    .ok_or_else(|| expected(path, "a number", json))?;
                if matches!(schema, Schema::Float) {
                    #[expect(clippy::cast_possible_truncation, reason = "Avro float is f32")]
                    Avro::Float(n as f32)
                } else {
                    Avro::Double(n)
                }
            }
            Schema::Bytes => Avro::Bytes(bytes(json, path)?),
            Schema::String => Avro::String(
                json.as_str()
                    .ok_or_else(|| expected(path, "a string", json))?
                    .to_owned(),
            ),
            Schema::Uuid(UuidSchema::String) => Avro::Uuid(
                json.as_str()
                    .and_then(|s| uuid::Uuid::parse_str(s).ok())
                    .ok_or_else(|| expected(path, "a UUID string", json))?,
            ),
            Schema::Uuid(_) | Schema::BigDecimal | Schema::Duration(_) => {
                return Err(problem(
                    path,
                    "this logical type is not used by the catalog",
                ));
            }
            Schema::Decimal(d) => {
                let raw = bytes(json, path)?;
                if let InnerDecimalSchema::Fixed(f) = &d.inner
                    && raw.len() != f.size
                {
                    return Err(problem(path, format!("a fixed of {} bytes", f.size)));
                }
                Avro::Decimal(Decimal::from(raw))
            }
            Schema::Fixed(f) => {
                let raw = bytes(json, path)?;
                if raw.len() != f.size {
                    return Err(problem(path, format!("a fixed of {} bytes", f.size)));
                }
                Avro::Fixed(f.size, raw)
            }
            Schema::Enum(e) => {
                let symbol = json
                    .as_str()
                    .ok_or_else(|| expected(path, "an enum symbol", json))?;
                let index = e.symbols.iter().position(|s| s == symbol).ok_or_else(|| {
                    problem(
                        path,
                        format!("{symbol:?} is not one of {}", e.symbols.join(", ")),
                    )
                })?;
                Avro::Enum(u32::try_from(index).unwrap_or_default(), symbol.to_owned())
            }
            Schema::Array(a) => Avro::Array(
                json.as_array()
                    .ok_or_else(|| expected(path, "an array", json))?
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.read(item, &a.items, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Schema::Map(m) => Avro::Map(
                json.as_object()
                    .ok_or_else(|| expected(path, "an object", json))?
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.read(v, &m.types, &format!("{path}.{k}"))?)))
                    .collect::<Result<_, Problem>>()?,
            ),
            Schema::Record(r) => {
                let object = json
                    .as_object()
                    .ok_or_else(|| expected(path, "an object", json))?;
                if let Some(unknown) = object
                    .keys()
                    .find(|k| !r.fields.iter().any(|f| &f.name == *k))
                {
                    return Err(problem(
                        &format!("{path}.{unknown}"),
                        format!("{} has no such field", r.name.fullname(None)),
                    ));
                }
                Avro::Record(
                    r.fields
                        .iter()
                        .map(|field| {
                            let here = format!("{path}.{}", field.name);
                            let value = match object.get(&field.name) {
                                Some(value) => self.read(value, &field.schema, &here)?,
                                None => self.default(field, &here)?,
                            };
                            Ok((field.name.clone(), value))
                        })
                        .collect::<Result<_, Problem>>()?,
                )
            }
            Schema::Union(u) => {
                let variants = u.variants();
                if json.is_null() {
                    let index = variants
                        .iter()
                        .position(|v| matches!(v, Schema::Null))
                        .ok_or_else(|| problem(path, "null is not a branch of this union"))?;
                    return Ok(Avro::Union(
                        u32::try_from(index).unwrap_or_default(),
                        Box::new(Avro::Null),
                    ));
                }
                let names: Vec<String> = variants.iter().map(branch_name).collect();
                let single = json.as_object().filter(|o| o.len() == 1);
                let Some((name, inner)) = single.and_then(|o| o.iter().next()) else {
                    return Err(problem(
                        path,
                        format!(
                            "a union value is null or {{\"<branch>\": value}} with a branch of {}",
                            names.join(", ")
                        ),
                    ));
                };
                let index = names.iter().position(|n| n == name).ok_or_else(|| {
                    problem(
                        path,
                        format!("{name:?} is not a branch of {}", names.join(", ")),
                    )
                })?;
                let value = self.read(inner, &variants[index], &format!("{path}.{name}"))?;
                Avro::Union(u32::try_from(index).unwrap_or_default(), Box::new(value))
            }
            Schema::Ref { name } => {
                let full = name.fullname(None);
                let named = self
                    .0
                    .get(&full)
                    .ok_or_else(|| problem(path, format!("unknown type {full}")))?;
                self.read(json, named, path)?
            }
        })
    }

    /// A missing field's default (for a union, a value of its first branch).
    fn default(&self, field: &RecordField, path: &str) -> Result<Avro, Problem> {
        let default = field
            .default
            .as_ref()
            .ok_or_else(|| problem(path, "is required"))?;
        match &field.schema {
            Schema::Union(u) => {
                let first = u
                    .variants()
                    .first()
                    .ok_or_else(|| problem(path, "an empty union has no default"))?;
                Ok(Avro::Union(0, Box::new(self.read(default, first, path)?)))
            }
            other => self.read(default, other, path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse_str(
            r#"{"type": "record", "name": "Thing", "namespace": "t", "fields": [
                {"name": "id", "type": "string"},
                {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}},
                {"name": "on", "type": {"type": "int", "logicalType": "date"}},
                {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
                {"name": "note", "type": ["null", "string"], "default": null},
                {"name": "again", "type": ["null", "Kind"], "default": null},
                {"name": "lines", "type": {"type": "array", "items": {"type": "record", "name": "Line",
                    "fields": [{"name": "n", "type": "long"}]}}}
            ]}"#,
        )
        .expect("schema")
    }

    #[test]
    fn reads_the_json_encoding_with_unions_decimals_and_defaults() {
        // 1234.50 is 123450 unscaled: 0x01 0xE2 0x3A.
        let value = decode(
            &json!({"id": "x", "amount": "\u{0001}\u{00e2}\u{003a}", "on": 20454, "kind": "B",
                    "again": {"t.Kind": "A"}, "lines": [{"n": 7}]}),
            &schema(),
            "value.data",
        )
        .expect("decodes");
        let Avro::Record(fields) = value else {
            panic!("a record")
        };
        assert_eq!(fields[0], ("id".to_owned(), Avro::String("x".to_owned())));
        assert_eq!(
            fields[1],
            (
                "amount".to_owned(),
                Avro::Decimal(Decimal::from(vec![0x01, 0xE2, 0x3A]))
            )
        );
        assert_eq!(fields[2], ("on".to_owned(), Avro::Date(20454)));
        assert_eq!(
            fields[3],
            ("kind".to_owned(), Avro::Enum(1, "B".to_owned()))
        );
        assert_eq!(
            fields[4],
            ("note".to_owned(), Avro::Union(0, Box::new(Avro::Null)))
        );
        assert_eq!(
            fields[5],
            (
                "again".to_owned(),
                Avro::Union(1, Box::new(Avro::Enum(0, "A".to_owned())))
            )
        );
        assert_eq!(
            fields[6],
            (
                "lines".to_owned(),
                Avro::Array(vec![Avro::Record(vec![("n".to_owned(), Avro::Long(7))])])
            )
        );
    }

    #[test]
    fn problems_name_the_path() {
        let base = json!({"id": "x", "amount": "\u{0001}", "on": 1, "kind": "A", "lines": []});
        let cases = [
            ("amount", json!("€"), "value.data.amount"),
            ("kind", json!("C"), "value.data.kind"),
            ("note", json!("plain"), "value.data.note"),
            ("again", json!({"string": "x"}), "value.data.again"),
            ("lines", json!([{"n": "7"}]), "value.data.lines[0].n"),
            ("extra", json!(1), "value.data.extra"),
        ];
        for (field, bad, path) in cases {
            let mut json = base.clone();
            json[field] = bad;
            let error = decode(&json, &schema(), "value.data").expect_err(field);
            assert_eq!(error.path, path, "{field}: {}", error.problem);
        }
        let mut missing = base;
        _ = missing.as_object_mut().expect("object").remove("id");
        let error = decode(&missing, &schema(), "value.data").expect_err("missing");
        assert_eq!(
            (error.path.as_str(), error.problem.as_str()),
            ("value.data.id", "is required")
        );
    }
}
