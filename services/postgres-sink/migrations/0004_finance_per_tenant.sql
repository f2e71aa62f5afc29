-- Finance per tenant: a role bound to tenants (`habitat finance grant --tenant T --role R`)
-- reads the report views for those tenants only, and no base table.
--
-- The views run with their owner's rights (the sink's), so a policy on the base tables
-- would not see who asks; each report view therefore filters its rows by the asking role
-- (`current_user`, which a view keeps) and is a security barrier, so no function a caller
-- passes in a WHERE clause sees the rows filtered out. A role bound to no tenant (the
-- sink, `habitat_finance`) sees every tenant, as before.

CREATE TABLE finance_tenant_roles (
    role_name  name NOT NULL,
    tenant_id  text NOT NULL,
    PRIMARY KEY (role_name, tenant_id)
);

-- Whether `asker` may see rows of `tenant`: it is a superuser, or it does not use the
-- rights of any tenant-bound role, or it uses those of one bound to `tenant`. (USAGE, not
-- MEMBER: a role's creator may hold it without using it.) SECURITY DEFINER: callers need
-- no right on the table of bindings.
CREATE FUNCTION finance_tenant_visible(tenant text, asker name) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = asker), false)
        OR NOT EXISTS (SELECT 1 FROM finance_tenant_roles r
                         JOIN pg_roles g ON g.rolname = r.role_name
                        WHERE pg_has_role(asker, g.oid, 'USAGE'))
        OR EXISTS (SELECT 1 FROM finance_tenant_roles r
                     JOIN pg_roles g ON g.rolname = r.role_name
                    WHERE r.tenant_id = tenant AND pg_has_role(asker, g.oid, 'USAGE'))
$$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION %I.finance_tenant_visible(text, name) SET search_path = %I',
                   current_schema(), current_schema());
END
$$;

-- Each report view becomes `<name>_all` (unfiltered, for the sink's own reports) and a
-- filtering view takes its name.
DO $$
DECLARE
    report text;
BEGIN
    FOREACH report IN ARRAY ARRAY['period_allocation_report', 'member_statement',
                                  'trial_balance', 'payments_due',
                                  'form_1099_patr_worksheet', 'exceptions'] LOOP
        EXECUTE format('ALTER VIEW %I RENAME TO %I', report, report || '_all');
        EXECUTE format('CREATE VIEW %I WITH (security_barrier) AS SELECT * FROM %I '
                       'WHERE finance_tenant_visible(tenant_id, current_user)',
                       report, report || '_all');
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'habitat_finance') THEN
            EXECUTE format('REVOKE ALL ON %I FROM habitat_finance', report || '_all');
            EXECUTE format('GRANT SELECT ON %I TO habitat_finance', report);
        END IF;
    END LOOP;
END
$$;
