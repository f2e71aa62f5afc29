//! Money from approval to bank and back, through both processors in the test driver: the
//! payment-schedule creator's outputs feed the distribution recorder, and after every
//! scenario the tenant's trial balance is zero.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use contracts::records::{
    AllocationApproved, AllocationSetStatus, AllocationSetStatusChanged, AllocationStatus, Event,
    LoanFrequency, LoanFunded, LoanMethod, Meta, PaymentFailed, PaymentSettled, PeriodDistributed,
};
use distribution_recorder::{DistributionRecorder, PAYABLE_NOT_NEGATIVE, UNKNOWN_DISTRIBUTION};
use habitat_runtime::{ProcessError, TestDriver};
use payment_schedule_creator::PaymentScheduleCreator;
use rust_decimal::Decimal;
use test_support::records::{self, dec};

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0)
        .single()
        .expect("valid")
}

fn meta(event_type: &str, id: &str) -> Meta {
    records::meta("coop-l", event_type, id, at(2027, 1, 20))
}

/// Both processors, wired as on the broker.
struct Pipeline {
    creator: TestDriver<PaymentScheduleCreator>,
    recorder: TestDriver<DistributionRecorder>,
    recorded: Vec<Event>,
}

impl Pipeline {
    fn new() -> Self {
        Self {
            creator: TestDriver::new(PaymentScheduleCreator),
            recorder: TestDriver::new(DistributionRecorder::default()),
            recorded: Vec::new(),
        }
    }

    /// Feeds an input to whichever processors read it, and the creator's outputs on.
    fn feed(&mut self, event: Event) -> Vec<Event> {
        let creator_reads = !matches!(
            event,
            Event::DistributionScheduled(_) | Event::PaymentStatusChanged(_)
        );
        let mut for_recorder = vec![];
        if creator_reads {
            self.creator
                .pipe(event.topic(), &event.key(), event.clone())
                .expect("processed");
        }
        if matches!(event, Event::AllocationApproved(_) | Event::LoanFunded(_)) {
            for_recorder.push(event);
        }
        self.flush(for_recorder)
    }

    /// Moves the clock: due timers fire.
    fn at(&mut self, now: DateTime<Utc>) -> Vec<Event> {
        self.creator.set_time(now).expect("clock");
        self.flush(vec![])
    }

    fn flush(&mut self, mut for_recorder: Vec<Event>) -> Vec<Event> {
        let created = self.creator.take_values();
        for_recorder.extend(
            created
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Event::DistributionScheduled(_) | Event::PaymentStatusChanged(_)
                    )
                })
                .cloned(),
        );
        for event in for_recorder {
            self.recorder
                .pipe(event.topic(), &event.key(), event)
                .expect("processed");
        }
        let recorded = self.recorder.take_values();
        self.recorded.extend(recorded.iter().cloned());
        created.into_iter().chain(recorded).collect()
    }

    /// Balance per (account, member): debits positive, in cents.
    fn trial_balance(&self) -> BTreeMap<(String, Option<String>), i64> {
        let mut balances = BTreeMap::new();
        for event in &self.recorded {
            if let Event::TransactionPosted(t) = event {
                for line in &t.lines {
                    let cents = ((line.debit - line.credit) * Decimal::ONE_HUNDRED).trunc();
                    *balances
                        .entry((line.account.clone(), line.member_id.clone()))
                        .or_default() += i64::try_from(cents.mantissa()).expect("fits");
                }
            }
        }
        balances
    }

    fn assert_trial_balance_is_zero(&self) {
        let balances = self.trial_balance();
        assert_eq!(balances.values().sum::<i64>(), 0, "{balances:?}");
        for ((account, member), cents) in &balances {
            if account == "2300" {
                assert!(
                    *cents <= 0,
                    "payable of {member:?} went below zero: {cents}"
                );
            }
        }
    }

    fn transactions(&self) -> usize {
        self.recorded
            .iter()
            .filter(|e| matches!(e, Event::TransactionPosted(_)))
            .count()
    }
}

fn approved(member: &str) -> Event {
    AllocationApproved {
        meta: meta(
            "agreements.AllocationApproved",
            &format!("approved-{member}"),
        ),
        period_id: "2026".to_owned(),
        member_id: member.to_owned(),
        allocation_id: format!("2026:{member}"),
        amount: dec("500.01"),
        cash: dec("150.01"),
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
        settled_at: at(2027, 3, 1),
        method: "ach".to_owned(),
        external_ref: reference.to_owned(),
    }
    .into()
}

#[test]
fn an_allocation_is_scheduled_settled_and_lands_in_the_ledger_and_capital_account() {
    let mut p = Pipeline::new();
    let out = p.feed(approved("m-1"));
    // Dr 3900 500.01 / Cr 2300(m-1) 150.01, Cr 3100(m-1) 350.00; capital 350.00.
    let capital: Vec<Decimal> = out
        .iter()
        .filter_map(|e| match e {
            Event::CapitalAccountUpdated(c) => Some(c.balance),
            _ => None,
        })
        .collect();
    assert_eq!(capital, [dec("350.00")]);
    p.assert_trial_balance_is_zero();
    assert!(
        p.feed(approved("m-1")).is_empty(),
        "approved again: nothing posted twice"
    );

    _ = p.at(at(2027, 2, 20));
    p.feed(settled("dist:2026:m-1:1", "ref-1", "s-1"));
    p.assert_trial_balance_is_zero();
    let balances = p.trial_balance();
    assert_eq!(
        balances[&("2300".to_owned(), Some("m-1".to_owned()))],
        0,
        "the payable is paid"
    );
    assert_eq!(balances[&("1010".to_owned(), None)], -15_001);
    assert!(
        p.recorded
            .iter()
            .any(|e| matches!(e, Event::DistributionCompleted(d) if d.cash == dec("150.01")))
    );

    // A duplicate settlement posts nothing; an unknown one is reported, not posted.
    let before = p.transactions();
    let dup = p.feed(settled("dist:2026:m-1:1", "ref-1", "s-2"));
    assert!(dup.is_empty());
    let unknown = p.feed(settled("dist:2026:m-9:1", "ref-9", "s-3"));
    assert!(matches!(
        unknown.as_slice(),
        [Event::PaymentResultRejected(_)]
    ));
    assert_eq!(p.transactions(), before);
    p.assert_trial_balance_is_zero();
}

#[test]
fn a_failed_payment_posts_nothing() {
    let mut p = Pipeline::new();
    p.feed(approved("m-2"));
    let before = p.transactions();
    let failed: Event = PaymentFailed {
        meta: meta("treasury.PaymentFailed", "f-1"),
        payment_id: "dist:2026:m-2:1".to_owned(),
        failed_at: at(2027, 3, 1),
        reason: "account closed".to_owned(),
    }
    .into();
    let out = p.feed(failed);
    assert!(
        out.iter()
            .any(|e| matches!(e, Event::PaymentStatusChanged(_)))
    );
    assert_eq!(p.transactions(), before);
    assert!(
        !p.recorded
            .iter()
            .any(|e| matches!(e, Event::DistributionCompleted(_)))
    );
    p.assert_trial_balance_is_zero();
    assert_eq!(
        p.trial_balance()[&("2300".to_owned(), Some("m-2".to_owned()))],
        -15_001,
        "still owed"
    );
}

#[test]
fn a_loan_from_funding_to_its_final_payment() {
    let mut p = Pipeline::new();
    let funded: Event = LoanFunded {
        meta: meta("agreements.LoanFunded", "loan-1"),
        loan_id: "L1".to_owned(),
        member_id: "m-3".to_owned(),
        principal: dec("12000.00"),
        annual_rate: dec("0.0600"),
        term_months: 12,
        frequency: LoanFrequency::Quarterly,
        method: LoanMethod::InterestOnly,
        funded_on: NaiveDate::from_ymd_opt(2027, 3, 15).expect("valid"),
        currency: "USD".to_owned(),
    }
    .into();
    p.feed(funded);
    p.assert_trial_balance_is_zero();
    for n in 1..=4 {
        _ = p.at(at(2028, 4, 1));
        p.feed(settled(
            &format!("loan:L1:{n}"),
            &format!("ref-{n}"),
            &format!("s-{n}"),
        ));
        p.assert_trial_balance_is_zero();
    }
    let balances = p.trial_balance();
    assert_eq!(
        balances[&("1300".to_owned(), Some("m-3".to_owned()))],
        0,
        "the loan is repaid"
    );
    assert_eq!(
        balances[&("4200".to_owned(), None)],
        -72_000,
        "4 × 180.00 of interest"
    );
    assert_eq!(balances[&("1010".to_owned(), None)], 72_000);
}

#[test]
fn a_settlement_of_a_payable_never_posted_breaks_an_invariant_and_writes_nothing() {
    // The creator schedules and settles a distribution the recorder saw scheduled but
    // never approved (a record missing from its input): paying it would take the payable
    // below zero.
    let mut creator = TestDriver::new(PaymentScheduleCreator);
    let approval = approved("m-7");
    creator
        .pipe(approval.topic(), &approval.key(), approval)
        .expect("scheduled");
    creator.set_time(at(2027, 2, 20)).expect("due");
    let result = settled("dist:2026:m-7:1", "ref-7", "s-7");
    creator
        .pipe(result.topic(), &result.key(), result)
        .expect("settled");
    let created = creator.take_values();
    let of = |wanted: fn(&Event) -> bool| {
        created
            .iter()
            .find(|e| wanted(e))
            .cloned()
            .expect("created")
    };
    let scheduled = of(|e| matches!(e, Event::DistributionScheduled(_)));
    let settlement = of(|e| matches!(e, Event::PaymentStatusChanged(_)));

    let mut recorder = TestDriver::new(DistributionRecorder::default());
    recorder
        .pipe(scheduled.topic(), &scheduled.key(), scheduled)
        .expect("kept");
    let outcome = recorder.pipe(settlement.topic(), &settlement.key(), settlement);
    let Err(ProcessError::Broken {
        invariant,
        evidence,
    }) = outcome
    else {
        panic!("expected a broken invariant: {outcome:?}");
    };
    assert_eq!(invariant, PAYABLE_NOT_NEGATIVE);
    assert!(
        evidence.contains("member m-7's payable 0.00 USD would become -150.01"),
        "{evidence}"
    );
    assert!(recorder.take_outputs().is_empty(), "nothing is written");
}

#[test]
fn a_settlement_of_a_distribution_never_scheduled_is_dead_lettered_and_posts_nothing() {
    let mut creator = TestDriver::new(PaymentScheduleCreator);
    let approval = approved("m-8");
    creator
        .pipe(approval.topic(), &approval.key(), approval)
        .expect("scheduled");
    let result = settled("dist:2026:m-8:1", "ref-8", "s-8");
    creator
        .pipe(result.topic(), &result.key(), result)
        .expect("settled");
    let settlement = creator
        .take_values()
        .into_iter()
        .find(|e| matches!(e, Event::PaymentStatusChanged(_)))
        .expect("a status change");

    let mut recorder = TestDriver::new(DistributionRecorder::default());
    recorder
        .pipe(settlement.topic(), &settlement.key(), settlement)
        .expect("dead-lettered, not fatal");
    assert!(recorder.take_outputs().is_empty(), "nothing is posted");
    let letters = recorder.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].class, UNKNOWN_DISTRIBUTION);
    assert!(
        letters[0]
            .message
            .contains("payment dist:2026:m-8:1 settled for distribution dist:2026:m-8"),
        "{}",
        letters[0].message
    );
}

fn set_approved(total_cash: &str) -> Event {
    AllocationSetStatusChanged {
        meta: meta("agreements.AllocationSetStatusChanged", "set-approved"),
        period_id: "2026".to_owned(),
        currency: "USD".to_owned(),
        net_surplus: dec("1000.02"),
        total_amount: dec("1000.02"),
        total_cash: dec(total_cash),
        total_retained: dec("700.00"),
        members: 2,
        set_hash: "h".to_owned(),
        status: AllocationSetStatus::Approved,
        reason: None,
        decision_event_id: "decision".to_owned(),
        approved_by: Some("board".to_owned()),
    }
    .into()
}

#[test]
fn a_period_paid_out_in_full_is_announced_and_forgotten_and_its_records_post_nothing_again() {
    let mut p = Pipeline::new();
    p.feed(approved("m-1"));
    p.feed(approved("m-2"));
    p.recorder
        .pipe(
            "habitat.agreements",
            "coop-l/allocation-set/2026",
            set_approved("300.02"),
        )
        .expect("kept");
    _ = p.at(at(2027, 2, 20));
    let first = p.feed(settled("dist:2026:m-1:1", "ref-1", "s-1"));
    assert!(
        !first
            .iter()
            .any(|e| matches!(e, Event::PeriodDistributed(_))),
        "one of two distributions paid: {first:?}"
    );
    let last = p.feed(settled("dist:2026:m-2:1", "ref-2", "s-2"));
    let paid_out: Vec<&PeriodDistributed> = last
        .iter()
        .filter_map(|e| match e {
            Event::PeriodDistributed(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(paid_out.len(), 1, "{last:?}");
    let d = paid_out[0];
    assert_eq!((d.period_id.as_str(), d.cash), ("2026", dec("300.02")));
    let members: Vec<(&str, Decimal, &[String])> = d
        .distributions
        .iter()
        .map(|x| (x.member_id.as_str(), x.cash, x.payments.as_slice()))
        .collect();
    assert_eq!(
        members,
        [
            ("m-1", dec("150.01"), &["dist:2026:m-1:1".to_owned()][..]),
            ("m-2", dec("150.01"), &["dist:2026:m-2:1".to_owned()][..]),
        ]
    );
    p.assert_trial_balance_is_zero();

    // Forgotten: no distribution, no posted id, no zero payable left; one marker.
    for store in ["distributions", "posted", "payable"] {
        let left = p.recorder.entries::<serde_json::Value>(store);
        assert!(left.is_empty(), "{store}: {left:?}");
    }
    assert_eq!(p.recorder.entries::<serde_json::Value>("periods").len(), 1);

    // The period's approval delivered again posts nothing and moves no capital.
    let before = p.transactions();
    let again = approved("m-1");
    p.recorder
        .pipe(again.topic(), &again.key(), again)
        .expect("processed");
    assert!(p.recorder.take_outputs().is_empty());
    assert_eq!(p.transactions(), before);
}
