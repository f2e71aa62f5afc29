//! The independent schema of each event record and the `Event` enum over them all.

use super::*;

/// The schema with every referenced named type defined inline at its first use.
pub(super) fn inline(
    value: &Value,
    types: &BTreeMap<String, Value>,
    defined: &mut BTreeSet<String>,
    namespace: &str,
) -> Value {
    match value {
        Value::String(s) => {
            let full = if s.contains('.') {
                s.clone()
            } else {
                format!("{namespace}.{s}")
            };
            match types.get(&full) {
                Some(definition) if defined.insert(full.clone()) => {
                    let ns = full.rsplit_once('.').map_or("", |(ns, _)| ns).to_owned();
                    inline(definition, types, defined, &ns)
                }
                Some(_) => Value::String(full),
                None => value.clone(),
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| inline(i, types, defined, namespace))
                .collect(),
        ),
        Value::Object(map) => {
            if let Some(name) = map.get("name").and_then(Value::as_str)
                && map
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t == "record" || t == "enum")
            {
                let ns = map
                    .get("namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(namespace);
                _ = defined.insert(if name.contains('.') {
                    name.to_owned()
                } else {
                    format!("{ns}.{name}")
                });
            }
            let ns = map
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or(namespace)
                .to_owned();
            let mut out = Map::new();
            for (k, v) in map {
                let v = if k == "type" || k == "items" || k == "fields" {
                    inline(v, types, defined, &ns)
                } else {
                    v.clone()
                };
                _ = out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

pub(super) fn gen_event_enum(out: &mut String, bindings: &BTreeMap<String, (String, RecordDecl)>) {
    out.push_str("/// Every event record's contract, in full-name order.\npub const CATALOG: &[crate::avro::EventInfo] = &[\n");
    for full in bindings.keys() {
        let name = short(full);
        _ = writeln!(
            out,
            "    crate::avro::EventInfo {{ full_name: {name}::FULL_NAME, event_type: {name}::EVENT_TYPE, topic: {name}::TOPIC, key_pattern: {name}::KEY_PATTERN, writer: {name}::WRITER, producer_writable: {name}::PRODUCER_WRITABLE, readers: {name}::READERS, schema: {name}::SCHEMA, version: {name}::VERSION }},"
        );
    }
    out.push_str("];\n\n");
    out.push_str("/// Every event record of the catalog; serialized as the record itself (the REST\n/// API's JSON conventions).\n#[derive(Clone, Debug, PartialEq, serde::Serialize)]\n#[serde(untagged)]\npub enum Event {\n");
    for full in bindings.keys() {
        _ = writeln!(out, "    {}({}),", short(full), short(full));
    }
    out.push_str("}\n\n");
    for full in bindings.keys() {
        let name = short(full);
        _ = writeln!(
            out,
            "impl From<{name}> for Event {{\n    fn from(record: {name}) -> Self {{\n        Self::{name}(record)\n    }}\n}}\n"
        );
    }
    out.push_str("impl Event {\n");
    out.push_str("    /// Full names of every event record.\n    pub const FULL_NAMES: &'static [&'static str] = &[\n");
    for full in bindings.keys() {
        _ = writeln!(out, "        \"{full}\",");
    }
    out.push_str("    ];\n\n");
    out.push_str("    /// Decodes a value of the named record type.\n    pub fn from_value(full_name: &str, value: Value) -> Result<Self, DecodeError> {\n        match full_name {\n");
    for full in bindings.keys() {
        _ = writeln!(
            out,
            "            \"{full}\" => Ok(Self::{}({}::from_value(value)?)),",
            short(full),
            short(full)
        );
    }
    out.push_str("            other => Err(DecodeError::new(other, \"not an event record of the catalog\".to_owned())),\n        }\n    }\n\n");
    out.push_str("    /// Deserializes a record of the named type from its JSON form (`meta` included);\n    /// `Ok(None)` when the name is not an event record of the catalog.\n    pub fn deserialize_as<'de, D: serde::Deserializer<'de>>(full_name: &str, deserializer: D) -> Result<Option<Self>, D::Error> {\n        match full_name {\n");
    for full in bindings.keys() {
        _ = writeln!(
            out,
            "            \"{full}\" => <{0} as serde::Deserialize>::deserialize(deserializer).map(|r| Some(Self::{0}(r))),",
            short(full)
        );
    }
    out.push_str("            _ => Ok(None),\n        }\n    }\n\n");
    for (method, ret, body) in [
        ("full_name", "&'static str", "FULL_NAME"),
        ("event_type", "&'static str", "EVENT_TYPE"),
        ("topic", "&'static str", "TOPIC"),
        ("schema", "&'static str", "SCHEMA"),
        ("writer", "&'static str", "WRITER"),
        ("producer_writable", "bool", "PRODUCER_WRITABLE"),
        ("version", "i32", "VERSION"),
    ] {
        _ = writeln!(
            out,
            "    pub fn {method}(&self) -> {ret} {{\n        match self {{"
        );
        for full in bindings.keys() {
            _ = writeln!(
                out,
                "            Self::{}(_) => {}::{body},",
                short(full),
                short(full)
            );
        }
        out.push_str("        }\n    }\n\n");
    }
    out.push_str("    pub fn meta(&self) -> &Meta {\n        match self {\n");
    for full in bindings.keys() {
        _ = writeln!(out, "            Self::{}(r) => &r.meta,", short(full));
    }
    out.push_str("        }\n    }\n\n");
    out.push_str("    pub fn meta_mut(&mut self) -> &mut Meta {\n        match self {\n");
    for full in bindings.keys() {
        _ = writeln!(out, "            Self::{}(r) => &mut r.meta,", short(full));
    }
    out.push_str("        }\n    }\n\n");
    out.push_str("    pub fn key(&self) -> String {\n        match self {\n");
    for full in bindings.keys() {
        _ = writeln!(out, "            Self::{}(r) => r.key(),", short(full));
    }
    out.push_str("        }\n    }\n\n");
    out.push_str("    /// Avro binary of the record (its own schema, no framing).\n    pub fn write_avro(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {\n        match self {\n");
    for full in bindings.keys() {
        _ = writeln!(
            out,
            "            Self::{}(r) => r.write_avro(out),",
            short(full)
        );
    }
    out.push_str("        }\n    }\n\n");
    out.push_str("    /// Reads a record of the named type written with this build's schema of it; the\n    /// input must hold exactly one record.\n    pub fn read_avro(full_name: &str, mut input: &[u8]) -> Result<Self, DecodeError> {\n        let event = match full_name {\n");
    for full in bindings.keys() {
        _ = writeln!(
            out,
            "            \"{full}\" => Self::{0}({0}::read_avro(&mut input)?),",
            short(full)
        );
    }
    out.push_str("            other => return Err(DecodeError::new(other, \"not an event record of the catalog\".to_owned())),\n        };\n        binary::finish(input, full_name)?;\n        Ok(event)\n    }\n\n");
    out.push_str(
        "    pub fn to_value(&self) -> Result<Value, EncodeError> {\n        match self {\n",
    );
    for full in bindings.keys() {
        _ = writeln!(out, "            Self::{}(r) => r.to_value(),", short(full));
    }
    out.push_str("        }\n    }\n}\n");
}
