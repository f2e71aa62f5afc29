-- The outbox in a producer's database, in the schema `habitat outbox install` names (the
-- search path at install time): the pending events, the event types producers may write,
-- the dead letters, and `enqueue`, which a producer calls inside its own transaction.
--
-- Order: a row's place is (txid, seq) — the id of the transaction that wrote it, then its
-- sequence. The relay only reads rows whose transaction is older than every transaction
-- still running (txid < pg_snapshot_xmin(pg_current_snapshot())): no row can appear later
-- with a smaller place, so the relay's position never skips a row of a transaction that
-- committed late (docs/decisions/0007-outbox.md).

CREATE TABLE writable_types (
    event_type text PRIMARY KEY
);

CREATE TABLE events (
    seq            bigserial PRIMARY KEY,
    txid           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid        NOT NULL UNIQUE,
    event_type     text        NOT NULL,
    tenant_id      text        NOT NULL,
    payload        jsonb       NOT NULL,
    correlation_id text,
    actor          text,
    occurred_at    timestamptz NOT NULL
);
CREATE INDEX events_place ON events (txid, seq);

-- Rows the relay could not publish (the REST proxy's rules refused them), with why.
CREATE TABLE dead_letters (
    event_id       uuid PRIMARY KEY,
    event_type     text        NOT NULL,
    tenant_id      text        NOT NULL,
    payload        jsonb       NOT NULL,
    correlation_id text,
    actor          text,
    occurred_at    timestamptz NOT NULL,
    reason         jsonb       NOT NULL,
    dead_at        timestamptz NOT NULL DEFAULT now()
);

-- A UUIDv7: 48 bits of Unix milliseconds, version 7, random bits (RFC 9562).
CREATE FUNCTION uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- Enqueues one event in the caller's transaction: published once that transaction commits,
-- never if it rolls back. Refuses at once what is cheap to refuse; the relay checks the rest
-- with the REST proxy's rules (a refused row becomes a dead letter).
CREATE FUNCTION enqueue(event_type text, tenant_id text, payload jsonb,
                        correlation_id text DEFAULT NULL, actor text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    id uuid := uuid_v7();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM writable_types w WHERE w.event_type = enqueue.event_type) THEN
        RAISE EXCEPTION 'habitat outbox: % is not an event type producers may write', event_type
            USING ERRCODE = '22023',
                  HINT = 'Producers write the records of topics.yaml whose writer is rest-proxy; processors write the others.';
    END IF;
    IF tenant_id IS NULL OR tenant_id !~ '^[A-Za-z0-9._:-]{1,64}$' THEN
        RAISE EXCEPTION 'habitat outbox: tenant id % must be 1-64 characters of A-Z a-z 0-9 . _ : -', tenant_id
            USING ERRCODE = '22023';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'habitat outbox: the payload must be a JSON object (the record''s fields without meta)'
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO events (event_id, event_type, tenant_id, payload, correlation_id, actor, occurred_at)
    VALUES (id, enqueue.event_type, enqueue.tenant_id, enqueue.payload, enqueue.correlation_id,
            enqueue.actor, clock_timestamp());
    PERFORM pg_notify(current_schema(), '');
    RETURN id;
END
$$;

-- Callers keep their own search path: the functions use the outbox's.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION %I.enqueue(text, text, jsonb, text, text) SET search_path = %I, pg_catalog',
                   current_schema(), current_schema());
    EXECUTE format('ALTER FUNCTION %I.uuid_v7() SET search_path = %I, pg_catalog',
                   current_schema(), current_schema());
END
$$;
