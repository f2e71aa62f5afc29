-- The books' invariants, checked across the tables: every row of `invariant_breaks` is a
-- break, named (`invariant`), placed (`subject`) and shown (`detail`). Empty when the books
-- are right. `habitat verify books` prints it (exit 1 when not empty); the sink counts it
-- into `habitat_books_breaks{invariant}`; finance reads `invariant_breaks` for its tenants.
--
-- The chart's codes default to SPEC's (3100 allocated patronage, 2300 dividends payable,
-- 3900 net margin); a deployment with another chart sets them for the database:
--   ALTER DATABASE … SET habitat.allocated_patronage_account = '…';  (and the others)
--
-- A posting still on its way (an allocation approved a moment ago whose transaction the
-- recorder has not yet posted) shows here until it lands: alert on a break that lasts.

CREATE FUNCTION books_account(setting text, fallback text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('habitat.' || setting, true), ''), fallback)
$$;

CREATE VIEW invariant_breaks_all AS
-- Every tenant's trial balance is zero, per currency.
SELECT tenant_id, 'TRIAL_BALANCE' AS invariant, currency AS subject,
       format('debits %s, credits %s', sum(debit), sum(credit)) AS detail
  FROM ledger_lines
 GROUP BY tenant_id, currency
HAVING sum(debit) <> sum(credit)
UNION ALL
-- Every transaction balances on its own.
SELECT tenant_id, 'POSTING_BALANCES', transaction_id,
       format('debits %s, credits %s', sum(debit), sum(credit))
  FROM ledger_lines
 GROUP BY tenant_id, transaction_id
HAVING sum(debit) <> sum(credit)
UNION ALL
-- The allocations of a period's set add up to the seal's surplus.
SELECT a.tenant_id, 'ALLOCATIONS_ADD_UP', a.period_id,
       format('allocations %s, surplus %s', sum(a.amount), s.net_surplus)
  FROM allocations a
  JOIN allocation_sets st ON st.tenant_id = a.tenant_id AND st.period_id = a.period_id
                          AND st.set_hash = a.set_hash
  JOIN patronage_seals s ON s.tenant_id = a.tenant_id AND s.period_id = a.period_id
 GROUP BY a.tenant_id, a.period_id, s.net_surplus
HAVING sum(a.amount) <> s.net_surplus
UNION ALL
-- Each allocation's cash is at least the seal's cash ratio of it.
SELECT a.tenant_id, 'CASH_AT_LEAST_RATIO', a.allocation_id,
       format('amount %s, cash %s, cash ratio %s', a.amount, a.cash, s.cash_ratio)
  FROM allocations a
  JOIN patronage_seals s ON s.tenant_id = a.tenant_id AND s.period_id = a.period_id
 WHERE a.cash < a.amount * s.cash_ratio OR a.cash + a.retained <> a.amount
UNION ALL
-- A member's capital account equals the balance of its allocated-patronage account.
SELECT c.tenant_id, 'CAPITAL_EQUALS_LEDGER', c.member_id,
       format('capital account %s %s, account %s %s', c.balance, c.currency,
              books_account('allocated_patronage_account', '3100'),
              coalesce(l.balance, 0))
  FROM capital_accounts c
  LEFT JOIN (SELECT tenant_id, member_id, currency, sum(credit) - sum(debit) AS balance
               FROM ledger_lines
              WHERE account = books_account('allocated_patronage_account', '3100')
              GROUP BY tenant_id, member_id, currency) l
    ON l.tenant_id = c.tenant_id AND l.member_id = c.member_id AND l.currency = c.currency
 WHERE c.balance <> coalesce(l.balance, 0)
UNION ALL
-- No member's dividends payable is below zero.
SELECT tenant_id, 'PAYABLE_NOT_NEGATIVE', member_id,
       format('payable %s %s', sum(credit) - sum(debit), currency)
  FROM ledger_lines
 WHERE account = books_account('patronage_dividends_payable_account', '2300')
 GROUP BY tenant_id, member_id, currency
HAVING sum(credit) - sum(debit) < 0
UNION ALL
-- The payments of an allocation's distribution add up to no more than its cash.
SELECT a.tenant_id, 'PAYMENTS_WITHIN_CASH', a.allocation_id,
       format('cash %s, payments %s', a.cash, sum(p.amount))
  FROM allocations a
  JOIN payments p ON p.tenant_id = a.tenant_id AND p.purpose = 'DISTRIBUTION'
                 AND p.schedule_id = 'dist:' || a.period_id || ':' || a.member_id
 GROUP BY a.tenant_id, a.allocation_id, a.cash
HAVING sum(p.amount) > a.cash
UNION ALL
-- Every approved allocation is posted once, for its amount.
SELECT a.tenant_id, 'APPROVED_POSTED_ONCE', a.allocation_id,
       CASE WHEN t.transaction_id IS NULL
            THEN format('approved %s, no transaction alloc:%s:%s', a.amount, a.period_id,
                        a.member_id)
            ELSE format('approved %s, transaction %s debits %s to %s', a.amount,
                        t.transaction_id, t.margin,
                        books_account('net_margin_account', '3900'))
       END
  FROM allocations a
  LEFT JOIN (SELECT tenant_id, transaction_id,
                    sum(debit) FILTER (WHERE account = books_account('net_margin_account', '3900'))
                        AS margin
               FROM ledger_lines
              GROUP BY tenant_id, transaction_id) t
    ON t.tenant_id = a.tenant_id AND t.transaction_id = 'alloc:' || a.period_id || ':' || a.member_id
 WHERE a.status = 'APPROVED'
   AND (t.transaction_id IS NULL OR coalesce(t.margin, 0) <> a.amount);

CREATE VIEW invariant_breaks WITH (security_barrier) AS
SELECT * FROM invariant_breaks_all WHERE finance_tenant_visible(tenant_id, current_user);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'habitat_finance') THEN
        EXECUTE 'GRANT SELECT ON invariant_breaks TO habitat_finance';
    END IF;
END
$$;
