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
