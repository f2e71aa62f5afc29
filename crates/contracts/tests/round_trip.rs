//! Every event record of the catalog survives Avro encoding and decoding unchanged, for
//! random values of every field (decimals as `rust_decimal`, dates, instants, enums,
//! optional fields, arrays of nested records).

use apache_avro::{
    Schema,
    schema::{DecimalSchema, Name, RecordSchema},
    types::Value,
};
use contracts::records::{CATALOG, Event};
use proptest::prelude::*;
use std::collections::HashMap;

/// A strategy for Avro values of `schema`, in the shapes a decoder produces.
fn value_of(schema: &Schema, names: &HashMap<Name, Schema>) -> BoxedStrategy<Value> {
    match schema {
        Schema::String => "[A-Za-z0-9._:-]{1,20}".prop_map(Value::String).boxed(),
        Schema::Int => any::<i32>().prop_map(Value::Int).boxed(),
        Schema::Long => any::<i64>().prop_map(Value::Long).boxed(),
        Schema::Boolean => any::<bool>().prop_map(Value::Boolean).boxed(),
        Schema::Date => (-100_000i32..100_000).prop_map(Value::Date).boxed(),
        Schema::TimestampMicros => (0i64..4_102_444_800_000_000)
            .prop_map(Value::TimestampMicros)
            .boxed(),
        Schema::Decimal(DecimalSchema { precision, .. }) => {
            let max = 10i128.pow(*precision as u32) - 1;
            (-max..=max)
                .prop_map(|unscaled| {
                    let bytes = unscaled.to_be_bytes().to_vec();
                    Value::Decimal(apache_avro::Decimal::from(bytes))
                })
                .boxed()
        }
        Schema::Enum(e) => {
            let symbols = e.symbols.clone();
            (0..symbols.len())
                .prop_map(move |i| Value::Enum(i as u32, symbols[i].clone()))
                .boxed()
        }
        Schema::Union(union) => {
            let inner = value_of(&union.variants()[1], names);
            prop_oneof![
                Just(Value::Union(0, Box::new(Value::Null))),
                inner.prop_map(|v| Value::Union(1, Box::new(v))),
            ]
            .boxed()
        }
        Schema::Array(array) => prop::collection::vec(value_of(&array.items, names), 0..3)
            .prop_map(Value::Array)
            .boxed(),
        Schema::Record(RecordSchema { fields, .. }) => {
            let strategies: Vec<_> = fields
                .iter()
                .map(|f| {
                    let name = f.name.clone();
                    value_of(&f.schema, names).prop_map(move |v| (name.clone(), v))
                })
                .collect();
            strategies.prop_map(Value::Record).boxed()
        }
        Schema::Ref { name } => value_of(&names[name], names),
        other => panic!("no strategy for {other:?}"),
    }
}

fn named_types(schema: &Schema, names: &mut HashMap<Name, Schema>) {
    match schema {
        Schema::Record(r) => {
            _ = names.insert(r.name.clone(), schema.clone());
            for f in &r.fields {
                named_types(&f.schema, names);
            }
        }
        Schema::Enum(e) => _ = names.insert(e.name.clone(), schema.clone()),
        Schema::Union(u) => u.variants().iter().for_each(|v| named_types(v, names)),
        Schema::Array(a) => named_types(&a.items, names),
        _ => {}
    }
}

#[test]
fn every_event_record_round_trips_through_avro() {
    let cases = std::cell::Cell::new(0);
    for info in CATALOG {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let schema = Schema::parse_str(info.schema).expect("schema parses");
        let mut names = HashMap::new();
        named_types(&schema, &mut names);
        runner
            .run(&value_of(&schema, &names), |value| {
                let event = Event::from_value(info.full_name, value).expect("decode value");
                let value = event.to_value().expect("encode value");
                let encoded = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
                    .build()
                    .and_then(|w| w.write_value_to_vec(value))
                    .expect("write datum");
                cases.set(cases.get() + 1);
                let decoded = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
                    .build()
                    .and_then(|r| r.read_value(&mut encoded.as_slice()))
                    .expect("read datum");
                let back = Event::from_value(info.full_name, decoded).expect("decode again");
                prop_assert_eq!(back, event);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", info.full_name));
    }
    assert_eq!(CATALOG.len(), 28, "every event record of the catalog");
    assert!(cases.get() >= 28 * 64, "{} cases", cases.get());
}
