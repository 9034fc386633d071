-- A verify whose payment was valid but whose credit could not be written (the database
-- connection dropped, a statement timed out) leaves an attempt saying so: 'credit_failed',
-- with the error in `detail`. Triage names it as "valid payment but ledger write failed"
-- from this record alone. The previous release never writes the new value, so both run
-- against this schema.
ALTER TABLE verification_attempts DROP CONSTRAINT verification_attempts_outcome_check;
ALTER TABLE verification_attempts ADD CONSTRAINT verification_attempts_outcome_check
    CHECK (outcome IN ('confirmed', 'duplicate', 'pending', 'rejected', 'conflict', 'paused',
                       'credit_failed'));
