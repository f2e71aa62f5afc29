//! A record's payload: its JSON (the REST API's conventions) without `meta` — what a
//! producer posts beside the envelope, and what the sink keeps in `event_log` beside the
//! meta columns.
//!
//! [`WithoutMeta`] wraps a serializer and passes the record's struct through it, leaving out
//! the `meta` field, so the payload is written in one pass: `meta` is neither formatted
//! (its time and strings were ~13 % of the sink's CPU) nor cut out afterwards.

use serde::{
    Serialize, Serializer,
    ser::{Error as _, Impossible, SerializeStruct},
};

/// The payload of `record` (an event record: a struct with a `meta` field) as JSON text.
pub fn payload_json<T: Serialize>(record: &T) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    record.serialize(WithoutMeta(&mut serde_json::Serializer::new(&mut out)))?;
    // serde_json writes UTF-8 only.
    String::from_utf8(out).map_err(serde_json::Error::custom)
}

/// The payload of `record` as a JSON value.
pub fn payload_value<T: Serialize>(record: &T) -> Result<serde_json::Value, serde_json::Error> {
    record.serialize(WithoutMeta(serde_json::value::Serializer))
}

/// A serializer for one struct, which passes every field but `meta` to `S`.
pub struct WithoutMeta<S>(pub S);

/// The struct's fields on their way to `S`.
pub struct Fields<S>(S);

const NOT_A_RECORD: &str = "an event record serializes as a struct";

/// The answer to anything but a struct.
fn refused<T, E: serde::ser::Error>() -> Result<T, E> {
    Err(E::custom(NOT_A_RECORD))
}

macro_rules! refuse {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<Self::Ok, Self::Error> {
            refused()
        })*
    };
}

impl<S: Serializer> Serializer for WithoutMeta<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Impossible<S::Ok, S::Error>;
    type SerializeTuple = Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = Impossible<S::Ok, S::Error>;
    type SerializeMap = Impossible<S::Ok, S::Error>;
    type SerializeStruct = Fields<S::SerializeStruct>;
    type SerializeStructVariant = Impossible<S::Ok, S::Error>;

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, Self::Error> {
        Ok(Fields(
            self.0.serialize_struct(name, len.saturating_sub(1))?,
        ))
    }

    refuse!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_none(self) -> Result<Self::Ok, Self::Error> {
        refused()
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<Self::Ok, Self::Error> {
        refused()
    }

    fn serialize_unit(self) -> Result<Self::Ok, Self::Error> {
        refused()
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<Self::Ok, Self::Error> {
        refused()
    }

    /// A newtype around a record (none in the catalog, but harmless) is looked through.
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Self::Ok, Self::Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Self::Ok, Self::Error> {
        refused()
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        refused()
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Self::Error> {
        refused()
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Self::Error> {
        refused()
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        refused()
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        refused()
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        refused()
    }
}

impl<S: SerializeStruct> SerializeStruct for Fields<S> {
    type Ok = S::Ok;
    type Error = S::Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        if key == "meta" {
            return Ok(());
        }
        self.0.serialize_field(key, value)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), Self::Error> {
        self.0.skip_field(key)
    }

    fn end(self) -> Result<Self::Ok, Self::Error> {
        self.0.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{
        ContributionKind, Event, InstallmentInterval, KindWeight, Meta, PatronagePolicySet,
    };

    fn policy() -> Event {
        PatronagePolicySet {
            meta: Meta {
                event_id: "e-\"1\"".to_owned(),
                event_type: "treasury.PatronagePolicySet".to_owned(),
                schema_version: 1,
                tenant_id: "coop-a".to_owned(),
                occurred_at: "2026-03-01T12:00:00.123456Z".parse().expect("time"),
                producer: "rest:test".to_owned(),
                actor: None,
                correlation_id: "c-1".to_owned(),
                causation_id: Some("}{".to_owned()),
            },
            weights: vec![KindWeight {
                kind: ContributionKind::Labor,
                weight: "1.5000".parse().expect("decimal"),
            }],
            cash_ratio: "0.3000".parse().expect("decimal"),
            installments: 2,
            installment_interval: InstallmentInterval::Quarterly,
            first_payment_offset_days: 30,
            effective_from: None,
            time_zone: Some("America/New_York".to_owned()),
        }
        .into()
    }

    #[test]
    fn the_payload_is_the_record_json_without_meta() {
        let event = policy();
        let mut full: serde_json::Value = serde_json::to_value(&event).expect("json");
        assert!(
            full.as_object_mut()
                .expect("object")
                .remove("meta")
                .is_some()
        );
        let payload = payload_json(&event).expect("payload");
        assert!(!payload.contains("meta"), "{payload}");
        let parsed: serde_json::Value = serde_json::from_str(&payload).expect("valid JSON");
        assert_eq!(parsed, full);
        // Decimals keep their text, the first field follows `{` with no stray comma.
        assert!(payload.starts_with("{\"weights\":[{"), "{payload}");
        assert!(payload.contains("\"cash_ratio\":\"0.3000\""), "{payload}");
        assert_eq!(payload_value(&event).expect("value"), full);
    }

    #[test]
    fn anything_but_a_struct_is_refused() {
        for refused in [
            payload_json(&7).err(),
            payload_json(&"text").err(),
            payload_json(&vec![1]).err(),
            payload_json(&Option::<i32>::None).err(),
        ] {
            let error = refused.expect("refused").to_string();
            assert!(error.contains(NOT_A_RECORD), "{error}");
        }
    }
}
