-- Empties the session's staging tables named (the sink's `stage_<table>` temporary
-- tables, see src/stage.rs) at the end of the transaction that filled them.
--
-- The tables used to be `ON COMMIT DELETE ROWS`, which truncates every such table of the
-- session at every commit, used or not: ~3 ms of the server's CPU per transaction with the
-- sink's twenty. Deleting a batch's rows costs little but leaves dead rows that nothing
-- vacuums (autovacuum skips temporary tables), so a table that has grown past 1 MiB is
-- truncated instead: a table stays under 1 MiB plus one batch.
CREATE FUNCTION clear_staging(VARIADIC tables text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY tables LOOP
        IF pg_relation_size(format('pg_temp.%I', name)::regclass) > 1048576 THEN
            EXECUTE format('TRUNCATE pg_temp.%I', name);
        ELSE
            EXECUTE format('DELETE FROM pg_temp.%I', name);
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION clear_staging(text[]) FROM PUBLIC;
