//! The finance reports of a small scenario, value by value, and the finance role that may
//! read the report views and nothing else.

mod common;

use common::{Coop, Post, Stack, post};
use contracts::records::{
    AllocationApproved, AllocationSetProposed, AllocationSetStatusChanged, Event,
    LateContributionChange, PaymentResultRejected, PaymentScheduled, PaymentStatusChanged,
    PeriodPatronageSealed, TransactionPosted,
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
                set.clone(),
                json!({
            "status": "APPROVAL_REJECTED", "reason": "set_hash h1 is not the proposed h2",
            "decision_event_id": "d-1", "approved_by": "board"}),
            ),
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

#[test]
fn reports_of_a_small_year_to_the_cent() {
    let stack = Stack::new();
    let tenant = unique("coop");
    post(&stack.codec, &scenario(&tenant));
    let sink = stack.sink();
    stack.caught_up();
    drop(sink);
    let run = |name: &str, filter: Filter| {
        let report = report::find(name).expect("report");
        stack.query(report::run(&stack.pool, report, &filter))
    };
    let tenant_only = || Filter {
        tenant: Some(tenant.clone()),
        ..Filter::default()
    };

    let allocation = run(
        "period-allocation",
        Filter {
            period: Some("2026".into()),
            ..tenant_only()
        },
    );
    assert_eq!(
        pick(
            &allocation,
            &[
                "member_id",
                "display_name",
                "weighted_patronage",
                "amount",
                "cash",
                "retained",
                "allocation_status",
                "set_status"
            ]
        ),
        vec![
            s(&[
                "m-1", "Ana", "600.0000", "600.00", "180.00", "420.00", "APPROVED", "APPROVED"
            ]),
            s(&[
                "m-2", "Ben", "400.0000", "400.00", "120.00", "280.00", "APPROVED", "APPROVED"
            ]),
        ]
    );

    let trial = run("trial-balance", tenant_only());
    assert_eq!(
        pick(
            &trial,
            &["account", "account_name", "debit", "credit", "balance"]
        ),
        vec![
            s(&["1010", "Cash", "0.00", "180.00", "-180.00"]),
            s(&[
                "2300",
                "Patronage Dividends Payable",
                "180.00",
                "300.00",
                "-120.00"
            ]),
            s(&[
                "3100",
                "Member Capital - Allocated Patronage",
                "0.00",
                "700.00",
                "-700.00"
            ]),
            s(&[
                "3900",
                "Net Margin Available for Allocation",
                "1000.00",
                "0.00",
                "1000.00"
            ]),
        ]
    );

    let statement = run(
        "member-statement",
        Filter {
            member: Some("m-1".into()),
            ..tenant_only()
        },
    );
    assert_eq!(
        pick(
            &statement,
            &[
                "posted_on",
                "transaction_id",
                "account",
                "debit",
                "credit",
                "balance"
            ]
        ),
        vec![
            s(&[
                "2026-03-10",
                "alloc:2026:m-1",
                "2300",
                "0.00",
                "180.00",
                "180.00"
            ]),
            s(&[
                "2026-04-09",
                "pay:dist:2026:m-1:0",
                "2300",
                "180.00",
                "0.00",
                "0.00"
            ]),
            s(&[
                "2026-03-10",
                "alloc:2026:m-1",
                "3100",
                "0.00",
                "420.00",
                "420.00"
            ]),
        ]
    );

    let due = run("payments-due", tenant_only());
    assert_eq!(
        pick(
            &due,
            &["payment_id", "member_id", "due_on", "amount", "status"]
        ),
        vec![s(&[
            "dist:2026:m-2:0",
            "m-2",
            "2026-04-09",
            "120.00",
            "SCHEDULED"
        ])]
    );

    let patr = run(
        "1099-patr",
        Filter {
            year: Some(2026),
            ..tenant_only()
        },
    );
    assert_eq!(
        pick(
            &patr,
            &[
                "member_id",
                "email",
                "patronage_dividends_cash",
                "qualified_notices_of_allocation",
                "nonqualified_notices_of_allocation",
                "box_1_patronage_dividends"
            ]
        ),
        vec![
            s(&[
                "m-1",
                "m-1@example.coop",
                "180.00",
                "420.00",
                "0.00",
                "600.00"
            ]),
            s(&[
                "m-2",
                "m-2@example.coop",
                "0.00",
                "280.00",
                "0.00",
                "280.00"
            ]),
        ]
    );
    assert!(
        run(
            "1099-patr",
            Filter {
                year: Some(2025),
                ..tenant_only()
            }
        )
        .rows
        .is_empty()
    );

    let exceptions = run("exceptions", tenant_only());
    assert_eq!(
        pick(&exceptions, &["kind", "subject", "detail"]),
        vec![
            s(&[
                "APPROVAL_REJECTED",
                "d-1",
                "set_hash h1 is not the proposed h2"
            ]),
            s(&[
                "LATE_CONTRIBUTION_CHANGE",
                "c-9",
                "m-2: APPROVED 50.00 -> REJECTED 50.00"
            ]),
            s(&[
                "PAYMENT_RESULT_REJECTED",
                "dist:2026:m-1:0",
                "treasury.PaymentSettled r-2 (payment SETTLED): settled twice with different references"
            ]),
        ]
    );

    // Filters a report does not take are refused; CSV keeps the exact amounts.
    let error = stack
        .rt
        .block_on(report::run(
            &stack.pool,
            report::find("trial-balance").expect("report"),
            &Filter {
                period: Some("2026".into()),
                ..tenant_only()
            },
        ))
        .expect_err("no period on the trial balance")
        .to_string();
    assert!(error.contains("takes no --period"), "{error}");
    let csv = trial.to_csv();
    assert!(
        csv.starts_with("tenant_id,currency,account,account_name,debit,credit,balance\r\n"),
        "{csv}"
    );
    assert!(
        csv.contains(&format!(
            "{tenant},USD,3900,Net Margin Available for Allocation,1000.00,0.00,1000.00\r\n"
        )),
        "{csv}"
    );
}

#[test]
fn the_finance_role_reads_the_views_and_nothing_else() {
    let stack = Stack::new();
    let denied = |sql: &str| {
        stack.rt.block_on(async {
            let mut tx = stack.pool.begin().await.expect("begin");
            sqlx::query("SET LOCAL ROLE habitat_finance")
                .execute(&mut *tx)
                .await
                .expect("set role");
            sqlx::query(sql)
                .fetch_all(&mut *tx)
                .await
                .err()
                .map(|e| e.to_string())
        })
    };
    for view in [
        "period_allocation_report",
        "member_statement",
        "trial_balance",
        "payments_due",
        "form_1099_patr_worksheet",
        "exceptions",
    ] {
        assert_eq!(
            denied(&format!("SELECT * FROM {view}")),
            None,
            "{view} is readable"
        );
    }
    for table in [
        "members",
        "allocations",
        "ledger_lines",
        "event_log",
        "dead_letters",
        "sink_offsets",
    ] {
        let error = denied(&format!("SELECT * FROM {table}"))
            .unwrap_or_else(|| panic!("{table} is readable"));
        assert!(error.contains("permission denied"), "{table}: {error}");
    }
    let error = denied("UPDATE allocations SET amount = 0").expect("no writes");
    assert!(error.contains("permission denied"), "{error}");
}

#[test]
fn a_tenant_finance_role_reads_its_tenant_only_and_no_base_table() {
    let stack = Stack::new();
    let (ours, theirs) = (unique("coop"), unique("coop"));
    post(&stack.codec, &scenario(&ours));
    post(&stack.codec, &scenario(&theirs));
    let sink = stack.sink();
    stack.caught_up();
    drop(sink);
    let role = unique("finance").replace('-', "_");
    stack
        .rt
        .block_on(postgres_sink::access::grant(
            &stack.pool,
            "habitat",
            &role,
            std::slice::from_ref(&ours),
        ))
        .expect("grant");
    let as_role = |sql: &str| -> Result<Vec<String>, String> {
        stack.rt.block_on(async {
            let mut tx = stack.pool.begin().await.expect("begin");
            sqlx::query(&format!("SET LOCAL ROLE {role}"))
                .execute(&mut *tx)
                .await
                .expect("set role");
            sqlx::query_scalar::<_, Option<String>>(sql)
                .fetch_all(&mut *tx)
                .await
                .map(|rows| rows.into_iter().map(Option::unwrap_or_default).collect())
                .map_err(|e| e.to_string())
        })
    };
    for view in [
        "period_allocation_report",
        "member_statement",
        "trial_balance",
        "payments_due",
        "form_1099_patr_worksheet",
        "exceptions",
    ] {
        let tenants = as_role(&format!("SELECT DISTINCT tenant_id FROM {view}"))
            .unwrap_or_else(|e| panic!("{view}: {e}"));
        assert!(
            tenants.iter().all(|t| *t == ours),
            "{view} shows other tenants: {tenants:?}"
        );
    }
    // The scenario fills these views for both tenants: the role sees its own rows.
    for view in [
        "period_allocation_report",
        "trial_balance",
        "member_statement",
    ] {
        let tenants = as_role(&format!("SELECT DISTINCT tenant_id FROM {view}")).expect(view);
        assert_eq!(tenants, std::slice::from_ref(&ours), "{view}");
    }
    // The owner still sees both.
    let all: Vec<String> = stack.rt.block_on(
        sqlx::query_scalar("SELECT DISTINCT tenant_id FROM trial_balance WHERE tenant_id IN ($1, $2) ORDER BY 1")
            .bind(&ours)
            .bind(&theirs)
            .fetch_all(&stack.pool),
    )
    .expect("owner");
    assert_eq!(all.len(), 2);
    // No base table, nor the unfiltered views.
    for table in [
        "members",
        "allocations",
        "ledger_lines",
        "event_log",
        "trial_balance_all",
        "finance_tenant_roles",
    ] {
        let error = as_role(&format!("SELECT tenant_id::text FROM {table} LIMIT 1"))
            .err()
            .unwrap_or_else(|| panic!("{table} is readable"));
        assert!(error.contains("permission denied"), "{table}: {error}");
    }
    // A second grant replaces the tenants: now theirs only.
    stack
        .rt
        .block_on(postgres_sink::access::grant(
            &stack.pool,
            "habitat",
            &role,
            std::slice::from_ref(&theirs),
        ))
        .expect("grant again");
    let tenants = as_role("SELECT DISTINCT tenant_id FROM trial_balance").expect("view");
    assert_eq!(tenants, std::slice::from_ref(&theirs));
    // A role that can log in is not bound.
    let refused = stack
        .rt
        .block_on(postgres_sink::access::grant(
            &stack.pool,
            "habitat",
            "habitat",
            std::slice::from_ref(&ours),
        ))
        .expect_err("a login role");
    assert!(refused.to_string().contains("can log in"), "{refused}");
}

#[test]
fn a_member_name_typed_as_a_formula_is_exported_as_text() {
    let stack = Stack::new();
    let tenant = unique("coop");
    let mut posts = scenario(&tenant);
    // The member renamed herself after the year: the name a spreadsheet would run.
    let formula = "=HYPERLINK(\"http://evil.example\",\"Ana\")";
    posts.push(Post::Event(Coop::new(&tenant).member("m-1", formula)));
    post(&stack.codec, &posts);
    let sink = stack.sink();
    stack.caught_up();
    drop(sink);
    let report = report::find("period-allocation").expect("report");
    let table = stack.query(report::run(
        &stack.pool,
        report,
        &Filter {
            tenant: Some(tenant.clone()),
            ..Filter::default()
        },
    ));
    assert_eq!(table.column("display_name")[0].as_deref(), Some(formula));
    let csv = table.to_csv();
    let ana = csv
        .lines()
        .find(|line| line.contains(",m-1,"))
        .unwrap_or_else(|| panic!("m-1 in\n{csv}"));
    assert!(
        ana.contains(",\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"Ana\"\")\","),
        "{ana}"
    );
    // The amounts are numbers still: 600.00 of 1000.00 is m-1's allocation.
    assert!(ana.contains(",600.00,"), "{ana}");
}
