//! A small year's reports to the cent, and a name typed as a formula exported as text.

use super::*;

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
                "set hash h1 does not match the proposed set h2 (set h2, APPROVED; approval by board)"
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
