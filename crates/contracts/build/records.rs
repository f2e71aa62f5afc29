//! The struct or enum of each named type, with its serde, Avro value and Avro binary code, and the key of each event record.

use super::*;

pub(super) fn doc_comment(out: &mut String, indent: &str, doc: Option<&str>) {
    if let Some(doc) = doc {
        for line in doc.lines() {
            _ = writeln!(out, "{indent}/// {line}");
        }
    }
}

pub(super) fn gen_enum(out: &mut String, full: &str, schema: &Value) {
    let name = short(full);
    let symbols: Vec<&str> = schema["symbols"]
        .as_array()
        .expect("symbols")
        .iter()
        .map(|s| s.as_str().expect("symbol"))
        .collect();
    doc_comment(out, "", schema["doc"].as_str());
    _ = writeln!(
        out,
        "#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]\npub enum {name} {{"
    );
    for symbol in &symbols {
        _ = writeln!(
            out,
            "    #[serde(rename = \"{symbol}\")]\n    {},",
            pascal(symbol)
        );
    }
    out.push_str("}\n\n");
    _ = writeln!(out, "impl {name} {{");
    _ = writeln!(out, "    /// Every symbol, in schema order.");
    _ = writeln!(
        out,
        "    pub const ALL: [Self; {}] = [{}];",
        symbols.len(),
        symbols
            .iter()
            .map(|s| format!("Self::{}", pascal(s)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    _ = writeln!(
        out,
        "    /// The Avro symbol.\n    pub fn as_str(&self) -> &'static str {{\n        match self {{"
    );
    for symbol in &symbols {
        _ = writeln!(out, "            Self::{} => \"{symbol}\",", pascal(symbol));
    }
    out.push_str("        }\n    }\n\n");
    _ = writeln!(
        out,
        "    /// The value of an Avro symbol.\n    pub fn from_symbol(symbol: &str) -> Option<Self> {{\n        Self::ALL.into_iter().find(|s| s.as_str() == symbol)\n    }}\n}}\n"
    );
    _ = writeln!(
        out,
        "impl std::fmt::Display for {name} {{\n    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {{\n        f.write_str(self.as_str())\n    }}\n}}\n"
    );
    _ = writeln!(out, "impl AvroType for {name} {{");
    _ = writeln!(out, "    const FULL_NAME: &'static str = \"{full}\";");
    _ = writeln!(
        out,
        "    fn to_value(&self) -> Result<Value, EncodeError> {{\n        Ok(Value::Enum(*self as u32, self.as_str().to_owned()))\n    }}"
    );
    _ = writeln!(
        out,
        "    fn from_value(value: Value) -> Result<Self, DecodeError> {{\n        let symbol = codec::dec_symbol(value, \"{full}\")?;\n        Self::from_symbol(&symbol).ok_or_else(|| DecodeError::new(\"{full}\", format!(\"unknown symbol {{symbol}}\")))\n    }}"
    );
    _ = writeln!(
        out,
        "    fn write_avro(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {{\n        binary::put_int(out, *self as i32);\n        Ok(())\n    }}"
    );
    _ = writeln!(
        out,
        "    fn read_avro(input: &mut &[u8]) -> Result<Self, DecodeError> {{\n        Ok(Self::ALL[binary::get_symbol(input, Self::ALL.len(), \"{full}\")?])\n    }}\n}}\n"
    );
}

pub(super) fn gen_record(
    out: &mut String,
    full: &str,
    schema: &Value,
    types: &BTreeMap<String, Value>,
    binding: Option<&(String, RecordDecl)>,
    history: &BTreeMap<String, Vec<String>>,
) {
    let name = short(full);
    let namespace = full.rsplit_once('.').map_or("", |(ns, _)| ns);
    let fields: Vec<(String, Ty, Option<String>)> = schema["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            let fname = f["name"].as_str().expect("field name").to_owned();
            assert!(
                f["doc"].as_str().is_some_and(|d| !d.is_empty()),
                "{full}.{fname} has no doc"
            );
            (
                fname,
                parse_ty(&f["type"], namespace),
                f["doc"].as_str().map(str::to_owned),
            )
        })
        .collect();

    doc_comment(out, "", schema["doc"].as_str());
    _ = writeln!(
        out,
        "#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]\n#[serde(deny_unknown_fields)]\npub struct {name} {{"
    );
    for (fname, ty, doc) in &fields {
        doc_comment(out, "    ", doc.as_deref());
        if let Some(attr) = serde_attr(ty) {
            _ = writeln!(out, "    {attr}");
        }
        _ = writeln!(out, "    pub {fname}: {},", rust_ty(ty));
    }
    out.push_str("}\n\n");

    _ = writeln!(out, "impl AvroType for {name} {{");
    _ = writeln!(out, "    const FULL_NAME: &'static str = \"{full}\";");
    out.push_str(
        "    fn to_value(&self) -> Result<Value, EncodeError> {\n        Ok(Value::Record(vec![\n",
    );
    for (fname, ty, _) in &fields {
        _ = writeln!(
            out,
            "            (\"{fname}\".to_owned(), {}),",
            enc(&format!("&self.{fname}"), ty, &format!("{full}.{fname}"))
        );
    }
    out.push_str("        ]))\n    }\n");
    _ = writeln!(
        out,
        "    fn from_value(value: Value) -> Result<Self, DecodeError> {{\n        let mut fields = codec::Fields::new(value, \"{full}\")?;\n        Ok(Self {{"
    );
    for (fname, ty, _) in &fields {
        _ = writeln!(
            out,
            "            {fname}: {},",
            dec(
                &format!("fields.take(\"{fname}\")?"),
                ty,
                &format!("{full}.{fname}")
            )
        );
    }
    out.push_str("        })\n    }\n");
    out.push_str("    fn write_avro(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {\n");
    for (fname, ty, _) in &fields {
        _ = writeln!(
            out,
            "        {}",
            put(&format!("&self.{fname}"), ty, &format!("{full}.{fname}"))
        );
    }
    out.push_str("        Ok(())\n    }\n");
    out.push_str(
        "    fn read_avro(input: &mut &[u8]) -> Result<Self, DecodeError> {\n        Ok(Self {\n",
    );
    for (fname, ty, _) in &fields {
        _ = writeln!(
            out,
            "            {fname}: {},",
            get(ty, &format!("{full}.{fname}"))
        );
    }
    out.push_str("        })\n    }\n}\n\n");

    if let Some((topic, decl)) = binding {
        let independent = inline(schema, types, &mut BTreeSet::new(), namespace);
        let context = namespace.rsplit('.').next().expect("context");
        let text = serde_json::to_string(&independent).expect("json");
        let released = history.get(&format!("{topic}-{full}"));
        let version = released
            .and_then(|versions| versions.iter().position(|v| *v == text))
            .map_or_else(|| released.map_or(0, Vec::len) + 1, |place| place + 1);
        _ = writeln!(out, "impl EventRecord for {name} {{");
        _ = writeln!(out, "    const SCHEMA: &'static str = r#\"{text}\"#;");
        _ = writeln!(out, "    const VERSION: i32 = {version};");
        _ = writeln!(
            out,
            "    const EVENT_TYPE: &'static str = \"{context}.{name}\";"
        );
        _ = writeln!(out, "    const TOPIC: &'static str = \"{topic}\";");
        _ = writeln!(
            out,
            "    const KEY_PATTERN: &'static str = \"{}\";",
            decl.key
        );
        _ = writeln!(out, "    const WRITER: &'static str = \"{}\";", decl.writer);
        _ = writeln!(
            out,
            "    const PRODUCER_WRITABLE: bool = {};",
            decl.writer == PRODUCER_EDGE
        );
        _ = writeln!(
            out,
            "    const READERS: &'static [&'static str] = &[{}];",
            decl.readers
                .iter()
                .map(|r| format!("\"{r}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        _ = writeln!(
            out,
            "    fn schema() -> &'static apache_avro::Schema {{\n        static SCHEMA: std::sync::OnceLock<apache_avro::Schema> = std::sync::OnceLock::new();\n        SCHEMA.get_or_init(|| apache_avro::Schema::parse_str(Self::SCHEMA).expect(\"generated schema parses\"))\n    }}"
        );
        _ = writeln!(
            out,
            "    fn meta(&self) -> &Meta {{\n        &self.meta\n    }}"
        );
        _ = writeln!(
            out,
            "    fn meta_mut(&mut self) -> &mut Meta {{\n        &mut self.meta\n    }}"
        );
        _ = writeln!(
            out,
            "    fn key(&self) -> String {{\n        {}\n    }}\n}}\n",
            key_expr(&decl.key, &fields, full)
        );
    }
}

/// A `format!` building the key from its pattern.
pub(super) fn key_expr(
    pattern: &str,
    fields: &[(String, Ty, Option<String>)],
    full: &str,
) -> String {
    let mut format = String::new();
    let mut args = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        format.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closing brace") + open;
        let field = &rest[open + 1..close];
        format.push_str("{}");
        args.push(match field {
            "tenant_id" => "self.meta.tenant_id".to_owned(),
            "meta.event_id" => "self.meta.event_id".to_owned(),
            name => {
                assert!(
                    fields
                        .iter()
                        .any(|(f, ty, _)| f == name && matches!(ty, Ty::String)),
                    "{full}: key field {name} is not a string field of the record"
                );
                format!("self.{name}")
            }
        });
        rest = &rest[close + 1..];
    }
    format.push_str(rest);
    format!("format!(\"{format}\", {})", args.join(", "))
}
