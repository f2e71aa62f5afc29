//! The template through the test driver: what a new processor's first tests look like.

use chrono::{TimeZone, Utc};
use contracts::records::{
    ContributionApproved, ContributionKind, ContributionStatus, ContributionUnit, Event,
};
use habitat_runtime::TestDriver;
use rust_decimal::Decimal;
use template_processor::{MemberPeriodKey, NEGATIVE_VALUE, TOTALS, Template, Total};
use test_support::records;

const PEOPLE: &str = "habitat.people";

fn approved(tenant: &str, id: &str, member: &str, value: &str) -> Event {
    approved_record(tenant, id, member, value).into()
}

fn approved_record(tenant: &str, id: &str, member: &str, value: &str) -> ContributionApproved {
    let at = Utc
        .with_ymd_and_hms(2026, 2, 1, 12, 0, 0)
        .single()
        .expect("valid");
    ContributionApproved {
        meta: records::meta(
            tenant,
            "people.ContributionApproved",
            &format!("evt-{id}-{value}"),
            at,
        ),
        contribution_id: id.to_owned(),
        member_id: member.to_owned(),
        period_id: "2026".to_owned(),
        kind: ContributionKind::Labor,
        quantity: Decimal::new(100, 1),
        unit: ContributionUnit::Hours,
        value: value.parse().expect("decimal"),
        description: "Harvest".to_owned(),
        status: ContributionStatus::Approved,
        submitted_by: member.to_owned(),
        submitted_at: at,
        reviewed_by: Some("steward:ana".to_owned()),
        reviewed_at: Some(at),
        rejection_reason: None,
    }
}

fn pipe(driver: &mut TestDriver<Template>, event: Event) {
    let key = event.key();
    driver.pipe(PEOPLE, &key, event).expect("processed");
}

fn total(driver: &TestDriver<Template>, tenant: &str, member: &str) -> Option<Total> {
    driver.read(&TOTALS, &MemberPeriodKey::new(tenant, member, "2026"))
}

#[test]
fn totals_follow_the_latest_state_of_each_contribution() {
    let mut driver = TestDriver::new(Template);
    pipe(&mut driver, approved("coop-a", "c1", "m1", "100.00"));
    pipe(&mut driver, approved("coop-a", "c2", "m1", "50.50"));
    pipe(&mut driver, approved("coop-b", "c1", "m1", "7.00"));
    // A correction replaces the old value; a redelivery changes nothing.
    pipe(&mut driver, approved("coop-a", "c1", "m1", "120.00"));
    pipe(&mut driver, approved("coop-a", "c1", "m1", "120.00"));
    assert_eq!(
        total(&driver, "coop-a", "m1"),
        Some(Total {
            contributions: 2,
            value: "170.50".parse().expect("decimal")
        })
    );
    assert_eq!(
        total(&driver, "coop-b", "m1"),
        Some(Total {
            contributions: 1,
            value: "7.00".parse().expect("decimal")
        })
    );
    assert!(driver.take_outputs().is_empty());
}

#[test]
fn a_negative_value_is_dead_lettered_and_counts_nothing() {
    let mut driver = TestDriver::new(Template);
    pipe(&mut driver, approved("coop-a", "c9", "m2", "-5.00"));
    let letters = driver.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].class, NEGATIVE_VALUE);
    assert!(letters[0].message.contains("c9"), "{}", letters[0].message);
    assert_eq!(total(&driver, "coop-a", "m2"), None);
}

#[test]
fn state_survives_a_restart() {
    let mut driver = TestDriver::new(Template);
    pipe(&mut driver, approved("coop-a", "c1", "m1", "10.00"));
    driver.restart();
    pipe(&mut driver, approved("coop-a", "c2", "m1", "5.00"));
    assert_eq!(
        total(&driver, "coop-a", "m1"),
        Some(Total {
            contributions: 2,
            value: "15.00".parse().expect("decimal")
        })
    );
}

#[test]
fn a_later_rejection_takes_the_contribution_out() {
    let mut driver = TestDriver::new(Template);
    pipe(&mut driver, approved("coop-a", "c1", "m1", "30.00"));
    pipe(&mut driver, approved("coop-a", "c2", "m1", "12.00"));
    let rejected = records::rejected(approved_record("coop-a", "c1", "m1", "30.00"), "duplicate");
    pipe(&mut driver, rejected.clone().into());
    assert_eq!(
        total(&driver, "coop-a", "m1"),
        Some(Total {
            contributions: 1,
            value: records::dec("12.00")
        })
    );
    // Rejected again: nothing more comes out; approved again: it counts again.
    pipe(&mut driver, rejected.into());
    assert_eq!(
        total(&driver, "coop-a", "m1").map(|t| t.contributions),
        Some(1)
    );
    pipe(&mut driver, approved("coop-a", "c1", "m1", "30.00"));
    assert_eq!(
        total(&driver, "coop-a", "m1"),
        Some(Total {
            contributions: 2,
            value: records::dec("42.00")
        })
    );
}
