-- `event_log.payload` becomes `json`: the record's JSON text as the sink wrote it (its
-- fields in the schema's order), checked by the server to be JSON but no longer decomposed
-- into JSONB. Parsing every payload into JSONB was the largest single cost of appending to
-- the log (docs/benchmarks.md); the log is written once per record and read rarely.
-- `->`, `->>` and `json_*` functions work on it as they did; a query that needs JSONB's
-- operators (`@>`, `?`, jsonpath) casts: `payload::jsonb`.
--
-- The log's key becomes (partition, offset, topic): the same key, whose entries compare on
-- the two numbers first, so that an append costs less than with the topic's text first
-- (1.33 against 1.95 µs per row in isolation, docs/benchmarks.md). Lookups by all three
-- columns use it as before.
--
-- Existing rows are converted and the key rebuilt in the same rewrite of the table, under
-- an exclusive lock: on a large log, plan the upgrade's minutes. `exceptions_all` reads
-- the payload, and a column a view uses cannot change its type, so the view reads a null
-- in its place while the column changes, then gets its own definition back; its grants
-- and the filtering view on top are kept.
DO $$
DECLARE
    definition text := pg_get_viewdef('exceptions_all'::regclass);
BEGIN
    EXECUTE 'CREATE OR REPLACE VIEW exceptions_all AS '
         || regexp_replace(definition, '(\mevent_log\.)?\mpayload\M', 'NULL::jsonb', 'g');
    ALTER TABLE event_log
        ALTER COLUMN payload TYPE json USING payload::json,
        DROP CONSTRAINT event_log_pkey,
        ADD PRIMARY KEY (source_partition, source_offset, source_topic);
    EXECUTE 'CREATE OR REPLACE VIEW exceptions_all AS ' || definition;
END
$$;
