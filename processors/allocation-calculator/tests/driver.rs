//! The allocation calculator's scenarios through the test driver.

use allocation_calculator::AllocationCalculator;
use chrono::{TimeZone, Utc};
use contracts::records::{
    AllocationSetApproved, AllocationSetStatus, Event, MemberPatronage, Meta, PeriodPatronageSealed,
};
use habitat_runtime::TestDriver;
use rust_decimal::Decimal;
use test_support::records::{self, dec};

fn meta(event_type: &str, id: &str) -> Meta {
    records::meta(
        "coop-a",
        event_type,
        id,
        Utc.with_ymd_and_hms(2027, 1, 15, 9, 0, 0)
            .single()
            .expect("valid"),
    )
}

fn seal(period: &str, surplus: &str, members: &[(&str, &str)]) -> Event {
    let total: Decimal = members.iter().map(|(_, w)| dec(w)).sum();
    PeriodPatronageSealed {
        meta: meta(
            "agreements.PeriodPatronageSealed",
            &format!("seal-{period}"),
        ),
        period_id: period.to_owned(),
        currency: "USD".to_owned(),
        net_surplus: dec(surplus),
        weights: Vec::new(),
        cash_ratio: dec("0.2000"),
        members: members
            .iter()
            .map(|(id, w)| MemberPatronage {
                member_id: (*id).to_owned(),
                by_kind: Vec::new(),
                weighted: dec(w),
            })
            .collect(),
        total_weighted: total,
        sealed_at: Utc
            .with_ymd_and_hms(2027, 1, 15, 9, 0, 0)
            .single()
            .expect("valid"),
    }
    .into()
}

fn approval(period: &str, hash: &str, id: &str) -> Event {
    AllocationSetApproved {
        meta: meta("agreements.AllocationSetApproved", id),
        period_id: period.to_owned(),
        set_hash: hash.to_owned(),
        approved_by: "board:2027-01".to_owned(),
        approved_at: Utc
            .with_ymd_and_hms(2027, 1, 20, 18, 0, 0)
            .single()
            .expect("valid"),
    }
    .into()
}

fn feed(driver: &mut TestDriver<AllocationCalculator>, event: Event) -> Vec<Event> {
    driver
        .pipe(event.topic(), &event.key(), event)
        .expect("processed");
    driver.take_values()
}

/// (member, amount, cash, retained) of every AllocationProposed.
fn proposed(outputs: &[Event]) -> Vec<(String, Decimal, Decimal, Decimal)> {
    outputs
        .iter()
        .filter_map(|e| match e {
            Event::AllocationProposed(a) => {
                Some((a.member_id.clone(), a.amount, a.cash, a.retained))
            }
            _ => None,
        })
        .collect()
}

fn set_hash(outputs: &[Event]) -> String {
    outputs
        .iter()
        .find_map(|e| match e {
            Event::AllocationSetProposed(s) => Some(s.set_hash.clone()),
            _ => None,
        })
        .expect("a proposed set")
}

#[test]
fn three_equal_members_and_the_extra_cent_goes_to_the_lowest_id() {
    let mut driver = TestDriver::new(AllocationCalculator);
    let out = feed(
        &mut driver,
        seal(
            "2026",
            "10000.00",
            &[("m-c", "50.0000"), ("m-a", "50.0000"), ("m-b", "50.0000")],
        ),
    );
    assert_eq!(
        proposed(&out),
        [
            ("m-a".into(), dec("3333.34"), dec("666.67"), dec("2666.67")),
            ("m-b".into(), dec("3333.33"), dec("666.67"), dec("2666.66")),
            ("m-c".into(), dec("3333.33"), dec("666.67"), dec("2666.66")),
        ]
    );
    let Some(Event::AllocationSetProposed(set)) = out.last() else {
        panic!("the set comes last: {out:?}");
    };
    assert_eq!(set.total_amount, dec("10000.00"));
    assert_eq!(set.total_cash + set.total_retained, dec("10000.00"));
    assert_eq!(set.members, 3);
    assert_eq!(set.status, AllocationSetStatus::Proposed);
    assert_eq!(set.set_hash.len(), 64);
    // The same seal again proposes nothing new.
    assert!(
        feed(
            &mut driver,
            seal(
                "2026",
                "10000.00",
                &[("m-c", "50.0000"), ("m-a", "50.0000"), ("m-b", "50.0000")]
            )
        )
        .is_empty()
    );
}

#[test]
fn zero_surplus_proposes_an_empty_set() {
    let mut driver = TestDriver::new(AllocationCalculator);
    let out = feed(&mut driver, seal("2026", "0.00", &[("m-a", "10.0000")]));
    assert!(proposed(&out).is_empty());
    let [Event::AllocationSetProposed(set)] = out.as_slice() else {
        panic!("expected only the set: {out:?}");
    };
    assert_eq!(set.members, 0);
    assert_eq!(set.total_amount, Decimal::ZERO);
}

#[test]
fn a_stale_approval_is_rejected_then_the_correct_one_approves_and_a_duplicate_is_a_no_op() {
    let mut driver = TestDriver::new(AllocationCalculator);
    let out = feed(
        &mut driver,
        seal("2026", "100.00", &[("m-a", "1.0000"), ("m-b", "3.0000")]),
    );
    let hash = set_hash(&out);

    let stale = feed(&mut driver, approval("2026", &"0".repeat(64), "decision-1"));
    let rejected = refusal(&stale);
    assert!(
        rejected.reason.contains("does not match"),
        "{}",
        rejected.reason
    );
    assert_eq!(rejected.decision_event_id, "decision-1");
    assert_eq!(rejected.proposed_set_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(rejected.set_status, Some(AllocationSetStatus::Proposed));

    let approved = feed(&mut driver, approval("2026", &hash, "decision-2"));
    let amounts: Vec<(String, Decimal)> = approved
        .iter()
        .filter_map(|e| match e {
            Event::AllocationApproved(a) => Some((a.member_id.clone(), a.amount)),
            _ => None,
        })
        .collect();
    assert_eq!(
        amounts,
        [("m-a".into(), dec("25.00")), ("m-b".into(), dec("75.00"))]
    );
    let Some(Event::AllocationSetStatusChanged(status)) = approved.last() else {
        panic!("the status change comes last: {approved:?}");
    };
    assert_eq!(status.status, AllocationSetStatus::Approved);
    assert_eq!(status.total_amount, dec("100.00"));
    assert_eq!(status.approved_by.as_deref(), Some("board:2027-01"));

    assert!(
        feed(&mut driver, approval("2026", &hash, "decision-3")).is_empty(),
        "a second approval is a no-op"
    );

    // A stale approval posted after the approval: its own fact, keyed by the decision;
    // nothing is written on the set's key, so the approved set stays the key's latest value.
    let late = feed(&mut driver, approval("2026", &"f".repeat(64), "decision-4"));
    let rejected = refusal(&late);
    assert_eq!(rejected.set_status, Some(AllocationSetStatus::Approved));
    assert_eq!(
        late[0].key(),
        "coop-a/allocation-approval-rejection/2026/decision-4"
    );
    assert!(
        late.iter().all(|e| e.key() != "coop-a/allocation-set/2026"),
        "{late:?}"
    );
}

/// The one record a refused approval gives: an `AllocationApprovalRejected`.
fn refusal(out: &[Event]) -> &contracts::records::AllocationApprovalRejected {
    let [Event::AllocationApprovalRejected(rejected)] = out else {
        panic!("expected one refusal: {out:?}");
    };
    rejected
}

#[test]
fn an_approval_for_an_unknown_period_is_rejected_with_the_reason() {
    let mut driver = TestDriver::new(AllocationCalculator);
    let out = feed(&mut driver, approval("1999", "abc", "decision-9"));
    let rejected = refusal(&out);
    assert!(
        rejected.reason.contains("no allocation set"),
        "{}",
        rejected.reason
    );
    assert_eq!(
        (rejected.proposed_set_hash.as_ref(), rejected.set_status),
        (None, None)
    );
}

#[test]
fn records_it_does_not_read_are_passed_over() {
    let mut driver = TestDriver::new(AllocationCalculator);
    // A tally shares the agreements topic with the seals, but topics.yaml does not name
    // the calculator among its readers: it never reaches the processor.
    let tally: Event = contracts::records::PatronageTallied {
        meta: meta("agreements.PatronageTallied", "tally-1"),
        period_id: "2026".to_owned(),
        member_id: "m-1".to_owned(),
        by_kind: Vec::new(),
        total: dec("10.00"),
        contributions: 1,
    }
    .into();
    assert!(feed(&mut driver, tally).is_empty());
    assert_eq!(driver.passed(), 1);
    // A seal is read.
    let outputs = feed(&mut driver, seal("2026", "100.00", &[("m-1", "1")]));
    assert_eq!(proposed(&outputs).len(), 1);
    assert_eq!(driver.passed(), 1);
}
