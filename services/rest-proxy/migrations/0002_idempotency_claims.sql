-- An idempotency claim records who holds it and since when, so a claim left by a proxy
-- that died is taken over; a kept answer expires and is purged.

ALTER TABLE idempotency_keys
    ADD COLUMN holder     text,
    ADD COLUMN claimed_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN expires_at timestamptz;

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at)
    WHERE expires_at IS NOT NULL;

-- Answers kept before this migration expire a day after they were given.
UPDATE idempotency_keys SET expires_at = created_at + interval '24 hours'
 WHERE status IS NOT NULL;
