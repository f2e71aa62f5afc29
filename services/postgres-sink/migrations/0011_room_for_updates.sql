-- Room on each page for the row's next version, in the tables whose rows the workload
-- updates after inserting them: a contribution is submitted and then reviewed, a tally
-- changes with every approved contribution, a capital account with every posting, a
-- distribution, a period and an allocation set move through their states. None of those
-- updates changes an indexed column, so with room on the page Postgres writes the new
-- version beside the old (a heap-only update: no new index entries) and reclaims the old
-- one when the page fills. Packed full (the default), every update moves the row to
-- another page and adds an entry to each of the table's indexes.
--
-- In isolation (psql, 200,000 contributions inserted and then updated once, in batches of
-- 5,000 per transaction) the pairs cost 12 % less at 50 and every update was heap-only;
-- at 65 about half were. docs/benchmarks.md has the figures. The setting applies to pages
-- filled from now on: existing rows are not moved.
ALTER TABLE contributions SET (fillfactor = 50);
ALTER TABLE patronage_tallies SET (fillfactor = 50);
ALTER TABLE capital_accounts SET (fillfactor = 50);
ALTER TABLE distributions SET (fillfactor = 50);
ALTER TABLE periods SET (fillfactor = 50);
ALTER TABLE allocation_sets SET (fillfactor = 50);
