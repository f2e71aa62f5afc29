//! A posted event, checked: its type must be in the catalog (else 404), its payload must be
//! the record's fields in the REST JSON conventions — decimals as strings (`"1234.50"`),
//! dates `"YYYY-MM-DD"`, instants RFC 3339, enums as strings, nullable fields omittable —
//! and it must keep the domain rules the SPEC checks at the door (else 422 with the path
//! of every problem). The proxy fills `meta`.

use chrono::{DateTime, Utc};
use contracts::{
    avro::EventInfo,
    records::{CATALOG, Event, LoanFrequency},
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The body of `POST /v1/events` (and each element of a batch).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// `context.Name`, e.g. `people.ContributionApproved`.
    pub event_type: String,
    pub tenant_id: String,
    /// Who did it: `member:…`, `steward:…`, `system:…`.
    #[serde(default)]
    pub actor: Option<String>,
    /// Shared by every event of one business flow; the event id when absent.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// The record's fields except `meta`.
    pub payload: Value,
}

/// One thing wrong with a submission, at a JSON path (`payload.lines[1].debit`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub problem: String,
}

impl Problem {
    fn new(path: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

/// Why a submission was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No event record of the catalog has this type (404).
    UnknownEventType(String),
    /// The event does not match its schema or breaks a domain rule (422).
    Invalid(Vec<Problem>),
    /// A processor owns this record type: producers may not write it (403).
    NotWritable {
        event_type: String,
        /// Its single writer in `topics.yaml`.
        writer: &'static str,
    },
}

/// Producers may write only the records whose writer in `topics.yaml` is a producer edge;
/// a processor's records (allocations, schedules, payments' states, the ledger, capital
/// accounts) are refused to them.
pub fn writable(info: &EventInfo) -> Result<(), Refusal> {
    if info.producer_writable {
        Ok(())
    } else {
        Err(Refusal::NotWritable {
            event_type: info.event_type.to_owned(),
            writer: info.writer,
        })
    }
}

/// What the proxy stamps on an accepted event.
#[derive(Clone, Debug)]
pub struct Stamp<'a> {
    pub event_id: &'a str,
    /// `rest:<api-key-name>`.
    pub producer: &'a str,
    pub occurred_at: DateTime<Utc>,
}

/// Ids and tenant ids: 1–64 characters of `[A-Za-z0-9._:-]`.
pub fn is_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// ISO 4217 codes of current currencies (and the fund, precious-metal and testing codes
/// are left out on purpose).
const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

pub fn is_currency(code: &str) -> bool {
    CURRENCIES.binary_search(&code).is_ok()
}

/// The event a submission describes, stamped with `meta`; or every problem found.
pub fn event_of(submission: &Submission, stamp: &Stamp<'_>) -> Result<Event, Refusal> {
    let info = CATALOG
        .iter()
        .find(|info| info.event_type == submission.event_type)
        .ok_or_else(|| Refusal::UnknownEventType(submission.event_type.clone()))?;
    writable(info)?;
    let mut problems = Vec::new();
    if !is_id(&submission.tenant_id) {
        problems.push(Problem::new(
            "tenant_id",
            "must be 1-64 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    if let Some(correlation) = &submission.correlation_id
        && !is_id(correlation)
    {
        problems.push(Problem::new(
            "correlation_id",
            "must be 1-64 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    let Some(fields) = submission.payload.as_object() else {
        problems.push(Problem::new("payload", "must be a JSON object"));
        return Err(Refusal::Invalid(problems));
    };
    if fields.contains_key("meta") {
        problems.push(Problem::new(
            "payload.meta",
            "is filled by the proxy; leave it out",
        ));
    }
    ids_and_currencies("payload", &submission.payload, &mut problems);
    if !problems.is_empty() {
        return Err(Refusal::Invalid(problems));
    }
    let mut record: Map<String, Value> = fields.clone();
    _ = record.insert(
        "meta".to_owned(),
        serde_json::json!({
            "event_id": stamp.event_id,
            "event_type": info.event_type,
            "schema_version": info.version,
            "tenant_id": submission.tenant_id,
            "occurred_at": stamp.occurred_at,
            "producer": stamp.producer,
            "actor": submission.actor,
            "correlation_id": submission.correlation_id.as_deref().unwrap_or(stamp.event_id),
        }),
    );
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(Value::Object(record), &mut track);
    let event = match Event::deserialize_as(info.full_name, deserializer) {
        Ok(Some(event)) => event,
        Ok(None) => return Err(Refusal::UnknownEventType(submission.event_type.clone())),
        Err(error) => {
            let path = track.path().to_string();
            let path = if path == "." {
                "payload".to_owned()
            } else {
                format!("payload.{path}")
            };
            return Err(Refusal::Invalid(vec![Problem::new(
                path,
                error.to_string(),
            )]));
        }
    };
    problems.extend(rules(&event, "payload"));
    if problems.is_empty() {
        Ok(event)
    } else {
        Err(Refusal::Invalid(problems))
    }
}

/// The checks of a whole record at the door: decimals that fit their schema's scale and
/// precision, and the domain rules; paths under `prefix` (the record's JSON path).
pub fn rules(event: &Event, prefix: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    // Decimals must fit their schema's scale and precision (checked by the Avro form).
    if let Err(error) = event.to_value() {
        let field = error
            .path
            .strip_prefix(event.full_name())
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or_else(|| error.path.rsplit('.').next().unwrap_or_default());
        problems.push(Problem::new(format!("{prefix}.{field}"), error.problem));
    }
    domain_rules(event, prefix, &mut problems);
    problems
}

/// Every `*_id` string must be an id, every `currency` an ISO 4217 code, at any depth.
pub fn ids_and_currencies(path: &str, value: &Value, problems: &mut Vec<Problem>) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                let here = format!("{path}.{name}");
                match field {
                    Value::String(text) if name.ends_with("_id") && !is_id(text) => {
                        problems.push(Problem::new(
                            here,
                            "must be 1-64 characters of A-Z a-z 0-9 . _ : -",
                        ));
                    }
                    Value::String(code) if name == "currency" && !is_currency(code) => {
                        problems.push(Problem::new(
                            here,
                            format!("{code:?} is not an ISO 4217 currency code"),
                        ));
                    }
                    _ => ids_and_currencies(&here, field, problems),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                ids_and_currencies(&format!("{path}[{i}]"), item, problems);
            }
        }
        _ => {}
    }
}

/// The rules SPEC §5 and §7a put at the door.
fn domain_rules(event: &Event, prefix: &str, problems: &mut Vec<Problem>) {
    let mut rule = |ok: bool, path: &str, problem: &str| {
        if !ok {
            problems.push(Problem::new(format!("{prefix}.{path}"), problem));
        }
    };
    let min_cash = Decimal::new(20, 2);
    match event {
        Event::PatronagePolicySet(p) => {
            rule(
                p.cash_ratio >= min_cash && p.cash_ratio <= Decimal::ONE,
                "cash_ratio",
                "must be between 0.20 and 1 (a written notice of allocation is qualified only with at least 20 % in cash, IRC §1388(c))",
            );
            rule(p.installments >= 1, "installments", "must be at least 1");
            rule(
                p.first_payment_offset_days >= 0,
                "first_payment_offset_days",
                "must not be negative",
            );
            for (i, w) in p.weights.iter().enumerate() {
                rule(
                    w.weight >= Decimal::ZERO,
                    &format!("weights[{i}].weight"),
                    "must not be negative",
                );
            }
            if let Some(zone) = &p.time_zone {
                rule(
                    zone.parse::<chrono_tz::Tz>().is_ok(),
                    "time_zone",
                    "must be an IANA time zone name, e.g. America/New_York or Europe/Madrid (omit it for UTC)",
                );
            }
        }
        Event::LoanFunded(l) => {
            rule(l.principal > Decimal::ZERO, "principal", "must be positive");
            rule(
                l.annual_rate >= Decimal::ZERO,
                "annual_rate",
                "must not be negative",
            );
            rule(l.term_months >= 1, "term_months", "must be at least 1");
            rule(
                l.frequency != LoanFrequency::Quarterly || l.term_months % 3 == 0,
                "term_months",
                "a QUARTERLY loan's term must be a multiple of 3 months",
            );
        }
        Event::PeriodOpened(p) => {
            rule(
                p.starts_on <= p.ends_on,
                "ends_on",
                "must not be before starts_on",
            );
            rule(
                p.net_surplus.is_none_or(|s| s >= Decimal::ZERO),
                "net_surplus",
                "must not be negative",
            );
        }
        Event::PeriodClosed(p) => {
            rule(
                p.starts_on <= p.ends_on,
                "ends_on",
                "must not be before starts_on",
            );
            rule(
                p.net_surplus >= Decimal::ZERO,
                "net_surplus",
                "must not be negative",
            );
        }
        Event::ContributionSubmitted(c) => contribution(c.value, c.quantity, &mut rule),
        Event::ContributionApproved(c) => contribution(c.value, c.quantity, &mut rule),
        Event::ContributionRejected(c) => contribution(c.value, c.quantity, &mut rule),
        _ => {}
    }
}

fn contribution(value: Decimal, quantity: Decimal, rule: &mut impl FnMut(bool, &str, &str)) {
    rule(value >= Decimal::ZERO, "value", "must not be negative");
    rule(
        quantity >= Decimal::ZERO,
        "quantity",
        "must not be negative",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stamp() -> Stamp<'static> {
        Stamp {
            event_id: "0192f0c4-0000-7000-8000-000000000001",
            producer: "rest:apps",
            occurred_at: "2026-03-01T12:00:00Z".parse().expect("time"),
        }
    }

    fn submit(event_type: &str, payload: Value) -> Result<Event, Refusal> {
        event_of(
            &Submission {
                event_type: event_type.to_owned(),
                tenant_id: "coop-a".to_owned(),
                actor: Some("steward:ana".to_owned()),
                correlation_id: None,
                payload,
            },
            &stamp(),
        )
    }

    fn problems(result: Result<Event, Refusal>) -> Vec<Problem> {
        match result {
            Err(Refusal::Invalid(problems)) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    fn contribution() -> Value {
        json!({"contribution_id": "c-1", "member_id": "m-1", "period_id": "2026", "kind": "LABOR",
               "quantity": "8.5", "unit": "HOURS", "value": "1234.50", "description": "barn",
               "status": "APPROVED", "submitted_by": "member:m-1", "submitted_at": "2026-02-01T09:00:00Z"})
    }

    #[test]
    fn a_valid_event_is_stamped_with_meta() {
        let event = submit("people.ContributionApproved", contribution()).expect("valid");
        let Event::ContributionApproved(c) = &event else {
            panic!("{event:?}")
        };
        assert_eq!(c.value, Decimal::new(123_450, 2));
        assert_eq!(c.reviewed_by, None, "nullable fields may be omitted");
        let meta = event.meta();
        assert_eq!(meta.event_type, "people.ContributionApproved");
        assert_eq!(meta.tenant_id, "coop-a");
        assert_eq!(meta.producer, "rest:apps");
        assert_eq!(meta.correlation_id, stamp().event_id);
        assert_eq!(meta.causation_id, None);
        assert_eq!(event.key(), "coop-a/contribution/c-1");
    }

    #[test]
    fn unknown_types_and_schema_mismatches_name_the_path() {
        assert_eq!(
            submit("people.ContributionApprovd", contribution()).expect_err("unknown"),
            Refusal::UnknownEventType("people.ContributionApprovd".to_owned())
        );
        let mut payload = contribution();
        payload["value"] = json!(1234.5);
        let found = problems(submit("people.ContributionApproved", payload));
        assert_eq!(found[0].path, "payload.value", "{found:?}");
        let mut payload = contribution();
        payload["kind"] = json!("GARDENING");
        assert_eq!(
            problems(submit("people.ContributionApproved", payload))[0].path,
            "payload.kind"
        );
        let mut payload = contribution();
        _ = payload.as_object_mut().expect("object").remove("member_id");
        let found = problems(submit("people.ContributionApproved", payload));
        assert!(found[0].problem.contains("member_id"), "{found:?}");
        let mut payload = contribution();
        payload["colour"] = json!("red");
        let found = problems(submit("people.ContributionApproved", payload));
        assert!(found[0].problem.contains("colour"), "{found:?}");
        let mut payload = contribution();
        payload["meta"] = json!({});
        assert_eq!(
            problems(submit("people.ContributionApproved", payload))[0].path,
            "payload.meta"
        );
    }

    #[test]
    fn domain_rules_at_the_door() {
        let policy = |ratio: &str| {
            json!({"weights": [{"kind": "LABOR", "weight": "1.0"}], "cash_ratio": ratio,
                   "installments": 4, "installment_interval": "QUARTERLY",
                   "first_payment_offset_days": 30})
        };
        assert!(submit("treasury.PatronagePolicySet", policy("0.20")).is_ok());
        let mut zoned = policy("0.20");
        zoned["time_zone"] = json!("America/New_York");
        let accepted = submit("treasury.PatronagePolicySet", zoned.clone()).expect("a zone");
        // Written with this release's schema of the record: version 2, which added the zone.
        assert_eq!(accepted.meta().schema_version, 2);
        let member = json!({"member_id": "m-1", "display_name": "Ana", "joined_on": "2026-01-01",
                            "status": "ACTIVE"});
        let registered = submit("people.MemberRegistered", member).expect("a member");
        assert_eq!(registered.meta().schema_version, 1);
        zoned["time_zone"] = json!("Mars/Olympus_Mons");
        let found = problems(submit("treasury.PatronagePolicySet", zoned));
        assert_eq!(found[0].path, "payload.time_zone");
        let found = problems(submit("treasury.PatronagePolicySet", policy("0.19")));
        assert_eq!(found[0].path, "payload.cash_ratio");
        let loan = |frequency: &str, months: i32, principal: &str| {
            json!({"loan_id": "L-1", "member_id": "m-1", "principal": principal,
                   "annual_rate": "0.0600", "term_months": months, "frequency": frequency,
                   "method": "AMORTIZED", "funded_on": "2026-01-31", "currency": "USD"})
        };
        assert!(submit("agreements.LoanFunded", loan("QUARTERLY", 12, "1000.00")).is_ok());
        let found = problems(submit(
            "agreements.LoanFunded",
            loan("QUARTERLY", 10, "0.00"),
        ));
        let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["payload.principal", "payload.term_months"]);
        let mut bad = loan("MONTHLY", 12, "10.00");
        bad["currency"] = json!("usd");
        bad["member_id"] = json!("m 1");
        let found = problems(submit("agreements.LoanFunded", bad));
        let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["payload.currency", "payload.member_id"]);
        let mut precise = contribution();
        precise["value"] = json!("12.345");
        let found = problems(submit("people.ContributionApproved", precise));
        assert_eq!(found[0].path, "payload.value");
        assert!(
            found[0].problem.contains("more than 2 decimal places"),
            "{found:?}"
        );
        let mut negative = contribution();
        negative["value"] = json!("-1.00");
        assert_eq!(
            problems(submit("people.ContributionApproved", negative))[0].path,
            "payload.value"
        );
    }

    #[test]
    fn ids_and_currencies() {
        assert!(is_id("coop-a") && is_id("alloc:2026:m-1") && is_id(&"x".repeat(64)));
        assert!(!is_id("") && !is_id("a/b") && !is_id(&"x".repeat(65)) && !is_id("é"));
        assert!(
            is_currency("USD") && is_currency("EUR") && !is_currency("XXX") && !is_currency("usd")
        );
        let mut sorted = CURRENCIES.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, CURRENCIES, "kept sorted for the binary search");
    }
}
