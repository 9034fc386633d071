-- The append-only guard of audit_log compares the row's columns directly instead of building
-- two to_jsonb() images of it. Same rule: a row may only go from unsealed to sealed (seq and
-- chain_hash set), nothing else may change. Sealing costs about a third of the CPU it did.
-- A column added to audit_log later must be added to both lists here
-- (tests/integration/test_audit.py checks every column of the table).
CREATE OR REPLACE FUNCTION payops_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq IS NOT NULL
       AND (NEW.id, NEW.at, NEW.actor, NEW.source, NEW.action, NEW.subject, NEW.before,
            NEW.after, NEW.request_id, NEW.row_hash)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.at, OLD.actor, OLD.source, OLD.action, OLD.subject, OLD.before,
            OLD.after, OLD.request_id, OLD.row_hash) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;
