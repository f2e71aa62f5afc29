//! Every event record of the catalog survives Avro encoding and decoding unchanged, for
//! random values of every field (decimals as `rust_decimal`, dates, instants, enums,
//! optional fields, arrays of nested records).

use apache_avro::{
    Schema,
    schema::{DecimalSchema, Name, RecordSchema},
    types::Value,
};
use contracts::records::{CATALOG, Event};
use proptest::{prelude::*, test_runner::TestCaseError};
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

/// Runs `check` on 64 random values of every event record of the catalog; returns how
/// many cases ran.
fn for_every_record(
    check: impl Fn(&contracts::avro::EventInfo, &Schema, Value) -> Result<(), TestCaseError>,
) -> usize {
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
                cases.set(cases.get() + 1);
                check(info, &schema, value)
            })
            .unwrap_or_else(|e| panic!("{}: {e}", info.full_name));
    }
    cases.get()
}

fn generic_write(schema: &Schema, value: Value) -> Vec<u8> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .expect("write datum")
}

#[test]
fn every_event_record_round_trips_through_avro() {
    let cases = for_every_record(|info, schema, value| {
        let event = Event::from_value(info.full_name, value).expect("decode value");
        let encoded = generic_write(schema, event.to_value().expect("encode value"));
        let decoded = apache_avro::reader::datum::GenericDatumReader::builder(schema)
            .build()
            .and_then(|r| r.read_value(&mut encoded.as_slice()))
            .expect("read datum");
        let back = Event::from_value(info.full_name, decoded).expect("decode again");
        prop_assert_eq!(back, event);
        Ok(())
    });
    assert_eq!(CATALOG.len(), 30, "every event record of the catalog");
    assert!(cases >= 29 * 64, "{cases} cases");
}

/// The generated binary codec writes exactly the bytes apache-avro's generic writer does,
/// reads them back to the same record, and refuses every truncation of them.
#[test]
fn the_generated_binary_codec_matches_the_generic_one() {
    let cases = for_every_record(|info, schema, value| {
        // Written by the generic writer from a decoder-shaped value…
        let generic = generic_write(schema, value.clone());
        let event = Event::from_value(info.full_name, value).expect("decode value");
        // …read by the generated reader.
        let read = Event::read_avro(info.full_name, &generic).expect("read binary");
        prop_assert_eq!(&read, &event);
        // The generated writer gives the generic writer's bytes for the record.
        let mut written = Vec::new();
        event.write_avro(&mut written).expect("write binary");
        let expected = generic_write(schema, event.to_value().expect("to value"));
        prop_assert_eq!(&written, &expected);
        // Every truncation is an error, and so is a byte too many.
        for end in 0..written.len() {
            prop_assert!(Event::read_avro(info.full_name, &written[..end]).is_err());
        }
        let mut longer = written.clone();
        longer.push(0);
        prop_assert!(Event::read_avro(info.full_name, &longer).is_err());
        Ok(())
    });
    assert!(cases >= 29 * 64, "{cases} cases");
}

#[test]
fn corrupt_lengths_are_errors_not_allocations() {
    use contracts::avro::binary;
    // A string claiming 2^62 bytes.
    let mut huge = Vec::new();
    binary::put_long(&mut huge, 1 << 62);
    assert!(binary::get_string(&mut huge.as_slice(), "s").is_err());
    // An array claiming a billion items in three bytes.
    let mut many = Vec::new();
    binary::put_long(&mut many, 1_000_000_000);
    assert!(binary::get_array(&mut many.as_slice(), "a", |i| binary::get_long(i, "a")).is_err());
    // A long of eleven bytes.
    let eleven = [0xff_u8; 11];
    assert!(binary::get_long(&mut &eleven[..], "l").is_err());
    // Blocks with a byte size (negative counts) are read.
    let mut blocks = Vec::new();
    binary::put_long(&mut blocks, -2);
    binary::put_long(&mut blocks, 2);
    binary::put_long(&mut blocks, 7);
    binary::put_long(&mut blocks, -8);
    binary::put_long(&mut blocks, 0);
    let items = binary::get_array(&mut blocks.as_slice(), "a", |i| binary::get_long(i, "a"));
    assert_eq!(items, Ok(vec![7, -8]));
    // Extremes of a long survive.
    for value in [i64::MIN, i64::MAX, 0, -1, 1, 63, -64, 64] {
        let mut out = Vec::new();
        binary::put_long(&mut out, value);
        assert_eq!(binary::get_long(&mut out.as_slice(), "l"), Ok(value));
    }
}
