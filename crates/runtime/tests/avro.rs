//! Avro through the schema registry (the project's registry on a real Postgres).

use chrono::{NaiveDate, TimeZone, Utc};
use contracts::{
    records::{Event, MemberRegistered, MemberStatus, Meta},
    wire,
};
use habitat_runtime::{Codec, CodecError, avro::AvroCodec};

fn member() -> Event {
    MemberRegistered {
        meta: Meta {
            event_id: "0193a1b2-0000-7000-8000-000000000001".to_owned(),
            event_type: "people.MemberRegistered".to_owned(),
            schema_version: 1,
            tenant_id: "coop-a".to_owned(),
            occurred_at: Utc
                .with_ymd_and_hms(2026, 3, 1, 9, 30, 0)
                .single()
                .expect("valid"),
            producer: "rest:stewards".to_owned(),
            actor: Some("steward:ana".to_owned()),
            correlation_id: "corr-1".to_owned(),
            causation_id: None,
        },
        member_id: "m-1".to_owned(),
        display_name: "Ana Ruiz".to_owned(),
        joined_on: NaiveDate::from_ymd_opt(2026, 3, 1).expect("valid"),
        status: MemberStatus::Active,
        email: None,
    }
    .into()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn events_round_trip_through_the_registry() {
    let rt = runtime();
    let url = rt
        .block_on(schema_registry::spawn_local(&test_support::database()))
        .expect("registry");
    let writer = AvroCodec::new(&url, rt.handle().clone()).expect("codec");
    let event = member();
    let bytes = writer.encode("habitat.people", &event).expect("encode");
    let (id, _) = wire::unframe(&bytes).expect("Confluent framing");
    assert!(id > 0);
    assert_eq!(
        writer.encode("habitat.people", &event).expect("cached"),
        bytes
    );

    // A reader with a cold cache finds the writer's schema by id.
    let reader = AvroCodec::new(&url, rt.handle().clone()).expect("codec");
    assert_eq!(
        reader.decode("habitat.people", &bytes).expect("decode"),
        event
    );

    let unknown = wire::frame(id + 1000, &bytes[5..]);
    match reader.decode("habitat.people", &unknown) {
        Err(CodecError::UnknownSchema(message)) => {
            assert!(
                message.contains(&format!("schema id {}", id + 1000)),
                "{message}"
            )
        }
        other => panic!("expected an unknown schema, got {other:?}"),
    }
    match reader.decode("habitat.people", b"not avro") {
        Err(CodecError::Undecodable(message)) => {
            assert!(message.contains("habitat.people"), "{message}")
        }
        other => panic!("expected undecodable bytes, got {other:?}"),
    }
    let truncated = &bytes[..bytes.len() - 3];
    assert!(matches!(
        reader.decode("habitat.people", truncated),
        Err(CodecError::Undecodable(_))
    ));
}

#[test]
fn an_unreachable_registry_is_retried_not_dead_lettered() {
    let rt = runtime();
    let port = devstack::process::free_port().expect("port");
    let codec =
        AvroCodec::new(&format!("http://127.0.0.1:{port}"), rt.handle().clone()).expect("codec");
    let framed = wire::frame(7, b"\x02");
    assert!(matches!(
        codec.decode("habitat.people", &framed),
        Err(CodecError::Unavailable(_))
    ));
    assert!(matches!(
        codec.encode("habitat.people", &member()),
        Err(CodecError::Unavailable(_))
    ));
}

/// `treasury.PatronagePolicySet` as released first (version 1, before `time_zone`).
fn policy_v1_schema() -> String {
    let history: std::collections::BTreeMap<String, Vec<String>> = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/history.json"
        ))
        .expect("schemas/history.json"),
    )
    .expect("history");
    history["habitat.treasury-habitat.treasury.PatronagePolicySet"][0].clone()
}

#[test]
fn a_record_written_with_the_first_version_of_its_schema_is_read_by_this_one() {
    use contracts::{
        EventRecord,
        records::{ContributionKind, InstallmentInterval, KindWeight, PatronagePolicySet},
    };
    use schema_registry_converter::{
        async_impl::schema_registry::{SrSettings, post_schema},
        schema_registry_common::{SchemaType, SuppliedSchema},
    };
    let rt = runtime();
    let url = rt
        .block_on(schema_registry::spawn_local(&test_support::database()))
        .expect("registry");
    let subject = "habitat.treasury-habitat.treasury.PatronagePolicySet";
    let v1 = policy_v1_schema();
    assert_ne!(
        v1,
        PatronagePolicySet::SCHEMA,
        "the catalog is at version 2"
    );
    assert_eq!(PatronagePolicySet::VERSION, 2);
    let registered = rt
        .block_on(post_schema(
            &SrSettings::new(url.clone()),
            subject.to_owned(),
            SuppliedSchema::new(None, SchemaType::Avro, v1.clone()),
        ))
        .expect("version 1 registered");

    // A producer still on version 1 writes a policy: no time zone; decimals of scale 4.
    let policy = PatronagePolicySet {
        meta: Meta {
            event_id: "0193a1b2-0000-7000-8000-000000000007".to_owned(),
            event_type: "treasury.PatronagePolicySet".to_owned(),
            schema_version: 1,
            tenant_id: "coop-a".to_owned(),
            occurred_at: Utc
                .with_ymd_and_hms(2026, 1, 5, 8, 0, 0)
                .single()
                .expect("valid"),
            producer: "rest:old".to_owned(),
            actor: None,
            correlation_id: "corr-7".to_owned(),
            causation_id: None,
        },
        weights: vec![KindWeight {
            kind: ContributionKind::Expertise,
            weight: "1.5000".parse().expect("decimal"),
        }],
        cash_ratio: "0.2500".parse().expect("decimal"),
        installments: 3,
        installment_interval: InstallmentInterval::Quarterly,
        first_payment_offset_days: 30,
        effective_from: None,
        time_zone: None,
    };
    let apache_avro::types::Value::Record(mut fields) =
        Event::from(policy.clone()).to_value().expect("a value")
    else {
        panic!("a record value");
    };
    fields.retain(|(name, _)| name != "time_zone");
    let v1_schema = apache_avro::Schema::parse_str(&v1).expect("version 1 parses");
    #[allow(deprecated)]
    let datum = apache_avro::to_avro_datum(&v1_schema, apache_avro::types::Value::Record(fields))
        .expect("written with version 1");
    let bytes = wire::frame(registered.id, &datum);

    let codec = AvroCodec::new(&url, rt.handle().clone()).expect("codec");
    let read = codec.decode("habitat.treasury", &bytes).expect("resolved");
    assert_eq!(read, Event::from(policy.clone()));

    // This release writes version 2 under the same subject: the registry's
    // BACKWARD_TRANSITIVE check lets it follow version 1.
    let mut zoned = policy;
    zoned.time_zone = Some("America/New_York".to_owned());
    let written = codec
        .encode("habitat.treasury", &Event::from(zoned.clone()))
        .expect("version 2 registered");
    let (id, _) = wire::unframe(&written).expect("framed");
    assert_ne!(id, registered.id);
    assert_eq!(
        codec
            .decode("habitat.treasury", &written)
            .expect("read back"),
        Event::from(zoned)
    );
}
