//! Processors of catalog events: what `ctx.meta` and `ctx.emit` fill in for them.

use chrono::{NaiveDate, TimeZone, Utc};
use contracts::{
    EventRecord,
    records::{Event, MemberRegistered, MemberStatus, MemberStatusChanged, Meta},
};
use habitat_runtime::{Context, ProcessError, Processor, Record, TestDriver, payload::headers};

/// Suspends every member who registers (a test processor).
struct Suspender;

impl Processor for Suspender {
    type In = Event;
    type Out = Event;

    fn name(&self) -> &str {
        "suspender"
    }

    fn process(
        &self,
        ctx: &mut Context<'_, Event>,
        record: &Record<Event>,
    ) -> Result<(), ProcessError> {
        let Some(Event::MemberRegistered(m)) = &record.value else {
            return Ok(());
        };
        ctx.emit(MemberStatusChanged {
            meta: ctx.meta::<MemberStatusChanged>(&m.meta.tenant_id),
            member_id: m.member_id.clone(),
            display_name: m.display_name.clone(),
            joined_on: m.joined_on,
            status: MemberStatus::Suspended,
            email: m.email.clone(),
            previous_status: m.status,
            reason: Some("test".to_owned()),
        });
        Ok(())
    }
}

#[test]
fn emitted_events_carry_meta_and_headers_from_their_cause() {
    let registered: Event = MemberRegistered {
        meta: Meta {
            event_id: "0193a1b2-0000-7000-8000-0000000000aa".to_owned(),
            event_type: "people.MemberRegistered".to_owned(),
            schema_version: 1,
            tenant_id: "coop-z".to_owned(),
            occurred_at: Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .expect("valid"),
            producer: "rest:app".to_owned(),
            actor: None,
            correlation_id: "flow-42".to_owned(),
            causation_id: None,
        },
        member_id: "m-7".to_owned(),
        display_name: "Kai".to_owned(),
        joined_on: NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid"),
        status: MemberStatus::Active,
        email: None,
    }
    .into();
    let mut driver = TestDriver::new(Suspender);
    driver
        .pipe("habitat.people", &registered.key(), registered)
        .expect("processed");
    let outputs = driver.take_outputs();
    assert_eq!(outputs.len(), 1);
    let out = &outputs[0];
    assert_eq!(out.topic, MemberStatusChanged::TOPIC);
    assert_eq!(out.key, "coop-z/member/m-7");
    assert_eq!(
        out.partition,
        contracts::partition::tenant_partition("coop-z", 6)
    );
    let Some(Event::MemberStatusChanged(changed)) = &out.value else {
        panic!("expected MemberStatusChanged, got {:?}", out.value);
    };
    let meta = &changed.meta;
    let id = uuid::Uuid::parse_str(&meta.event_id).expect("a UUID");
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(meta.event_type, "people.MemberStatusChanged");
    assert_eq!(meta.tenant_id, "coop-z");
    assert_eq!(meta.producer, "processor:suspender");
    assert_eq!(meta.correlation_id, "flow-42");
    assert_eq!(
        meta.causation_id.as_deref(),
        Some("0193a1b2-0000-7000-8000-0000000000aa")
    );
    assert_eq!(meta.occurred_at, driver.now());
    let header = |name: &str| {
        out.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(
        header(headers::EVENT_ID).as_deref(),
        Some(meta.event_id.as_str())
    );
    assert_eq!(header(headers::CORRELATION_ID).as_deref(), Some("flow-42"));
    assert_eq!(
        header(headers::CAUSATION_ID).as_deref(),
        Some("0193a1b2-0000-7000-8000-0000000000aa")
    );
}
