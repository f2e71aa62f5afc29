-- The cooperative's time zone (PatronagePolicySet v2's `time_zone`, an IANA name; null or
-- unknown: UTC): tax years and overdue payments are reckoned in it. A distribution settled
-- at 19:00 on 31 December in New York is in that year's worksheet, not the next.

ALTER TABLE patronage_policies ADD COLUMN time_zone text;

-- Each tenant with a policy, and the zone its reports use.
CREATE VIEW tenant_time_zones AS
SELECT p.tenant_id, coalesce(z.name, 'UTC') AS time_zone
  FROM patronage_policies p
  LEFT JOIN pg_timezone_names z ON z.name = p.time_zone;

-- Same columns as before (the filtering views on top keep working).
CREATE OR REPLACE VIEW payments_due_all AS
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
       p.due_on < (now() AT TIME ZONE coalesce(z.time_zone, 'UTC'))::date AS overdue
  FROM payments p
  LEFT JOIN members m ON m.tenant_id = p.tenant_id AND m.member_id = p.member_id
  LEFT JOIN tenant_time_zones z ON z.tenant_id = p.tenant_id
 WHERE p.status IN ('SCHEDULED', 'DUE');

CREATE OR REPLACE VIEW form_1099_patr_worksheet_all AS
WITH cash AS (
    SELECT p.tenant_id, p.member_id, p.currency,
           extract(year FROM p.settled_at AT TIME ZONE coalesce(z.time_zone, 'UTC'))::integer
               AS tax_year,
           sum(p.amount) AS cash_paid
      FROM payments p
      LEFT JOIN tenant_time_zones z ON z.tenant_id = p.tenant_id
     WHERE p.purpose = 'DISTRIBUTION' AND p.status = 'SETTLED'
     GROUP BY 1, 2, 3, 4
), notices AS (
    SELECT a.tenant_id, a.member_id, a.currency,
           extract(year FROM a.approved_at AT TIME ZONE coalesce(z.time_zone, 'UTC'))::integer
               AS tax_year,
           sum(a.retained) FILTER (WHERE a.cash >= a.amount * 0.20) AS qualified,
           sum(a.retained) FILTER (WHERE a.cash < a.amount * 0.20)  AS nonqualified
      FROM allocations a
      LEFT JOIN tenant_time_zones z ON z.tenant_id = a.tenant_id
     WHERE a.status = 'APPROVED'
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
