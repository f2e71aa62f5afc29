//! The finance roles: the report views and nothing else, a tenant's rows only.

use super::*;

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
