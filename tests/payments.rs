//! A payment's due timer on devbroker: the payment-schedule creator as a process, killed
//! and restarted with its clock moved past the due date — `PaymentDue` comes exactly once.

use chrono::{TimeDelta, Utc};
use contracts::records::{AllocationApproved, AllocationStatus, Event};
use end_to_end::{Running, TopicReader, post, runtime, stack};
use test_support::{
    records::{dec, meta},
    unique,
};

fn approved(tenant: &str, member: &str) -> Event {
    AllocationApproved {
        meta: meta(
            tenant,
            "agreements.AllocationApproved",
            &uuid::Uuid::now_v7().to_string(),
            Utc::now(),
        ),
        period_id: "2026".to_owned(),
        member_id: member.to_owned(),
        allocation_id: format!("2026:{member}"),
        amount: dec("100.00"),
        cash: dec("20.00"),
        retained: dec("80.00"),
        currency: "USD".to_owned(),
        status: AllocationStatus::Approved,
        set_hash: "h".to_owned(),
        approved_by: "board".to_owned(),
        approved_at: Utc::now(),
    }
    .into()
}

fn count(events: &[Event], matches: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| matches(e)).count()
}

#[test]
fn a_due_timer_fires_once_across_restarts() {
    let rt = runtime();
    let (registry, codec) = stack(&rt);
    let tenant = unique("coop");
    let mut agreements = TopicReader::new("habitat.agreements");
    let due_of = |member: &'static str| move |e: &Event| matches!(e, Event::PaymentDue(d) if d.member_id == member);

    // Without a policy: one payment, due 30 days after the approval.
    let mut creator = Running::start("payment-schedule-creator", &registry, &[]);
    post(&codec, &[approved(&tenant, "m-1")]);
    agreements.until(&codec, &tenant, "the payment to be scheduled", |events| {
        (count(events, |e| matches!(e, Event::PaymentScheduled(_))) == 1).then_some(())
    });
    drop(creator); // SIGKILL: the timer is only in the committed state

    // Forty days later by the processor's clock.
    let later = [(
        "HABITAT_CLOCK_OFFSET_SECONDS",
        TimeDelta::days(40).num_seconds().to_string(),
    )];
    creator = Running::start("payment-schedule-creator", &registry, &later);
    agreements.until(&codec, &tenant, "the payment to fall due", |events| {
        (count(events, due_of("m-1")) >= 1).then_some(())
    });
    drop(creator);

    // Restarted again, and a second allocation goes all the way through: the first timer
    // had every chance to fire again.
    creator = Running::start("payment-schedule-creator", &registry, &later);
    post(&codec, &[approved(&tenant, "m-2")]);
    agreements.until(
        &codec,
        &tenant,
        "the second payment to fall due",
        |events| (count(events, due_of("m-2")) == 1).then_some(()),
    );
    drop(creator);
    assert_eq!(
        count(&agreements.events, due_of("m-1")),
        1,
        "{:?}",
        agreements.events
    );
}
