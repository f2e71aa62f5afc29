//! The payment-schedule creator's scenarios through the test driver.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use contracts::records::{
    AllocationApproved, AllocationStatus, Event, InstallmentInterval, LoanFrequency, LoanFunded,
    LoanMethod, Meta, PatronagePolicySet, PaymentFailed, PaymentSettled, PaymentStatus,
};
use habitat_runtime::TestDriver;
use payment_schedule_creator::PaymentScheduleCreator;
use rust_decimal::Decimal;
use test_support::records::{self, dec};

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0)
        .single()
        .expect("valid")
}

fn meta(event_type: &str, id: &str) -> Meta {
    records::meta("coop-p", event_type, id, at(2027, 1, 20))
}

fn policy() -> Event {
    PatronagePolicySet {
        meta: meta("treasury.PatronagePolicySet", "policy-1"),
        weights: Vec::new(),
        cash_ratio: dec("0.3"),
        installments: 2,
        installment_interval: InstallmentInterval::Monthly,
        first_payment_offset_days: 11,
        effective_from: None,
        time_zone: None,
    }
    .into()
}

fn approved(member: &str, cash: &str) -> Event {
    AllocationApproved {
        meta: meta(
            "agreements.AllocationApproved",
            &format!("approved-{member}"),
        ),
        period_id: "2026".to_owned(),
        member_id: member.to_owned(),
        allocation_id: format!("2026:{member}"),
        amount: dec("500.01"),
        cash: dec(cash),
        retained: dec("350.00"),
        currency: "USD".to_owned(),
        status: AllocationStatus::Approved,
        set_hash: "h".to_owned(),
        approved_by: "board".to_owned(),
        approved_at: at(2027, 1, 20),
    }
    .into()
}

fn settled(payment: &str, reference: &str, id: &str) -> Event {
    PaymentSettled {
        meta: meta("treasury.PaymentSettled", id),
        payment_id: payment.to_owned(),
        settled_at: at(2027, 2, 1),
        method: "ach".to_owned(),
        external_ref: reference.to_owned(),
    }
    .into()
}

fn feed(driver: &mut TestDriver<PaymentScheduleCreator>, event: Event) -> Vec<Event> {
    driver
        .pipe(event.topic(), &event.key(), event)
        .expect("processed");
    driver.take_values()
}

#[test]
fn an_approved_allocation_is_scheduled_falls_due_and_settles_once() {
    let mut driver = TestDriver::new(PaymentScheduleCreator);
    assert!(feed(&mut driver, policy()).is_empty());
    let out = feed(&mut driver, approved("m-1", "150.01"));
    let Event::DistributionScheduled(schedule) = &out[0] else {
        panic!("expected the schedule first: {out:?}");
    };
    // Approved 2027-01-20, first due 11 days later; two monthly installments, the extra cent first.
    assert_eq!(
        schedule.first_due_on,
        NaiveDate::from_ymd_opt(2027, 1, 31).expect("valid")
    );
    let payments: Vec<(String, NaiveDate, Decimal)> = out[1..]
        .iter()
        .map(|e| match e {
            Event::PaymentScheduled(p) => (p.payment_id.clone(), p.due_on, p.amount),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        payments,
        [
            (
                "dist:2026:m-1:1".to_owned(),
                NaiveDate::from_ymd_opt(2027, 1, 31).expect("valid"),
                dec("75.01")
            ),
            (
                "dist:2026:m-1:2".to_owned(),
                NaiveDate::from_ymd_opt(2027, 2, 28).expect("valid"),
                dec("75.00")
            ),
        ]
    );
    assert!(
        feed(&mut driver, approved("m-1", "150.01")).is_empty(),
        "approved again: nothing new"
    );

    // The first payment falls due on the processor's clock, across a restart.
    driver.set_time(at(2027, 1, 30)).expect("clock");
    assert!(driver.take_values().is_empty());
    driver.restart();
    driver
        .pipe("habitat.treasury", "coop-p/other", policy())
        .expect("processed");
    driver.set_time(at(2027, 2, 1)).expect("clock");
    let due: Vec<String> = driver
        .take_values()
        .into_iter()
        .filter_map(|e| match e {
            Event::PaymentDue(d) => Some(d.payment_id),
            _ => None,
        })
        .collect();
    assert_eq!(due, ["dist:2026:m-1:1"]);

    let out = feed(&mut driver, settled("dist:2026:m-1:1", "ref-1", "settle-1"));
    let [Event::PaymentStatusChanged(changed)] = out.as_slice() else {
        panic!("expected one status change: {out:?}");
    };
    assert_eq!(changed.status, PaymentStatus::Settled);
    assert_eq!(changed.previous_status, PaymentStatus::Due);
    assert_eq!(changed.external_ref.as_deref(), Some("ref-1"));
    assert!(
        feed(&mut driver, settled("dist:2026:m-1:1", "ref-1", "settle-2")).is_empty(),
        "a repeated result is a no-op"
    );

    let out = feed(
        &mut driver,
        settled("dist:2026:m-1:1", "ref-OTHER", "settle-3"),
    );
    let [Event::PaymentResultRejected(rejected)] = out.as_slice() else {
        panic!("expected a rejection: {out:?}");
    };
    assert_eq!(rejected.payment_status, Some(PaymentStatus::Settled));
    assert!(
        rejected.reason.contains("already SETTLED (ref-1)"),
        "{}",
        rejected.reason
    );

    // The second payment never fires again after the clock passes both dates.
    driver.set_time(at(2027, 3, 1)).expect("clock");
    let due_again: Vec<_> = driver
        .take_values()
        .into_iter()
        .filter(|e| matches!(e, Event::PaymentDue(d) if d.payment_id.ends_with(":1")))
        .collect();
    assert!(due_again.is_empty());
}

#[test]
fn a_failed_payment_and_a_result_for_an_unknown_payment() {
    let mut driver = TestDriver::new(PaymentScheduleCreator);
    _ = feed(&mut driver, approved("m-2", "10.00"));
    let failed: Event = PaymentFailed {
        meta: meta("treasury.PaymentFailed", "fail-1"),
        payment_id: "dist:2026:m-2:1".to_owned(),
        failed_at: at(2027, 2, 20),
        reason: "account closed".to_owned(),
    }
    .into();
    let out = feed(&mut driver, failed);
    let [Event::PaymentStatusChanged(changed)] = out.as_slice() else {
        panic!("expected one status change: {out:?}");
    };
    assert_eq!(changed.status, PaymentStatus::Failed);
    assert_eq!(changed.previous_status, PaymentStatus::Scheduled);
    assert_eq!(changed.failure_reason.as_deref(), Some("account closed"));

    let out = feed(&mut driver, settled("nope", "ref", "settle-x"));
    let [Event::PaymentResultRejected(rejected)] = out.as_slice() else {
        panic!("expected a rejection: {out:?}");
    };
    assert_eq!(rejected.payment_status, None);
    assert_eq!(rejected.result_type, "treasury.PaymentSettled");
    assert!(rejected.reason.contains("no payment nope"));
}

#[test]
fn a_funded_loan_is_scheduled_to_its_last_payment() {
    let mut driver = TestDriver::new(PaymentScheduleCreator);
    let funded: Event = LoanFunded {
        meta: meta("agreements.LoanFunded", "loan-1"),
        loan_id: "L1".to_owned(),
        member_id: "m-3".to_owned(),
        principal: dec("100000.00"),
        annual_rate: dec("0.0750"),
        term_months: 12,
        frequency: LoanFrequency::Monthly,
        method: LoanMethod::Amortized,
        funded_on: NaiveDate::from_ymd_opt(2027, 1, 31).expect("valid"),
        currency: "USD".to_owned(),
    }
    .into();
    let out = feed(&mut driver, funded);
    let Event::LoanScheduled(schedule) = &out[0] else {
        panic!("expected the loan schedule first: {out:?}");
    };
    assert_eq!(schedule.payments.len(), 12);
    assert_eq!(schedule.payments[0].amount, dec("8675.74"));
    assert_eq!(schedule.payments[11].balance_after, Decimal::ZERO);
    assert_eq!(out.len(), 13, "a PaymentScheduled per installment");
}

#[test]
fn a_refused_result_or_a_repeated_approval_never_writes_on_a_state_key() {
    let mut driver = TestDriver::new(PaymentScheduleCreator);
    feed(&mut driver, policy());
    feed(&mut driver, approved("m-3", "90.00"));
    driver.set_time(at(2027, 2, 20)).expect("clock");
    _ = driver.take_values();
    feed(&mut driver, settled("dist:2026:m-3:1", "ref-3", "settle-3"));
    // After the settlement, a failure and a settlement with another reference are refused:
    // each is a fact of its own, keyed by the result; the payment's key keeps SETTLED.
    let failed: Event = PaymentFailed {
        meta: meta("treasury.PaymentFailed", "fail-3"),
        payment_id: "dist:2026:m-3:1".to_owned(),
        failed_at: at(2027, 2, 21),
        reason: "account closed".to_owned(),
    }
    .into();
    for result in [failed, settled("dist:2026:m-3:1", "ref-X", "settle-X")] {
        let result_id = result.meta().event_id.clone();
        let out = feed(&mut driver, result);
        let keys: Vec<String> = out.iter().map(Event::key).collect();
        assert_eq!(
            keys,
            [format!("coop-p/payment-exception/{result_id}")],
            "{out:?}"
        );
    }
    // The same allocation approved again schedules nothing more.
    assert!(feed(&mut driver, approved("m-3", "90.00")).is_empty());
}

#[test]
fn timers_due_on_the_clock_fire_before_the_next_record_so_a_replay_moves_through_due() {
    // As on a replay: the clock is long past the due date when the result is read, and no
    // poll came in between to fire the timer.
    let mut driver = TestDriver::new(PaymentScheduleCreator);
    _ = feed(&mut driver, policy());
    _ = feed(&mut driver, approved("m-1", "150.01"));
    driver.clock().set(at(2027, 6, 1));
    let out = feed(&mut driver, settled("dist:2026:m-1:1", "ref-1", "s-1"));
    let kinds: Vec<(&str, PaymentStatus)> = out
        .iter()
        .map(|e| match e {
            Event::PaymentDue(p) => (p.payment_id.as_str(), p.status),
            Event::PaymentStatusChanged(p) => (p.payment_id.as_str(), p.previous_status),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("dist:2026:m-1:1", PaymentStatus::Due),
            ("dist:2026:m-1:2", PaymentStatus::Due),
            ("dist:2026:m-1:1", PaymentStatus::Due),
        ],
        "both installments fall due first; the result then moves a DUE payment"
    );
}
