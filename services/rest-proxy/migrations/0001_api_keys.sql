-- The REST proxy's API keys and idempotency records.

CREATE TABLE api_keys (
    id             text PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    -- SHA-256 of the secret part; the secret itself is shown once, at creation.
    secret_sha256  bytea NOT NULL,
    -- Tenants and event types the key may write; '*' grants all.
    tenants        text[] NOT NULL,
    event_types    text[] NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);

-- The first answer to a request carrying an Idempotency-Key, per API key.
CREATE TABLE idempotency_keys (
    api_key_id      text NOT NULL REFERENCES api_keys (id),
    idempotency_key text NOT NULL,
    request_sha256  bytea NOT NULL,
    status          integer,
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, idempotency_key)
);
