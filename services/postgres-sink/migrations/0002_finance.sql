-- Finance: the chart of accounts, the report views, and the read-only role that may
-- select the views and nothing else.

-- Account names and normal balances for statements. The distribution recorder's codes
-- are configurable (HABITAT_CHART); add rows here for codes of another chart.
CREATE TABLE chart_of_accounts (
    account          text PRIMARY KEY,
    name             text NOT NULL,
    normal_balance   text NOT NULL CHECK (normal_balance IN ('DEBIT', 'CREDIT'))
);
INSERT INTO chart_of_accounts (account, name, normal_balance) VALUES
    ('1010', 'Cash', 'DEBIT'),
    ('1300', 'Member Loans Receivable', 'DEBIT'),
    ('2300', 'Patronage Dividends Payable', 'CREDIT'),
    ('3100', 'Member Capital - Allocated Patronage', 'CREDIT'),
    ('3900', 'Net Margin Available for Allocation', 'CREDIT'),
    ('4200', 'Interest Income', 'CREDIT');

-- Each member's allocation of a period with its set's state and the member's weighted
-- patronage from the seal.
CREATE VIEW period_allocation_report AS
SELECT a.tenant_id,
       a.period_id,
       a.member_id,
       m.display_name,
       (SELECT (p ->> 'weighted')::numeric(18,4)
          FROM jsonb_array_elements(s.members) AS p
         WHERE p ->> 'member_id' = a.member_id)          AS weighted_patronage,
       a.currency,
       a.amount,
       a.cash,
       a.retained,
       a.status                                          AS allocation_status,
       sets.status                                       AS set_status,
       a.set_hash,
       a.approved_by,
       a.approved_at
  FROM allocations a
  LEFT JOIN allocation_sets sets ON sets.tenant_id = a.tenant_id AND sets.period_id = a.period_id
  LEFT JOIN patronage_seals s ON s.tenant_id = a.tenant_id AND s.period_id = a.period_id
  LEFT JOIN members m ON m.tenant_id = a.tenant_id AND m.member_id = a.member_id;

-- A member's ledger lines with the running balance of each account, in its normal
-- direction (payable and capital: credit − debit; loans receivable: debit − credit).
CREATE VIEW member_statement AS
SELECT l.tenant_id,
       l.member_id,
       l.posted_on,
       l.transaction_id,
       t.description,
       l.account,
       c.name                                            AS account_name,
       l.currency,
       l.debit,
       l.credit,
       sum(CASE WHEN coalesce(c.normal_balance, 'DEBIT') = 'DEBIT'
                THEN l.debit - l.credit ELSE l.credit - l.debit END)
           OVER (PARTITION BY l.tenant_id, l.member_id, l.account, l.currency
                 ORDER BY l.posted_on, l.transaction_id, l.line_no)::numeric(18,2) AS balance,
       l.line_no
  FROM ledger_lines l
  JOIN ledger_transactions t ON t.record_key = l.record_key
  LEFT JOIN chart_of_accounts c ON c.account = l.account
 WHERE l.member_id IS NOT NULL;

-- Debits, credits and balance (debit − credit) per account; per tenant and currency the
-- balances sum to zero.
CREATE VIEW trial_balance AS
SELECT l.tenant_id,
       l.currency,
       l.account,
       c.name                                            AS account_name,
       sum(l.debit)::numeric(18,2)                       AS debit,
       sum(l.credit)::numeric(18,2)                      AS credit,
       sum(l.debit - l.credit)::numeric(18,2)            AS balance
  FROM ledger_lines l
  LEFT JOIN chart_of_accounts c ON c.account = l.account
 GROUP BY l.tenant_id, l.currency, l.account, c.name;

-- Payments not yet settled or failed, by due date.
CREATE VIEW payments_due AS
SELECT p.tenant_id,
       p.due_on,
       p.payment_id,
       p.purpose,
       p.member_id,
       m.display_name,
       p.seq,
       p.currency,
       p.amount,
       p.principal,
       p.interest,
       p.status,
       p.due_on < current_date                           AS overdue
  FROM payments p
  LEFT JOIN members m ON m.tenant_id = p.tenant_id AND m.member_id = p.member_id
 WHERE p.status IN ('SCHEDULED', 'DUE');

-- Form 1099-PATR worksheet per member and calendar year: patronage dividends paid in
-- cash (distribution payments settled that year) and written notices of allocation
-- issued that year (the retained part of allocations approved that year), qualified when
-- at least 20 % of the allocation is paid in cash (IRC §1388(c)). Box 1 = cash paid +
-- qualified notices.
CREATE VIEW form_1099_patr_worksheet AS
WITH cash AS (
    SELECT tenant_id, member_id, currency,
           extract(year FROM settled_at AT TIME ZONE 'UTC')::integer AS tax_year,
           sum(amount) AS cash_paid
      FROM payments
     WHERE purpose = 'DISTRIBUTION' AND status = 'SETTLED'
     GROUP BY 1, 2, 3, 4
), notices AS (
    SELECT tenant_id, member_id, currency,
           extract(year FROM approved_at AT TIME ZONE 'UTC')::integer AS tax_year,
           sum(retained) FILTER (WHERE cash >= amount * 0.20) AS qualified,
           sum(retained) FILTER (WHERE cash < amount * 0.20)  AS nonqualified
      FROM allocations
     WHERE status = 'APPROVED'
     GROUP BY 1, 2, 3, 4
)
SELECT k.tenant_id,
       k.tax_year,
       k.member_id,
       m.display_name,
       m.email,
       k.currency,
       coalesce(cash.cash_paid, 0)::numeric(18,2)        AS patronage_dividends_cash,
       coalesce(n.qualified, 0)::numeric(18,2)           AS qualified_notices_of_allocation,
       coalesce(n.nonqualified, 0)::numeric(18,2)        AS nonqualified_notices_of_allocation,
       (coalesce(cash.cash_paid, 0) + coalesce(n.qualified, 0))::numeric(18,2) AS box_1_patronage_dividends
  FROM (SELECT tenant_id, member_id, currency, tax_year FROM cash
        UNION
        SELECT tenant_id, member_id, currency, tax_year FROM notices) k
  LEFT JOIN cash USING (tenant_id, member_id, currency, tax_year)
  LEFT JOIN notices n USING (tenant_id, member_id, currency, tax_year)
  LEFT JOIN members m ON m.tenant_id = k.tenant_id AND m.member_id = k.member_id;

-- What finance must look at: late contribution changes, rejected approvals, payment
-- results the payment-schedule creator refused, failed payments, and dead letters
-- (counted per processor, error class and status).
CREATE VIEW exceptions AS
SELECT tenant_id, 'LATE_CONTRIBUTION_CHANGE' AS kind, period_id,
       contribution_id AS subject,
       format('%s: %s %s -> %s %s', member_id, coalesce(previous_status, '-'),
              coalesce(previous_value::text, '-'), new_status, new_value) AS detail,
       1::bigint AS count, occurred_at
  FROM late_changes
UNION ALL
SELECT tenant_id, 'APPROVAL_REJECTED', payload ->> 'period_id',
       payload ->> 'decision_event_id',
       coalesce(payload ->> 'reason', ''), 1, occurred_at
  FROM event_log
 WHERE event_type = 'agreements.AllocationSetStatusChanged'
   AND payload ->> 'status' = 'APPROVAL_REJECTED'
UNION ALL
SELECT tenant_id, 'PAYMENT_RESULT_REJECTED', NULL, payment_id,
       format('%s %s (payment %s): %s', result_type, result_event_id,
              coalesce(payment_status, 'unknown'), reason), 1, occurred_at
  FROM payment_exceptions
UNION ALL
SELECT tenant_id, 'PAYMENT_FAILED', NULL, payment_id,
       format('%s %s due %s: %s', member_id, amount, due_on, coalesce(failure_reason, '')),
       1, occurred_at
  FROM payments
 WHERE status = 'FAILED'
UNION ALL
SELECT tenant_id, 'DEAD_LETTERS', NULL, processor,
       format('%s %s', status, error_class), count(*), max(first_seen)
  FROM dead_letters
 GROUP BY tenant_id, processor, error_class, status;

-- The read-only finance role: the views, nothing else. Roles belong to the cluster, so a
-- second database (or schema) finds it already there. A sink without the right to create
-- roles leaves a notice; an administrator creates the role and re-grants.
DO $$
BEGIN
    CREATE ROLE habitat_finance NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'cannot create role habitat_finance: CREATE ROLE habitat_finance NOLOGIN, then grant it the report views';
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'habitat_finance') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO habitat_finance', current_schema());
        EXECUTE format('GRANT SELECT ON %1$I.period_allocation_report, %1$I.member_statement, '
                       '%1$I.trial_balance, %1$I.payments_due, %1$I.form_1099_patr_worksheet, '
                       '%1$I.exceptions TO habitat_finance', current_schema());
    END IF;
END
$$;
