//! The finance reports of a small scenario, value by value, and the finance role that may
//! read the report views and nothing else.

mod books;
#[path = "../common/mod.rs"]
mod common;
mod roles;
mod rows;
mod year;
mod zones;

use common::{Coop, Post, Stack, post};
use contracts::records::{
    AllocationApprovalRejected, AllocationApproved, AllocationSetProposed,
    AllocationSetStatusChanged, Event, LateContributionChange, PaymentResultRejected,
    PaymentScheduled, PaymentStatusChanged, PeriodPatronageSealed, TransactionPosted,
};
use postgres_sink::report::{self, Filter};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use test_support::unique;

/// A record from its JSON (the REST conventions) with a fresh `meta`.
fn record<T: DeserializeOwned + Into<Event>>(
    coop: &mut Coop,
    event_type: &str,
    mut fields: Value,
) -> Post {
    fields["meta"] = serde_json::to_value(coop.meta(event_type)).expect("meta");
    Post::Event(
        serde_json::from_value::<T>(fields)
            .expect("a valid record")
            .into(),
    )
}

/// Ledger lines `(account, debit, credit)`; member accounts name the member.
fn lines(member: &str, amounts: &[(&str, &str, &str)]) -> Value {
    Value::Array(
        amounts
            .iter()
            .map(|(account, dr, cr)| {
                json!({"account": account, "member_id": (*account != "1010" && *account != "3900").then_some(member),
                       "debit": dr, "credit": cr, "memo": format!("{account} {member}")})
            })
            .collect(),
    )
}

fn scenario(tenant: &str) -> Vec<Post> {
    let mut c = Coop::new(tenant);
    let allocation = |member: &str, amount: &str, cash: &str, retained: &str| {
        json!({"period_id": "2026", "member_id": member, "allocation_id": format!("2026:{member}"),
               "amount": amount, "cash": cash, "retained": retained, "currency": "USD",
               "status": "APPROVED", "set_hash": "h2", "approved_by": "board",
               "approved_at": "2026-03-10T09:00:00Z"})
    };
    let set = json!({"period_id": "2026", "currency": "USD", "net_surplus": "1000.00",
                     "total_amount": "1000.00", "total_cash": "300.00", "total_retained": "700.00",
                     "members": 2, "set_hash": "h2"});
    let with = |mut v: Value, extra: Value| {
        for (k, x) in extra.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    let payment = json!({"schedule_id": "dist:2026:m-1", "purpose": "DISTRIBUTION", "seq": 0,
                         "due_on": "2026-04-09", "principal": "0.00", "interest": "0.00",
                         "currency": "USD"});
    vec![
        Post::Event(c.member("m-1", "Ana")),
        Post::Event(c.member("m-2", "Ben")),
        record::<PeriodPatronageSealed>(
            &mut c,
            "agreements.PeriodPatronageSealed",
            json!({
            "period_id": "2026", "currency": "USD", "net_surplus": "1000.00",
            "weights": [{"kind": "LABOR", "weight": "1.0000"}], "cash_ratio": "0.3000",
            "members": [{"member_id": "m-1", "by_kind": [{"kind": "LABOR", "value": "600.00"}], "weighted": "600.0000"},
                        {"member_id": "m-2", "by_kind": [{"kind": "LABOR", "value": "400.00"}], "weighted": "400.0000"}],
            "total_weighted": "1000.0000", "sealed_at": "2026-03-01T00:00:00Z"}),
        ),
        record::<AllocationSetProposed>(
            &mut c,
            "agreements.AllocationSetProposed",
            with(set.clone(), json!({"status": "PROPOSED"})),
        ),
        record::<AllocationSetStatusChanged>(
            &mut c,
            "agreements.AllocationSetStatusChanged",
            with(
                set,
                json!({
            "status": "APPROVED", "decision_event_id": "d-2", "approved_by": "board"}),
            ),
        ),
        record::<AllocationApproved>(
            &mut c,
            "agreements.AllocationApproved",
            allocation("m-1", "600.00", "180.00", "420.00"),
        ),
        // A stale approval posted after the approval: its own fact; the set stays APPROVED.
        record::<AllocationApprovalRejected>(
            &mut c,
            "agreements.AllocationApprovalRejected",
            json!({"period_id": "2026", "decision_event_id": "d-1", "set_hash": "h1",
                   "approved_by": "board", "proposed_set_hash": "h2", "set_status": "APPROVED",
                   "reason": "set hash h1 does not match the proposed set h2"}),
        ),
        record::<AllocationApproved>(
            &mut c,
            "agreements.AllocationApproved",
            allocation("m-2", "400.00", "120.00", "280.00"),
        ),
        record::<TransactionPosted>(
            &mut c,
            "treasury.TransactionPosted",
            json!({
            "transaction_id": "alloc:2026:m-1", "posted_on": "2026-03-10", "currency": "USD",
            "description": "Patronage allocation 2026", "source_event_id": "e-1",
            "lines": lines("m-1", &[("3900", "600.00", "0.00"), ("2300", "0.00", "180.00"), ("3100", "0.00", "420.00")])}),
        ),
        record::<TransactionPosted>(
            &mut c,
            "treasury.TransactionPosted",
            json!({
            "transaction_id": "alloc:2026:m-2", "posted_on": "2026-03-10", "currency": "USD",
            "description": "Patronage allocation 2026", "source_event_id": "e-2",
            "lines": lines("m-2", &[("3900", "400.00", "0.00"), ("2300", "0.00", "120.00"), ("3100", "0.00", "280.00")])}),
        ),
        record::<TransactionPosted>(
            &mut c,
            "treasury.TransactionPosted",
            json!({
            "transaction_id": "pay:dist:2026:m-1:0", "posted_on": "2026-04-09", "currency": "USD",
            "description": "Distribution paid", "source_event_id": "e-3",
            "lines": lines("m-1", &[("2300", "180.00", "0.00"), ("1010", "0.00", "180.00")])}),
        ),
        record::<PaymentStatusChanged>(
            &mut c,
            "agreements.PaymentStatusChanged",
            with(
                payment.clone(),
                json!({
            "payment_id": "dist:2026:m-1:0", "member_id": "m-1", "amount": "180.00", "status": "SETTLED",
            "previous_status": "DUE", "settled_at": "2026-04-09T10:00:00Z", "method": "ACH",
            "external_ref": "ach-1", "result_event_id": "r-1"}),
            ),
        ),
        record::<PaymentScheduled>(
            &mut c,
            "agreements.PaymentScheduled",
            with(
                payment,
                json!({
            "payment_id": "dist:2026:m-2:0", "schedule_id": "dist:2026:m-2", "member_id": "m-2",
            "amount": "120.00", "status": "SCHEDULED"}),
            ),
        ),
        record::<LateContributionChange>(
            &mut c,
            "agreements.LateContributionChange",
            json!({
            "contribution_id": "c-9", "member_id": "m-2", "period_id": "2026", "previous_status": "APPROVED",
            "previous_value": "50.00", "new_status": "REJECTED", "new_value": "50.00", "source_event_id": "e-9"}),
        ),
        record::<PaymentResultRejected>(
            &mut c,
            "agreements.PaymentResultRejected",
            json!({
            "result_event_id": "r-2", "result_type": "treasury.PaymentSettled", "payment_id": "dist:2026:m-1:0",
            "payment_status": "SETTLED", "reason": "settled twice with different references"}),
        ),
    ]
}

fn rows(table: &report::Table) -> Vec<Vec<String>> {
    table
        .rows
        .iter()
        .map(|r| r.iter().map(|v| v.clone().unwrap_or_default()).collect())
        .collect()
}

fn pick(table: &report::Table, columns: &[&str]) -> Vec<Vec<String>> {
    let all = rows(table);
    let index: Vec<usize> = columns
        .iter()
        .map(|c| {
            table
                .columns
                .iter()
                .position(|x| x == c)
                .unwrap_or_else(|| panic!("no column {c}"))
        })
        .collect();
    all.into_iter()
        .map(|r| index.iter().map(|i| r[*i].clone()).collect())
        .collect()
}

fn s(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}
