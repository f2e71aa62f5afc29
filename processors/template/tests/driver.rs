//! The template through the test driver: what a new processor's first tests look like.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use contracts::records::Event;
use habitat_runtime::TestDriver;
use template_processor::{
    MemberPeriodKey, MemberPeriodTotal, NEGATIVE_VALUE, QUIET, TOTALS, TOTALS_TOPIC, Template,
    Total,
};
use test_support::records;

const PEOPLE: &str = "habitat.people";

fn approved(tenant: &str, id: &str, member: &str, value: &str) -> Event {
    approved_record(tenant, id, member, value).into()
}

fn approved_record(
    tenant: &str,
    id: &str,
    member: &str,
    value: &str,
) -> contracts::records::ContributionApproved {
    let at = Utc
        .with_ymd_and_hms(2026, 2, 1, 12, 0, 0)
        .single()
        .expect("valid");
    let meta = records::meta(
        tenant,
        "people.ContributionApproved",
        &format!("evt-{id}-{value}"),
        at,
    );
    records::approved(meta, id, member, "2026", value)
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
    let mut driver = TestDriver::new(Template::default());
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
    // Nothing is published before the totals have been quiet for a while.
    assert!(driver.take_outputs().is_empty());
}

#[test]
fn a_negative_value_is_dead_lettered_and_counts_nothing() {
    let mut driver = TestDriver::new(Template::default());
    pipe(&mut driver, approved("coop-a", "c9", "m2", "-5.00"));
    let letters = driver.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].class, NEGATIVE_VALUE);
    assert!(letters[0].message.contains("c9"), "{}", letters[0].message);
    assert_eq!(total(&driver, "coop-a", "m2"), None);
}

#[test]
fn state_survives_a_restart() {
    let mut driver = TestDriver::new(Template::default());
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
    let mut driver = TestDriver::new(Template::default());
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

#[test]
fn a_total_is_published_once_it_has_been_quiet() {
    let mut driver = TestDriver::new(Template::default());
    pipe(&mut driver, approved("coop-a", "c1", "m1", "10.00"));
    driver.advance(QUIET / 2).expect("no timer due yet");
    // A change inside the quiet period moves the publication on.
    pipe(&mut driver, approved("coop-a", "c2", "m1", "2.50"));
    driver.advance(QUIET / 2).expect("still quiet");
    assert!(driver.take_outputs().is_empty());
    driver.advance(QUIET / 2).expect("due");
    let out = driver.take_outputs();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].topic, TOTALS_TOPIC);
    assert_eq!(out[0].key, "coop-a/m1/2026");
    let value = out[0].value.clone().expect("a total");
    assert_eq!(
        (value.contributions, value.value),
        (2, records::dec("12.50"))
    );
    // Published once: the timer is gone.
    driver.advance(QUIET * 10).expect("nothing due");
    assert!(driver.take_outputs().is_empty());
}

#[test]
fn a_total_that_no_longer_counts_anything_is_published_as_a_tombstone() {
    let mut driver = TestDriver::new(Template::default());
    pipe(&mut driver, approved("coop-a", "c1", "m1", "10.00"));
    driver.advance(QUIET).expect("published");
    assert_eq!(driver.take_values().len(), 1);
    let rejected = records::rejected(approved_record("coop-a", "c1", "m1", "10.00"), "error");
    pipe(&mut driver, rejected.into());
    driver.advance(QUIET).expect("published");
    let out = driver.take_outputs();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].key.as_str(), &out[0].value),
        ("coop-a/m1/2026", &None)
    );
    assert_eq!(total(&driver, "coop-a", "m1"), None);
}

#[test]
fn a_pending_publication_survives_a_restart() {
    let mut driver = TestDriver::new(Template::default());
    pipe(&mut driver, approved("coop-a", "c1", "m1", "4.00"));
    driver.restart();
    driver.advance(QUIET + Duration::from_secs(1)).expect("due");
    let values: Vec<MemberPeriodTotal> = driver.take_values();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].value, records::dec("4.00"));
}
