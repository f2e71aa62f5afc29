//! Avro conversion of the generated record types: the traits they implement and the field
//! codecs the generated code calls. Money never passes through floating point: decimals
//! are written as their exact unscaled integer at the schema's scale, and a value with
//! more decimals than the scale is an error, not a rounding.

use std::collections::HashMap;

use apache_avro::{Schema, types::Value};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::records::Meta;

/// A value could not be written in its schema's form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct EncodeError {
    pub path: String,
    pub problem: String,
}

impl EncodeError {
    pub fn new(path: &str, problem: String) -> Self {
        Self {
            path: path.to_owned(),
            problem,
        }
    }
}

/// A value did not have the shape its schema promises.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct DecodeError {
    pub path: String,
    pub problem: String,
}

impl DecodeError {
    pub fn new(path: &str, problem: String) -> Self {
        Self {
            path: path.to_owned(),
            problem,
        }
    }
}

/// A type of `schemas/` with its Avro conversion.
pub trait AvroType: Sized {
    /// The Avro full name (`namespace.Name`).
    const FULL_NAME: &'static str;
    fn to_value(&self) -> Result<Value, EncodeError>;
    fn from_value(value: Value) -> Result<Self, DecodeError>;
}

/// The contract of one event record, for tools that go over the whole catalog.
#[derive(Clone, Copy, Debug)]
pub struct EventInfo {
    pub full_name: &'static str,
    pub event_type: &'static str,
    pub topic: &'static str,
    pub key_pattern: &'static str,
    pub writer: &'static str,
    pub readers: &'static [&'static str],
    /// The independent schema, as registered.
    pub schema: &'static str,
}

/// An event record: a top-level record with `meta`, bound to a topic in `topics.yaml`.
pub trait EventRecord: AvroType {
    /// The independent schema (referenced types inlined), as registered.
    const SCHEMA: &'static str;
    /// `context.Name`, the `meta.event_type` of this record.
    const EVENT_TYPE: &'static str;
    const TOPIC: &'static str;
    const KEY_PATTERN: &'static str;
    const WRITER: &'static str;
    const READERS: &'static [&'static str];
    fn meta(&self) -> &Meta;
    fn meta_mut(&mut self) -> &mut Meta;
    /// The record's key: `<tenant>/<entity>/<id>` per its pattern.
    fn key(&self) -> String;

    /// The parsed schema (parsed once per process).
    fn schema() -> &'static Schema;

    /// Avro binary encoding of the record (no framing).
    fn to_avro_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let value = self.to_value()?;
        apache_avro::writer::datum::GenericDatumWriter::builder(Self::schema())
            .build()
            .and_then(|writer| writer.write_value_to_vec(value))
            .map_err(|e| EncodeError::new(Self::FULL_NAME, e.to_string()))
    }

    /// Decodes Avro binary written with `writer` into this record type.
    fn from_avro_bytes(mut bytes: &[u8], writer: &Schema) -> Result<Self, DecodeError> {
        let value = apache_avro::reader::datum::GenericDatumReader::builder(writer)
            .reader_schema(Self::schema())
            .build()
            .and_then(|reader| reader.read_value(&mut bytes))
            .map_err(|e| DecodeError::new(Self::FULL_NAME, e.to_string()))?;
        Self::from_value(value)
    }
}

/// Field codecs called by the generated code.
pub mod codec {
    use super::*;

    /// The fields of a decoded record, taken by name.
    pub struct Fields {
        path: &'static str,
        fields: HashMap<String, Value>,
    }

    impl Fields {
        pub fn new(value: Value, path: &'static str) -> Result<Self, DecodeError> {
            match value {
                Value::Record(fields) => Ok(Self {
                    path,
                    fields: fields.into_iter().collect(),
                }),
                other => Err(unexpected(path, "a record", &other)),
            }
        }

        pub fn take(&mut self, name: &str) -> Result<Value, DecodeError> {
            self.fields
                .remove(name)
                .ok_or_else(|| DecodeError::new(&format!("{}.{name}", self.path), "missing".into()))
        }
    }

    fn unexpected(path: &str, wanted: &str, got: &Value) -> DecodeError {
        DecodeError::new(path, format!("expected {wanted}, found {got:?}"))
    }

    /// Writes `value` as an Avro decimal of `scale` digits after the point.
    pub fn enc_decimal(
        value: &Decimal,
        precision: u32,
        scale: u32,
        path: &str,
    ) -> Result<Value, EncodeError> {
        let mut scaled = *value;
        scaled.rescale(scale);
        if scaled != *value {
            return Err(EncodeError::new(
                path,
                format!("{value} has more than {scale} decimal places"),
            ));
        }
        let unscaled = scaled.mantissa();
        let digits = unscaled
            .unsigned_abs()
            .checked_ilog10()
            .map_or(1, |d| d + 1);
        if digits > precision {
            return Err(EncodeError::new(
                path,
                format!("{value} has more than {precision} significant digits"),
            ));
        }
        Ok(Value::Decimal(apache_avro::Decimal::from(
            minimal_twos_complement(unscaled),
        )))
    }

    /// Big-endian two's complement in the fewest bytes, as Avro's decimal wants.
    fn minimal_twos_complement(value: i128) -> Vec<u8> {
        let bytes = value.to_be_bytes();
        let sign = if value < 0 { 0xff } else { 0x00 };
        let mut start = 0;
        while start < bytes.len() - 1
            && bytes[start] == sign
            && (bytes[start + 1] & 0x80 == sign & 0x80)
        {
            start += 1;
        }
        bytes[start..].to_vec()
    }

    pub fn dec_decimal(value: Value, scale: u32, path: &str) -> Result<Decimal, DecodeError> {
        let bytes: Vec<u8> = match value {
            Value::Decimal(decimal) => {
                Vec::<u8>::try_from(&decimal).map_err(|e| DecodeError::new(path, e.to_string()))?
            }
            Value::Bytes(bytes) => bytes,
            other => return Err(unexpected(path, "a decimal", &other)),
        };
        if bytes.is_empty() || bytes.len() > 16 {
            return Err(DecodeError::new(
                path,
                format!("a decimal of {} bytes is out of range", bytes.len()),
            ));
        }
        let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
        let mut full = [fill; 16];
        full[16 - bytes.len()..].copy_from_slice(&bytes);
        Decimal::try_from_i128_with_scale(i128::from_be_bytes(full), scale)
            .map_err(|e| DecodeError::new(path, e.to_string()))
    }

    pub fn enc_date(value: &NaiveDate) -> Value {
        Value::Date(
            value
                .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch"))
                .num_days() as i32,
        )
    }

    pub fn dec_date(value: Value, path: &str) -> Result<NaiveDate, DecodeError> {
        match value {
            Value::Date(days) | Value::Int(days) => NaiveDate::from_ymd_opt(1970, 1, 1)
                .expect("epoch")
                .checked_add_signed(chrono::Duration::days(i64::from(days)))
                .ok_or_else(|| DecodeError::new(path, format!("day {days} out of range"))),
            other => Err(unexpected(path, "a date", &other)),
        }
    }

    pub fn enc_timestamp(value: &DateTime<Utc>) -> Value {
        Value::TimestampMicros(value.timestamp_micros())
    }

    pub fn dec_timestamp(value: Value, path: &str) -> Result<DateTime<Utc>, DecodeError> {
        match value {
            Value::TimestampMicros(micros) | Value::Long(micros) => {
                DateTime::from_timestamp_micros(micros)
                    .ok_or_else(|| DecodeError::new(path, format!("{micros} µs out of range")))
            }
            other => Err(unexpected(path, "a timestamp-micros", &other)),
        }
    }

    pub fn dec_string(value: Value, path: &str) -> Result<String, DecodeError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(unexpected(path, "a string", &other)),
        }
    }

    pub fn dec_symbol(value: Value, path: &str) -> Result<String, DecodeError> {
        match value {
            Value::Enum(_, s) | Value::String(s) => Ok(s),
            other => Err(unexpected(path, "an enum symbol", &other)),
        }
    }

    pub fn dec_int(value: Value, path: &str) -> Result<i32, DecodeError> {
        match value {
            Value::Int(i) => Ok(i),
            other => Err(unexpected(path, "an int", &other)),
        }
    }

    pub fn dec_long(value: Value, path: &str) -> Result<i64, DecodeError> {
        match value {
            Value::Long(i) => Ok(i),
            Value::Int(i) => Ok(i64::from(i)),
            other => Err(unexpected(path, "a long", &other)),
        }
    }

    pub fn dec_bool(value: Value, path: &str) -> Result<bool, DecodeError> {
        match value {
            Value::Boolean(b) => Ok(b),
            other => Err(unexpected(path, "a boolean", &other)),
        }
    }

    /// `["null", T]`: `None` for null, else the inner value.
    pub fn dec_optional(value: Value, path: &str) -> Result<Option<Value>, DecodeError> {
        match value {
            Value::Union(_, inner) => match *inner {
                Value::Null => Ok(None),
                inner => Ok(Some(inner)),
            },
            Value::Null => Ok(None),
            other => Err(unexpected(path, "a union", &other)),
        }
    }

    pub fn dec_array(value: Value, path: &str) -> Result<Vec<Value>, DecodeError> {
        match value {
            Value::Array(items) => Ok(items),
            other => Err(unexpected(path, "an array", &other)),
        }
    }
}
