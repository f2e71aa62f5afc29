//! The cooperative's time zone (PatronagePolicySet's `time_zone`): a payment settled at the
//! turn of the year lands in the tax year of the cooperative's clock, not UTC's; a payment is
//! overdue once its due date has passed on that clock.

use chrono::{Duration, Utc};
use contracts::records::{PatronagePolicySet, PaymentScheduled};

use super::*;

/// A tenant in `zone`: its policy, one distribution payment settled at `settled_at`
/// (RFC 3339, UTC) and one still scheduled, due on `due_on`.
fn cooperative(tenant: &str, zone: Option<&str>, settled_at: &str, due_on: &str) -> Vec<Post> {
    let mut c = Coop::new(tenant);
    let payment = |id: &str, extra: Value| {
        let mut base = json!({"payment_id": id, "schedule_id": "dist:2026:m-1",
                              "purpose": "DISTRIBUTION", "member_id": "m-1", "seq": 1,
                              "due_on": "2026-12-31", "amount": "100.00", "principal": "100.00",
                              "interest": "0.00", "currency": "USD"});
        for (k, v) in extra.as_object().expect("object") {
            base[k] = v.clone();
        }
        base
    };
    let mut policy = json!({"weights": [{"kind": "LABOR", "weight": "1.0000"}],
                            "cash_ratio": "0.3000", "installments": 1,
                            "installment_interval": "MONTHLY", "first_payment_offset_days": 0});
    if let Some(zone) = zone {
        policy["time_zone"] = json!(zone);
    }
    vec![
        Post::Event(c.member("m-1", "Ana")),
        record::<PatronagePolicySet>(&mut c, "treasury.PatronagePolicySet", policy),
        record::<PaymentStatusChanged>(
            &mut c,
            "agreements.PaymentStatusChanged",
            payment(
                "dist:2026:m-1:1",
                json!({"status": "SETTLED", "previous_status": "DUE", "settled_at": settled_at,
                       "method": "ACH", "external_ref": "ach-1", "result_event_id": "r-1"}),
            ),
        ),
        record::<PaymentScheduled>(
            &mut c,
            "agreements.PaymentScheduled",
            payment(
                "dist:2026:m-1:2",
                json!({"seq": 2, "due_on": due_on, "amount": "50.00", "principal": "50.00",
                       "status": "SCHEDULED"}),
            ),
        ),
    ]
}

#[test]
fn tax_years_and_overdue_payments_follow_the_cooperatives_clock() {
    let stack = Stack::new();
    // Today on the clock farthest behind (UTC-11): not yet past there, already past on
    // the clock farthest ahead (UTC+14), whose date is always a day or two later.
    let behind = (Utc::now() - Duration::hours(11)).date_naive().to_string();
    let new_york = unique("coop-ny");
    let tokyo = unique("coop-tokyo");
    let utc = unique("coop-utc");
    let samoa = unique("coop-samoa");
    let kiribati = unique("coop-line");
    let mut posts = Vec::new();
    // 19:00 on 31 December in New York is 00:00 on 1 January in UTC.
    posts.extend(cooperative(
        &new_york,
        Some("America/New_York"),
        "2027-01-01T00:00:00Z",
        &behind,
    ));
    // 08:00 on 1 January in Tokyo is 23:00 on 31 December in UTC.
    posts.extend(cooperative(
        &tokyo,
        Some("Asia/Tokyo"),
        "2026-12-31T23:00:00Z",
        &behind,
    ));
    // No zone: UTC.
    posts.extend(cooperative(&utc, None, "2027-01-01T00:00:00Z", &behind));
    posts.extend(cooperative(
        &samoa,
        Some("Pacific/Pago_Pago"),
        "2026-06-01T00:00:00Z",
        &behind,
    ));
    posts.extend(cooperative(
        &kiribati,
        Some("Pacific/Kiritimati"),
        "2026-06-01T00:00:00Z",
        &behind,
    ));
    post(&stack.codec, &posts);
    let sink = stack.sink();
    stack.caught_up();
    drop(sink);
    let run = |name: &str, tenant: &str| {
        let report = report::find(name).expect("report");
        let filter = Filter {
            tenant: Some(tenant.to_owned()),
            ..Filter::default()
        };
        stack.query(report::run(&stack.pool, report, &filter))
    };
    let tax_year = |tenant: &str| {
        pick(
            &run("1099-patr", tenant),
            &["tax_year", "patronage_dividends_cash"],
        )
    };
    assert_eq!(tax_year(&new_york), vec![s(&["2026", "100.00"])]);
    assert_eq!(tax_year(&tokyo), vec![s(&["2027", "100.00"])]);
    assert_eq!(tax_year(&utc), vec![s(&["2027", "100.00"])]);
    let overdue = |tenant: &str| pick(&run("payments-due", tenant), &["payment_id", "overdue"]);
    assert_eq!(overdue(&samoa), vec![s(&["dist:2026:m-1:2", "false"])]);
    assert_eq!(overdue(&kiribati), vec![s(&["dist:2026:m-1:2", "true"])]);
}
