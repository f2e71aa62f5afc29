-- The sink's tables, created in the schema the sink writes to (its search_path).
--
-- Every entity table is keyed by the record key (`<tenant>/<entity>/<id>`), so the latest
-- record of a key upserts its row and a tombstone deletes it. Columns are named after the
-- Avro fields; money is NUMERIC(18,2), ratios NUMERIC(9,4), quantities NUMERIC(18,4).
-- Every row says which record it came from (event id and type, topic/partition/offset).
-- Columns are nullable unless they are part of the key: a record the catalog accepts is
-- never refused by the database.

-- Where the sink is: the next offset to read per partition, written in the same
-- transaction as the rows.
CREATE TABLE sink_offsets (
    sink             text        NOT NULL,
    topic            text        NOT NULL,
    partition        integer     NOT NULL,
    next_offset      bigint      NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, topic, partition)
);

-- Every record seen on the context topics, in order: the audit trail that outlives
-- compaction. A tombstone is logged with a null payload.
CREATE TABLE event_log (
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    record_key       text        NOT NULL,
    event_id         text,
    event_type       text,
    tenant_id        text,
    occurred_at      timestamptz,
    schema_version   integer,
    producer         text,
    actor            text,
    correlation_id   text,
    causation_id     text,
    -- The record's fields without `meta` (whose fields are the columns above).
    payload          jsonb,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
-- The exceptions view reads rejected approvals from the log.
CREATE INDEX event_log_set_status ON event_log (tenant_id)
    WHERE event_type = 'agreements.AllocationSetStatusChanged';

CREATE TABLE members (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    member_id        text,
    display_name     text,
    joined_on        date,
    status           text,
    email            text,
    previous_status  text,
    reason           text,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

CREATE TABLE contributions (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    contribution_id  text,
    member_id        text,
    period_id        text,
    kind             text,
    quantity         numeric(18,4),
    unit             text,
    value            numeric(18,2),
    description      text,
    status           text,
    submitted_by     text,
    submitted_at     timestamptz,
    reviewed_by      text,
    reviewed_at      timestamptz,
    rejection_reason text,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);
CREATE INDEX contributions_period ON contributions (tenant_id, period_id, member_id);

CREATE TABLE periods (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    period_id        text,
    starts_on        date,
    ends_on          date,
    status           text,
    currency         text,
    net_surplus      numeric(18,2),
    closed_by        text,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

CREATE TABLE patronage_policies (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    weights          jsonb,
    cash_ratio       numeric(9,4),
    installments     integer,
    installment_interval text,
    first_payment_offset_days integer,
    effective_from   date,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

-- Results reported by the payments executor (PaymentSettled / PaymentFailed), one row per
-- result: the key is the result's own event id.
CREATE TABLE payment_results (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    payment_id       text,
    settled_at       timestamptz,
    method           text,
    external_ref     text,
    failed_at        timestamptz,
    reason           text,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

CREATE TABLE ledger_transactions (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    transaction_id   text,
    posted_on        date,
    currency         text,
    description      text,
    source_event_id  text,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

-- The lines of a ledger transaction, replaced (and deleted) with it.
CREATE TABLE ledger_lines (
    record_key       text    NOT NULL,
    line_no          integer NOT NULL,
    tenant_id        text    NOT NULL,
    transaction_id   text,
    posted_on        date,
    currency         text,
    account          text,
    member_id        text,
    debit            numeric(18,2),
    credit           numeric(18,2),
    memo             text,
    PRIMARY KEY (record_key, line_no)
);
CREATE INDEX ledger_lines_account ON ledger_lines (tenant_id, account, member_id);

CREATE TABLE capital_accounts (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    member_id        text,
    currency         text,
    balance          numeric(18,2),
    change           numeric(18,2),
    transaction_id   text,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

CREATE TABLE loans (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    loan_id          text,
    member_id        text,
    principal        numeric(18,2),
    annual_rate      numeric(9,4),
    term_months      integer,
    frequency        text,
    method           text,
    funded_on        date,
    currency         text,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

-- Governance decisions: one row per decision (keyed by its event id).
CREATE TABLE allocation_approvals (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    period_id        text,
    set_hash         text,
    approved_by      text,
    approved_at      timestamptz,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

CREATE TABLE patronage_tallies (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    period_id        text,
    member_id        text,
    by_kind          jsonb,
    total            numeric(18,2),
    contributions    integer,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

CREATE TABLE patronage_seals (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    period_id        text,
    currency         text,
    net_surplus      numeric(18,2),
    weights          jsonb,
    cash_ratio       numeric(9,4),
    members          jsonb,
    total_weighted   numeric(18,4),
    sealed_at        timestamptz,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

CREATE TABLE late_changes (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    contribution_id  text,
    member_id        text,
    period_id        text,
    previous_status  text,
    previous_value   numeric(18,2),
    new_status       text,
    new_value        numeric(18,2),
    source_event_id  text,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

CREATE TABLE allocations (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    period_id        text,
    member_id        text,
    allocation_id    text,
    amount           numeric(18,2),
    cash             numeric(18,2),
    retained         numeric(18,2),
    currency         text,
    status           text,
    set_hash         text,
    approved_by      text,
    approved_at      timestamptz,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);
CREATE INDEX allocations_period ON allocations (tenant_id, period_id);

CREATE TABLE allocation_sets (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    period_id        text,
    currency         text,
    net_surplus      numeric(18,2),
    total_amount     numeric(18,2),
    total_cash       numeric(18,2),
    total_retained   numeric(18,2),
    members          integer,
    set_hash         text,
    status           text,
    reason           text,
    decision_event_id text,
    approved_by      text,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

-- Distribution schedules (DistributionScheduled) and loan schedules (LoanScheduled).
CREATE TABLE schedules (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    schedule_id      text,
    period_id        text,
    loan_id          text,
    member_id        text,
    cash             numeric(18,2),
    principal        numeric(18,2),
    total_interest   numeric(18,2),
    currency         text,
    installments     integer,
    first_due_on     date,
    payments         jsonb,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

CREATE TABLE payments (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    payment_id       text,
    schedule_id      text,
    purpose          text,
    member_id        text,
    seq              integer,
    due_on           date,
    amount           numeric(18,2),
    principal        numeric(18,2),
    interest         numeric(18,2),
    currency         text,
    status           text,
    previous_status  text,
    settled_at       timestamptz,
    method           text,
    external_ref     text,
    failure_reason   text,
    result_event_id  text,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);
CREATE INDEX payments_by_status ON payments (tenant_id, status, due_on);

CREATE TABLE payment_exceptions (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    result_event_id  text,
    result_type      text,
    payment_id       text,
    payment_status   text,
    reason           text,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

CREATE TABLE distributions (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    distribution_id  text,
    period_id        text,
    member_id        text,
    cash             numeric(18,2),
    currency         text,
    completed_at     timestamptz,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);

-- Records no reader could take: every processor's dead-letter topic, and the sink's own
-- (written here directly, in the transaction that skips them). Operators list, re-drive
-- and resolve them (`habitat dlq`).
CREATE TABLE dead_letters (
    id               bigserial   PRIMARY KEY,
    processor        text        NOT NULL,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    error_class      text        NOT NULL,
    message          text        NOT NULL,
    tenant_id        text,
    record_key       bytea,
    record_value     bytea,
    headers          jsonb       NOT NULL DEFAULT '[]',
    first_seen       timestamptz NOT NULL,
    status           text        NOT NULL DEFAULT 'NEW'
                     CHECK (status IN ('NEW', 'REDRIVEN', 'RESOLVED')),
    redrive_count    integer     NOT NULL DEFAULT 0,
    redriven_by      text,
    redriven_at      timestamptz,
    resolved_by      text,
    resolved_at      timestamptz,
    resolution       text,
    -- Where the sink read the letter: its dead-letter topic record, or for the sink's own
    -- letters the source record itself. Each is taken once.
    read_topic       text        NOT NULL,
    read_partition   integer     NOT NULL,
    read_offset      bigint      NOT NULL,
    UNIQUE (read_topic, read_partition, read_offset)
);
CREATE INDEX dead_letters_status ON dead_letters (processor, status);
