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
    /// Appends the Avro binary encoding (this build's schema) to `out`.
    fn write_avro(&self, out: &mut Vec<u8>) -> Result<(), EncodeError>;
    /// Reads a value written with this build's schema, advancing `input` past it.
    fn read_avro(input: &mut &[u8]) -> Result<Self, DecodeError>;
}

/// The contract of one event record, for tools that go over the whole catalog.
#[derive(Clone, Copy, Debug)]
pub struct EventInfo {
    pub full_name: &'static str,
    pub event_type: &'static str,
    pub topic: &'static str,
    pub key_pattern: &'static str,
    pub writer: &'static str,
    /// Producers (the REST proxy, the outbox relay) may write it: its writer is no
    /// processor. A processor's records are refused to them.
    pub producer_writable: bool,
    pub readers: &'static [&'static str],
    /// The independent schema, as registered.
    pub schema: &'static str,
    /// Its version: its place among the subject's released schemas (schemas/history.json),
    /// one more than the last for a schema not yet released. `meta.schema_version`.
    pub version: i32,
}

/// An event record: a top-level record with `meta`, bound to a topic in `topics.yaml`.
pub trait EventRecord: AvroType {
    /// The independent schema (referenced types inlined), as registered.
    const SCHEMA: &'static str;
    /// The schema's version (see [`EventInfo::version`]): what `meta.schema_version` says.
    const VERSION: i32;
    /// `context.Name`, the `meta.event_type` of this record.
    const EVENT_TYPE: &'static str;
    const TOPIC: &'static str;
    const KEY_PATTERN: &'static str;
    const WRITER: &'static str;
    /// Producers may write it (its writer in `topics.yaml` is no processor).
    const PRODUCER_WRITABLE: bool;
    const READERS: &'static [&'static str];
    fn meta(&self) -> &Meta;
    fn meta_mut(&mut self) -> &mut Meta;
    /// The record's key: `<tenant>/<entity>/<id>` per its pattern.
    fn key(&self) -> String;

    /// The parsed schema (parsed once per process).
    fn schema() -> &'static Schema;

    /// Avro binary encoding of the record (no framing).
    fn to_avro_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.write_avro(&mut out)?;
        Ok(out)
    }

    /// Decodes Avro binary written with `writer` into this record type.
    fn from_avro_bytes(mut bytes: &[u8], writer: &Schema) -> Result<Self, DecodeError> {
        let value = read_resolved(&mut bytes, writer, Self::schema())
            .map_err(|e| DecodeError::new(Self::FULL_NAME, e.to_string()))?;
        Self::from_value(value)
    }
}

/// Reads one value written with `writer` and resolves it to `reader` (Avro's schema
/// resolution: fields matched by name, defaults for fields the writer did not have, the
/// writer's extra fields left out).
pub fn read_resolved(
    bytes: &mut &[u8],
    writer: &Schema,
    reader: &Schema,
) -> Result<Value, apache_avro::Error> {
    let written = apache_avro::reader::datum::GenericDatumReader::builder(writer)
        .build()
        .and_then(|r| r.read_value(bytes))?;
    widen_decimals(written).resolve(reader)
}

/// The value with every decimal's bytes sign-extended to 16 (the widest a decimal of this
/// catalog can take). Avro writes a `bytes` decimal in as few bytes as its value needs, but
/// apache-avro's resolution refuses a decimal whose byte count could not hold a number of
/// its schema's full precision ("Precision 9 too small to hold decimal values with 2
/// bytes"): without this, no record with a small decimal could be read across versions.
fn widen_decimals(value: Value) -> Value {
    match value {
        Value::Decimal(decimal) => match Vec::<u8>::try_from(&decimal) {
            Ok(bytes) if !bytes.is_empty() && bytes.len() < 16 => {
                let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
                let mut wide = vec![fill; 16 - bytes.len()];
                wide.extend_from_slice(&bytes);
                Value::Decimal(apache_avro::Decimal::from(wide))
            }
            _ => Value::Decimal(decimal),
        },
        Value::Record(fields) => Value::Record(
            fields
                .into_iter()
                .map(|(name, value)| (name, widen_decimals(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(widen_decimals).collect()),
        Value::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(key, value)| (key, widen_decimals(value)))
                .collect(),
        ),
        Value::Union(branch, inner) => Value::Union(branch, Box::new(widen_decimals(*inner))),
        other => other,
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
        let unscaled = unscaled(value, precision, scale, path)?;
        let bytes = unscaled.to_be_bytes();
        let start = minimal_start(&bytes, unscaled < 0);
        Ok(Value::Decimal(apache_avro::Decimal::from(
            bytes[start..].to_vec(),
        )))
    }

    /// The unscaled integer of `value` at `scale`; more decimals than `scale` or digits
    /// than `precision` is an error, never a rounding.
    pub fn unscaled(
        value: &Decimal,
        precision: u32,
        scale: u32,
        path: &str,
    ) -> Result<i128, EncodeError> {
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
        Ok(unscaled)
    }

    /// Where the fewest big-endian two's-complement bytes of a value start (Avro's
    /// decimal wants the shortest form).
    pub fn minimal_start(bytes: &[u8; 16], negative: bool) -> usize {
        let sign = if negative { 0xff } else { 0x00 };
        let mut start = 0;
        while start < bytes.len() - 1
            && bytes[start] == sign
            && (bytes[start + 1] & 0x80 == sign & 0x80)
        {
            start += 1;
        }
        start
    }

    pub fn dec_decimal(value: Value, scale: u32, path: &str) -> Result<Decimal, DecodeError> {
        let bytes: Vec<u8> = match value {
            Value::Decimal(decimal) => {
                Vec::<u8>::try_from(&decimal).map_err(|e| DecodeError::new(path, e.to_string()))?
            }
            Value::Bytes(bytes) => bytes,
            other => return Err(unexpected(path, "a decimal", &other)),
        };
        decimal_of_bytes(&bytes, scale, path)
    }

    /// A decimal of `scale` from its big-endian two's-complement unscaled bytes.
    pub fn decimal_of_bytes(bytes: &[u8], scale: u32, path: &str) -> Result<Decimal, DecodeError> {
        if bytes.is_empty() || bytes.len() > 16 {
            return Err(DecodeError::new(
                path,
                format!("a decimal of {} bytes is out of range", bytes.len()),
            ));
        }
        let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
        let mut full = [fill; 16];
        full[16 - bytes.len()..].copy_from_slice(bytes);
        Decimal::try_from_i128_with_scale(i128::from_be_bytes(full), scale)
            .map_err(|e| DecodeError::new(path, e.to_string()))
    }

    fn epoch() -> NaiveDate {
        NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")
    }

    /// Avro's `date`: days since 1970-01-01.
    pub fn days_since_epoch(value: &NaiveDate) -> i32 {
        value.signed_duration_since(epoch()).num_days() as i32
    }

    pub fn date_of_days(days: i32, path: &str) -> Result<NaiveDate, DecodeError> {
        epoch()
            .checked_add_signed(chrono::Duration::days(i64::from(days)))
            .ok_or_else(|| DecodeError::new(path, format!("day {days} out of range")))
    }

    pub fn timestamp_of_micros(micros: i64, path: &str) -> Result<DateTime<Utc>, DecodeError> {
        DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| DecodeError::new(path, format!("{micros} µs out of range")))
    }

    pub fn enc_date(value: &NaiveDate) -> Value {
        Value::Date(days_since_epoch(value))
    }

    pub fn dec_date(value: Value, path: &str) -> Result<NaiveDate, DecodeError> {
        match value {
            Value::Date(days) | Value::Int(days) => date_of_days(days, path),
            other => Err(unexpected(path, "a date", &other)),
        }
    }

    pub fn enc_timestamp(value: &DateTime<Utc>) -> Value {
        Value::TimestampMicros(value.timestamp_micros())
    }

    pub fn dec_timestamp(value: Value, path: &str) -> Result<DateTime<Utc>, DecodeError> {
        match value {
            Value::TimestampMicros(micros) | Value::Long(micros) => {
                timestamp_of_micros(micros, path)
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

/// Avro's binary encoding written and read straight from the generated types, for values
/// whose writer schema is this build's schema (the common case: resolving another
/// version goes through [`apache_avro`]'s generic reader). Produces the same bytes as the
/// generic writer; reading checks every length against the input before allocating, so a
/// corrupt record is an error, never a panic or a huge allocation.
pub mod binary {
    use super::*;

    /// Appends a `long`: zig-zag, then 7-bit groups, low first.
    pub fn put_long(out: &mut Vec<u8>, value: i64) {
        let mut n = ((value << 1) ^ (value >> 63)) as u64;
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    pub fn put_int(out: &mut Vec<u8>, value: i32) {
        put_long(out, i64::from(value));
    }

    pub fn put_bool(out: &mut Vec<u8>, value: bool) {
        out.push(u8::from(value));
    }

    pub fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
        put_long(out, value.len() as i64);
        out.extend_from_slice(value);
    }

    pub fn put_str(out: &mut Vec<u8>, value: &str) {
        put_bytes(out, value.as_bytes());
    }

    /// A decimal as bytes: its unscaled value at `scale`, big-endian two's complement in
    /// the fewest bytes. More decimals than `scale` or digits than `precision` is an error.
    pub fn put_decimal(
        out: &mut Vec<u8>,
        value: &Decimal,
        precision: u32,
        scale: u32,
        path: &str,
    ) -> Result<(), EncodeError> {
        let unscaled = codec::unscaled(value, precision, scale, path)?;
        let bytes = unscaled.to_be_bytes();
        let start = codec::minimal_start(&bytes, unscaled < 0);
        put_bytes(out, &bytes[start..]);
        Ok(())
    }

    pub fn put_date(out: &mut Vec<u8>, value: &NaiveDate) {
        put_int(out, codec::days_since_epoch(value));
    }

    pub fn put_timestamp(out: &mut Vec<u8>, value: &DateTime<Utc>) {
        put_long(out, value.timestamp_micros());
    }

    /// The branch of a `["null", T]` union.
    pub fn put_present(out: &mut Vec<u8>, present: bool) {
        put_long(out, i64::from(present));
    }

    /// An array's items as one block, then the end marker.
    pub fn put_array<T>(
        out: &mut Vec<u8>,
        items: &[T],
        mut item: impl FnMut(&mut Vec<u8>, &T) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        if !items.is_empty() {
            put_long(out, items.len() as i64);
            for value in items {
                item(out, value)?;
            }
        }
        put_long(out, 0);
        Ok(())
    }

    fn short(path: &str) -> DecodeError {
        DecodeError::new(path, "the value ends early".to_owned())
    }

    pub fn get_long(input: &mut &[u8], path: &str) -> Result<i64, DecodeError> {
        let mut n: u64 = 0;
        for (i, byte) in input.iter().enumerate().take(10) {
            let bits = u64::from(byte & 0x7f);
            if i == 9 && bits > 1 {
                return Err(DecodeError::new(
                    path,
                    "a long overflows 64 bits".to_owned(),
                ));
            }
            n |= bits << (7 * i);
            if byte & 0x80 == 0 {
                *input = &input[i + 1..];
                return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
            }
        }
        if input.len() >= 10 {
            Err(DecodeError::new(
                path,
                "a long of more than 10 bytes".to_owned(),
            ))
        } else {
            Err(short(path))
        }
    }

    pub fn get_int(input: &mut &[u8], path: &str) -> Result<i32, DecodeError> {
        let value = get_long(input, path)?;
        i32::try_from(value).map_err(|_| DecodeError::new(path, format!("{value} is not an int")))
    }

    pub fn get_bool(input: &mut &[u8], path: &str) -> Result<bool, DecodeError> {
        let (&byte, rest) = input.split_first().ok_or_else(|| short(path))?;
        *input = rest;
        match byte {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::new(path, format!("boolean byte {other}"))),
        }
    }

    pub fn get_bytes<'a>(input: &mut &'a [u8], path: &str) -> Result<&'a [u8], DecodeError> {
        let len = get_long(input, path)?;
        let len = usize::try_from(len)
            .map_err(|_| DecodeError::new(path, format!("negative length {len}")))?;
        if len > input.len() {
            return Err(short(path));
        }
        let (bytes, rest) = input.split_at(len);
        *input = rest;
        Ok(bytes)
    }

    pub fn get_string(input: &mut &[u8], path: &str) -> Result<String, DecodeError> {
        let bytes = get_bytes(input, path)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| DecodeError::new(path, format!("not UTF-8: {e}")))
    }

    pub fn get_decimal(input: &mut &[u8], scale: u32, path: &str) -> Result<Decimal, DecodeError> {
        codec::decimal_of_bytes(get_bytes(input, path)?, scale, path)
    }

    pub fn get_date(input: &mut &[u8], path: &str) -> Result<NaiveDate, DecodeError> {
        codec::date_of_days(get_int(input, path)?, path)
    }

    pub fn get_timestamp(input: &mut &[u8], path: &str) -> Result<DateTime<Utc>, DecodeError> {
        codec::timestamp_of_micros(get_long(input, path)?, path)
    }

    /// Whether a `["null", T]` union holds a value.
    pub fn get_present(input: &mut &[u8], path: &str) -> Result<bool, DecodeError> {
        match get_long(input, path)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::new(path, format!("union branch {other} of 2"))),
        }
    }

    /// An enum's symbol index, below `symbols`.
    pub fn get_symbol(input: &mut &[u8], symbols: usize, path: &str) -> Result<usize, DecodeError> {
        let index = get_long(input, path)?;
        usize::try_from(index)
            .ok()
            .filter(|i| *i < symbols)
            .ok_or_else(|| DecodeError::new(path, format!("symbol {index} of {symbols}")))
    }

    /// An array: blocks of items until a zero count (a negative count is followed by the
    /// block's size in bytes, which is skipped).
    pub fn get_array<T>(
        input: &mut &[u8],
        path: &str,
        mut item: impl FnMut(&mut &[u8]) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let mut items = Vec::new();
        loop {
            let count = get_long(input, path)?;
            if count == 0 {
                return Ok(items);
            }
            if count < 0 {
                _ = get_long(input, path)?;
            }
            let count = usize::try_from(count.unsigned_abs())
                .map_err(|_| DecodeError::new(path, format!("block of {count} items")))?;
            // Every item takes at least one byte.
            if count > input.len() {
                return Err(short(path));
            }
            items.reserve(count);
            for _ in 0..count {
                items.push(item(input)?);
            }
        }
    }

    /// The input is used up: trailing bytes mean the writer's schema was not this one.
    pub fn finish(input: &[u8], path: &str) -> Result<(), DecodeError> {
        if input.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::new(
                path,
                format!("{} bytes left after the record", input.len()),
            ))
        }
    }
}
