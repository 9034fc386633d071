-- payops: no transaction
-- The timeline follower asks, every round, which incidents are open (their open and close
-- records): without this index that question reads the whole audit log, which grows by two
-- records per purchase. Built without blocking the audit log's writers; IF NOT EXISTS makes
-- it safe to run again should it stop before it is recorded (an interrupted build leaves an
-- invalid index, which `payops migrate` drops before building it again: docs/MIGRATIONS.md).
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_incident_marks ON audit_log (seq)
    WHERE action IN ('incident.open', 'incident.close');
