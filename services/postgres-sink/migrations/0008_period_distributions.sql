-- A period whose every distribution is paid out (PeriodDistributed, written by the
-- distribution recorder). Finance reads it as "the period is settled"; the processors
-- forget the period's working state when they see it.

CREATE TABLE period_distributions (
    record_key       text PRIMARY KEY,
    tenant_id        text NOT NULL,
    period_id        text,
    currency         text,
    cash             numeric(18,2),
    distributions    jsonb,
    distributed_at   timestamptz,
    event_id         text, event_type text, occurred_at timestamptz,
    source_topic     text, source_partition integer, source_offset bigint
);
