//! Avro types as Rust sees them: the Rust type, serde attributes, and the expressions that convert a field to and from Avro values and binary.

use super::*;

/// A field type, as the generator understands it.
#[derive(Clone, Debug)]
pub(super) enum Ty {
    String,
    Int,
    Long,
    Boolean,
    Decimal { precision: u32, scale: u32 },
    Date,
    TimestampMicros,
    Optional(Box<Ty>),
    Array(Box<Ty>),
    Named(String),
}

pub(super) fn parse_ty(value: &Value, context: &str) -> Ty {
    match value {
        Value::String(s) => match s.as_str() {
            "string" => Ty::String,
            "int" => Ty::Int,
            "long" => Ty::Long,
            "boolean" => Ty::Boolean,
            named => {
                let full = if named.contains('.') {
                    named.to_owned()
                } else {
                    format!("{context}.{named}")
                };
                Ty::Named(full)
            }
        },
        Value::Array(branches) => {
            assert!(
                branches.len() == 2 && branches[0] == "null",
                "only [\"null\", T] unions are supported"
            );
            Ty::Optional(Box::new(parse_ty(&branches[1], context)))
        }
        Value::Object(map) => match (
            map.get("type").and_then(Value::as_str),
            map.get("logicalType").and_then(Value::as_str),
        ) {
            (Some("bytes"), Some("decimal")) => Ty::Decimal {
                precision: map["precision"].as_u64().expect("precision") as u32,
                scale: map.get("scale").and_then(Value::as_u64).unwrap_or(0) as u32,
            },
            (Some("int"), Some("date")) => Ty::Date,
            (Some("long"), Some("timestamp-micros")) => Ty::TimestampMicros,
            (Some("array"), None) => Ty::Array(Box::new(parse_ty(&map["items"], context))),
            other => panic!("unsupported type {other:?}"),
        },
        other => panic!("unsupported type {other}"),
    }
}

pub(super) fn rust_ty(ty: &Ty) -> String {
    match ty {
        Ty::String => "String".into(),
        Ty::Int => "i32".into(),
        Ty::Long => "i64".into(),
        Ty::Boolean => "bool".into(),
        Ty::Decimal { .. } => "rust_decimal::Decimal".into(),
        Ty::Date => "chrono::NaiveDate".into(),
        Ty::TimestampMicros => "chrono::DateTime<chrono::Utc>".into(),
        Ty::Optional(inner) => format!("Option<{}>", rust_ty(inner)),
        Ty::Array(inner) => format!("Vec<{}>", rust_ty(inner)),
        Ty::Named(full) => short(full).to_owned(),
    }
}

/// An expression encoding `e` (an expression of type `&T`) into an Avro `Value`.
pub(super) fn enc(e: &str, ty: &Ty, path: &str) -> String {
    match ty {
        Ty::String => format!("Value::String(({e}).clone())"),
        Ty::Int => format!("Value::Int(*({e}))"),
        Ty::Long => format!("Value::Long(*({e}))"),
        Ty::Boolean => format!("Value::Boolean(*({e}))"),
        Ty::Decimal { precision, scale } => {
            format!("codec::enc_decimal({e}, {precision}, {scale}, \"{path}\")?")
        }
        Ty::Date => format!("codec::enc_date({e})"),
        Ty::TimestampMicros => format!("codec::enc_timestamp({e})"),
        Ty::Optional(inner) => format!(
            "match {e} {{ None => Value::Union(0, Box::new(Value::Null)), Some(v) => Value::Union(1, Box::new({})) }}",
            enc("v", inner, path)
        ),
        Ty::Array(inner) => format!(
            "Value::Array(({e}).iter().map(|v| -> Result<Value, EncodeError> {{ Ok({}) }}).collect::<Result<Vec<_>, _>>()?)",
            enc("v", inner, &format!("{path}[]"))
        ),
        Ty::Named(_) => format!("({e}).to_value()?"),
    }
}

/// An expression decoding `v` (an owned `Value`) into the field's Rust type.
pub(super) fn dec(v: &str, ty: &Ty, path: &str) -> String {
    match ty {
        Ty::String => format!("codec::dec_string({v}, \"{path}\")?"),
        Ty::Int => format!("codec::dec_int({v}, \"{path}\")?"),
        Ty::Long => format!("codec::dec_long({v}, \"{path}\")?"),
        Ty::Boolean => format!("codec::dec_bool({v}, \"{path}\")?"),
        Ty::Decimal { scale, .. } => format!("codec::dec_decimal({v}, {scale}, \"{path}\")?"),
        Ty::Date => format!("codec::dec_date({v}, \"{path}\")?"),
        Ty::TimestampMicros => format!("codec::dec_timestamp({v}, \"{path}\")?"),
        Ty::Optional(inner) => format!(
            "match codec::dec_optional({v}, \"{path}\")? {{ None => None, Some(inner) => Some({}) }}",
            dec("inner", inner, path)
        ),
        Ty::Array(inner) => format!(
            "codec::dec_array({v}, \"{path}\")?.into_iter().map(|item| -> Result<_, DecodeError> {{ Ok({}) }}).collect::<Result<Vec<_>, _>>()?",
            dec("item", inner, &format!("{path}[]"))
        ),
        Ty::Named(full) => format!("{}::from_value({v})?", short(full)),
    }
}

/// Statements writing `e` (an expression of type `&T`) in Avro binary to `out`.
pub(super) fn put(e: &str, ty: &Ty, path: &str) -> String {
    match ty {
        Ty::String => format!("binary::put_str(out, {e});"),
        Ty::Int => format!("binary::put_int(out, *({e}));"),
        Ty::Long => format!("binary::put_long(out, *({e}));"),
        Ty::Boolean => format!("binary::put_bool(out, *({e}));"),
        Ty::Decimal { precision, scale } => {
            format!("binary::put_decimal(out, {e}, {precision}, {scale}, \"{path}\")?;")
        }
        Ty::Date => format!("binary::put_date(out, {e});"),
        Ty::TimestampMicros => format!("binary::put_timestamp(out, {e});"),
        Ty::Optional(inner) => format!(
            "match {e} {{ None => binary::put_present(out, false), Some(v) => {{ binary::put_present(out, true); {} }} }}",
            put("v", inner, path)
        ),
        Ty::Array(inner) => format!(
            "binary::put_array(out, {e}, |out, v| {{ {} Ok(()) }})?;",
            put("v", inner, &format!("{path}[]"))
        ),
        Ty::Named(_) => format!("({e}).write_avro(out)?;"),
    }
}

/// An expression reading the field's Rust type in Avro binary from `input`.
pub(super) fn get(ty: &Ty, path: &str) -> String {
    match ty {
        Ty::String => format!("binary::get_string(input, \"{path}\")?"),
        Ty::Int => format!("binary::get_int(input, \"{path}\")?"),
        Ty::Long => format!("binary::get_long(input, \"{path}\")?"),
        Ty::Boolean => format!("binary::get_bool(input, \"{path}\")?"),
        Ty::Decimal { scale, .. } => format!("binary::get_decimal(input, {scale}, \"{path}\")?"),
        Ty::Date => format!("binary::get_date(input, \"{path}\")?"),
        Ty::TimestampMicros => format!("binary::get_timestamp(input, \"{path}\")?"),
        Ty::Optional(inner) => format!(
            "if binary::get_present(input, \"{path}\")? {{ Some({}) }} else {{ None }}",
            get(inner, path)
        ),
        Ty::Array(inner) => format!(
            "binary::get_array(input, \"{path}\", |input| Ok({}))?",
            get(inner, &format!("{path}[]"))
        ),
        Ty::Named(full) => format!("{}::read_avro(input)?", short(full)),
    }
}

pub(super) fn serde_attr(ty: &Ty) -> Option<&'static str> {
    match ty {
        Ty::Decimal { .. } => Some("#[serde(with = \"rust_decimal::serde::str\")]"),
        Ty::Optional(inner) if matches!(**inner, Ty::Decimal { .. }) => Some(
            "#[serde(default, with = \"rust_decimal::serde::str_option\", skip_serializing_if = \"Option::is_none\")]",
        ),
        Ty::Optional(_) => Some("#[serde(default, skip_serializing_if = \"Option::is_none\")]"),
        _ => None,
    }
}
