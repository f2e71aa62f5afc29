-- Schemas, global ids: the same schema text registered anywhere keeps one id.
CREATE TABLE schemas (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schema_type text    NOT NULL DEFAULT 'AVRO',
    schema      text    NOT NULL,
    fingerprint text    NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The versions of each subject. A soft delete marks versions deleted; numbers are never
-- reused.
CREATE TABLE subject_versions (
    subject    text    NOT NULL,
    version    integer NOT NULL,
    schema_id  integer NOT NULL REFERENCES schemas (id),
    deleted    boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, version)
);
CREATE INDEX subject_versions_schema ON subject_versions (schema_id);

-- Compatibility levels: subject '' is the global default.
CREATE TABLE compatibility (
    subject text PRIMARY KEY,
    level   text NOT NULL CHECK (level IN ('NONE', 'BACKWARD', 'BACKWARD_TRANSITIVE',
        'FORWARD', 'FORWARD_TRANSITIVE', 'FULL', 'FULL_TRANSITIVE'))
);
INSERT INTO compatibility (subject, level) VALUES ('', 'BACKWARD');
