-- A refused approval of an allocation set is a fact of its own (AllocationApprovalRejected,
-- keyed by the decision): it never replaces the set's row. Finance sees refusals in
-- `exceptions`, with the hash they named, the proposed one and the set's unchanged state.

CREATE TABLE allocation_approval_rejections (
    record_key        text PRIMARY KEY,
    tenant_id         text NOT NULL,
    period_id         text,
    decision_event_id text,
    set_hash          text,
    approved_by       text,
    proposed_set_hash text,
    set_status        text,
    reason            text,
    event_id          text, event_type text, occurred_at timestamptz,
    source_topic      text, source_partition integer, source_offset bigint
);
CREATE INDEX allocation_approval_rejections_period
    ON allocation_approval_rejections (tenant_id, period_id);

-- Same columns as before: the filtering `exceptions` view on top keeps working. Refusals
-- written before this version (status records on the set's key) are still listed.
CREATE OR REPLACE VIEW exceptions_all AS
SELECT tenant_id, 'LATE_CONTRIBUTION_CHANGE' AS kind, period_id,
       contribution_id AS subject,
       format('%s: %s %s -> %s %s', member_id, coalesce(previous_status, '-'),
              coalesce(previous_value::text, '-'), new_status, new_value) AS detail,
       1::bigint AS count, occurred_at
  FROM late_changes
UNION ALL
SELECT tenant_id, 'APPROVAL_REJECTED', period_id, decision_event_id,
       format('%s (set %s, %s; approval by %s)', reason, coalesce(proposed_set_hash, 'none'),
              coalesce(set_status, 'not proposed'), approved_by),
       1, occurred_at
  FROM allocation_approval_rejections
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
