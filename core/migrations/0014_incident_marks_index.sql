-- The timeline follower asks, every round, which incidents are open (their open and close
-- records): without this index that question reads the whole audit log, which grows by two
-- records per purchase.
CREATE INDEX audit_log_incident_marks ON audit_log (seq)
    WHERE action IN ('incident.open', 'incident.close');
