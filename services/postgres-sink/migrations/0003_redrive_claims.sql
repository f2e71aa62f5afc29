-- A re-drive claims its letter first (REDRIVING), then publishes, then marks it REDRIVEN:
-- two operators, a crash or a timeout never publish a letter twice unnoticed.

ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_status_check;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_status_check
    CHECK (status IN ('NEW', 'REDRIVING', 'REDRIVEN', 'RESOLVED'));
ALTER TABLE dead_letters
    ADD COLUMN redriving_by    text,
    ADD COLUMN redriving_since timestamptz;
