-- Incidents that write themselves: severity and roles, the timeline (every runbook action
-- taken while an incident is open, each linked to its audit record), which entries were
-- posted into the incident's thread, the audit-log position the timeline is written up to,
-- and who opened the Slack App Home recently (their view is refreshed when things change).
--
-- The timeline is part of the audit trail: append-only, enforced here like the ledger's
-- entries (0001) and the reconciliation's records (0004).

ALTER TABLE incidents
    ADD COLUMN severity   smallint CHECK (severity BETWEEN 1 AND 3),
    ADD COLUMN commander  text CHECK (commander IS NULL OR length(commander) > 0),
    ADD COLUMN comms      text CHECK (comms IS NULL OR length(comms) > 0),
    ADD COLUMN incident_channel text;

CREATE TABLE incident_timeline (
    id           bigserial PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents (id),
    audit_id     bigint NOT NULL REFERENCES audit_log (id),
    at           timestamptz NOT NULL,
    actor        text NOT NULL CHECK (length(actor) > 0),
    kind         text NOT NULL CHECK (length(kind) > 0),
    text         text NOT NULL CHECK (length(btrim(text)) > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (incident_id, audit_id)
);
CREATE INDEX incident_timeline_incident ON incident_timeline (incident_id, id);

CREATE TRIGGER incident_timeline_append_only BEFORE UPDATE OR DELETE ON incident_timeline
    FOR EACH ROW EXECUTE FUNCTION payops_forbid_change();
CREATE TRIGGER incident_timeline_no_truncate BEFORE TRUNCATE ON incident_timeline
    FOR EACH STATEMENT EXECUTE FUNCTION payops_forbid_change();

-- An entry tells what its audit record says: same time and actor.
CREATE FUNCTION payops_incident_timeline_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    a audit_log%ROWTYPE;
BEGIN
    SELECT * INTO a FROM audit_log WHERE id = NEW.audit_id;
    IF a.at IS DISTINCT FROM NEW.at OR a.actor IS DISTINCT FROM NEW.actor THEN
        RAISE EXCEPTION 'timeline entry of incident % does not match audit record %',
            NEW.incident_id, NEW.audit_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER incident_timeline_check BEFORE INSERT ON incident_timeline
    FOR EACH ROW EXECUTE FUNCTION payops_incident_timeline_check();

-- A timeline entry posted into the incident's thread (once; the post is the record).
CREATE TABLE incident_timeline_posts (
    entry_id   bigint PRIMARY KEY REFERENCES incident_timeline (id),
    channel    text NOT NULL,
    ts         text NOT NULL,
    posted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER incident_timeline_posts_append_only BEFORE UPDATE OR DELETE
    ON incident_timeline_posts FOR EACH ROW EXECUTE FUNCTION payops_forbid_change();
CREATE TRIGGER incident_timeline_posts_no_truncate BEFORE TRUNCATE ON incident_timeline_posts
    FOR EACH STATEMENT EXECUTE FUNCTION payops_forbid_change();

-- How far the audit log (by its sealed `seq`, the commit order) has been read.
CREATE TABLE audit_followers (
    name        text PRIMARY KEY,
    seq         bigint NOT NULL DEFAULT 0 CHECK (seq >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO audit_followers (name) VALUES ('incident_timeline');

-- Who opened the App Home, when; their view is published again while it is recent.
CREATE TABLE home_openers (
    user_id       text PRIMARY KEY,
    opened_at     timestamptz NOT NULL,
    published_at  timestamptz
);
