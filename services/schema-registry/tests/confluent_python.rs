//! Confluent's Python client (confluent-kafka, pinned in scripts/python-requirements.txt and
//! installed by scripts/test) against our registry: every call docs/decisions/0002 says we
//! serve, and a catalog record with decimals written by Confluent's AvroSerializer and read
//! by our processors' codec, and the reverse.

use std::{path::PathBuf, process::Command};

use chrono::{NaiveDate, TimeZone, Utc};
use contracts::{
    EventRecord,
    records::{ContributionKind, Event, InstallmentInterval, KindWeight, Meta, PatronagePolicySet},
};
use habitat_runtime::{Codec, avro::AvroCodec};
use serde_json::{Value, json};

const SUBJECT: &str = "habitat.treasury-habitat.treasury.PatronagePolicySet";

/// The virtual environment scripts/test makes (or `HABITAT_CONFLUENT_PYTHON`).
fn python() -> PathBuf {
    let path = std::env::var_os("HABITAT_CONFLUENT_PYTHON").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/tools/python-confluent/bin/python")
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: run the tests with ./habitat test (scripts/test installs \
         scripts/python-requirements.txt there), or point HABITAT_CONFLUENT_PYTHON at a \
         Python with confluent-kafka[avro,schemaregistry]==2.12.0",
        path.display()
    );
    path
}

fn policy(time: (i32, u32, u32), ratio: &str, weight: &str, zone: Option<&str>) -> Event {
    PatronagePolicySet {
        meta: Meta {
            event_id: "0193a1b2-0000-7000-8000-00000000abcd".to_owned(),
            event_type: "treasury.PatronagePolicySet".to_owned(),
            schema_version: PatronagePolicySet::VERSION,
            tenant_id: "coop-py".to_owned(),
            occurred_at: Utc
                .with_ymd_and_hms(time.0, time.1, time.2, 8, 0, 0)
                .single()
                .expect("valid")
                + chrono::TimeDelta::microseconds(123_456),
            producer: "rest:python".to_owned(),
            actor: Some("steward:ana".to_owned()),
            correlation_id: "corr-py".to_owned(),
            causation_id: None,
        },
        weights: vec![
            KindWeight {
                kind: ContributionKind::Labor,
                weight: "1.0000".parse().expect("decimal"),
            },
            KindWeight {
                kind: ContributionKind::Expertise,
                weight: weight.parse().expect("decimal"),
            },
        ],
        cash_ratio: ratio.parse().expect("decimal"),
        installments: 3,
        installment_interval: InstallmentInterval::Quarterly,
        first_payment_offset_days: 30,
        effective_from: NaiveDate::from_ymd_opt(2027, 1, 1),
        time_zone: zone.map(str::to_owned),
    }
    .into()
}

#[test]
fn confluents_python_client_speaks_with_our_registry_and_codec() {
    let python = python();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let url = rt
        .block_on(schema_registry::spawn_local(&test_support::database()))
        .expect("registry");
    let codec = AvroCodec::new(&url, rt.handle().clone()).expect("codec");
    // Ours first: a policy with a negative-free small decimal and a long one.
    let ours = policy((2026, 2, 1), "0.3333", "0.5000", None);
    let ours_bytes = codec.encode("habitat.treasury", &ours).expect("encode");
    let schema_file = test_support::scratch_dir().join("PatronagePolicySet.avsc");
    std::fs::write(&schema_file, PatronagePolicySet::SCHEMA).expect("schema file");
    let hex: String = ours_bytes.iter().map(|b| format!("{b:02x}")).collect();

    let output = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/confluent_client.py"
        ))
        .args([url.as_str(), SUBJECT])
        .arg(&schema_file)
        .arg(&hex)
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_str(&stdout).expect("one JSON object");
    let checks: Vec<&str> = answer["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for call in [
        "register",
        "lookup",
        "get_versions",
        "get_version",
        "test_compatibility",
        "test_compatibility_all_versions",
        "get_config of a subject",
        "delete_version",
        "delete_subject",
        "serialize",
    ] {
        assert!(checks.contains(&call), "{call} was not checked: {checks:?}");
    }

    // Confluent's AvroSerializer wrote it; our codec reads it, decimals exact.
    let produced: Vec<u8> = (0..answer["produced"].as_str().expect("hex").len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&answer["produced"].as_str().expect("hex")[i..i + 2], 16)
                .expect("hex")
        })
        .collect();
    assert_eq!(
        codec.decode("habitat.treasury", &produced).expect("decode"),
        policy((2026, 1, 5), "0.2500", "1.5000", Some("Europe/Madrid"))
    );

    // Our codec wrote it; Confluent's AvroDeserializer reads the same values.
    let read = &answer["ours"];
    assert_eq!(read["cash_ratio"], json!("0.3333"));
    assert_eq!(
        read["weights"],
        json!([{"kind": "LABOR", "weight": "1.0000"}, {"kind": "EXPERTISE", "weight": "0.5000"}])
    );
    assert_eq!(read["effective_from"], json!("2027-01-01"));
    assert_eq!(read["time_zone"], Value::Null);
    assert_eq!(
        read["meta"]["occurred_at"],
        json!("2026-02-01T08:00:00.123456+00:00")
    );
    assert_eq!(read["meta"]["tenant_id"], json!("coop-py"));
}
