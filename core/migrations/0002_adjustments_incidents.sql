-- Audited credit adjustments with manager approvals, and incident records.
-- As in 0001, the invariants live in the database: an adjustment is applied at most once
-- (one ledger transaction, unique), only from PENDING_APPROVAL, only with enough approvals
-- from people other than the requester; decisions and notes are append-only; a closed
-- incident carries the runbook's whole closeout and no longer changes.

-- Adjustments --------------------------------------------------------------------------
CREATE TABLE adjustments (
    id                  bigserial PRIMARY KEY,
    user_id             text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 200),
    credits             bigint NOT NULL CHECK (credits <> 0),
    kind                text NOT NULL
                        CHECK (kind IN ('missing_credit', 'duplicate_reversal', 'other')),
    tx_signatures       text[] NOT NULL DEFAULT '{}',
    intent_ids          text[] NOT NULL DEFAULT '{}',
    ticket              text,
    -- the ledger transaction a duplicate_reversal takes back (posted as kind 'reversal')
    reverses_ledger_tx  bigint REFERENCES ledger_transactions (id),
    requester           text NOT NULL CHECK (length(requester) > 0),
    requester_source    text NOT NULL
                        CHECK (requester_source IN ('api', 'slack', 'cli', 'scheduler', 'system')),
    reason              text NOT NULL CHECK (length(btrim(reason)) > 0),
    status              text NOT NULL DEFAULT 'PENDING_APPROVAL'
                        CHECK (status IN ('PENDING_APPROVAL', 'APPLIED', 'REJECTED', 'EXPIRED')),
    approvals_required  integer NOT NULL CHECK (approvals_required >= 1),
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    decided_at          timestamptz,
    applied_ledger_tx   bigint UNIQUE REFERENCES ledger_transactions (id),
    slack_channel       text,
    slack_thread_ts     text,
    CHECK (expires_at > created_at),
    CHECK ((status = 'PENDING_APPROVAL') = (decided_at IS NULL)),
    CHECK ((status = 'APPLIED') = (applied_ledger_tx IS NOT NULL)),
    CHECK (kind <> 'missing_credit' OR credits > 0),
    CHECK (kind <> 'duplicate_reversal' OR credits < 0),
    CHECK (reverses_ledger_tx IS NULL OR kind = 'duplicate_reversal')
);
CREATE INDEX adjustments_pending ON adjustments (expires_at) WHERE status = 'PENDING_APPROVAL';
CREATE INDEX adjustments_user ON adjustments (user_id, id DESC);
-- One live reversal request per ledger transaction: a second request while one waits (or
-- after one applied) is refused; a rejected or expired one may be asked again.
CREATE UNIQUE INDEX adjustments_one_reversal_per_tx ON adjustments (reverses_ledger_tx)
    WHERE reverses_ledger_tx IS NOT NULL AND status IN ('PENDING_APPROVAL', 'APPLIED');

CREATE TABLE adjustment_decisions (
    id             bigserial PRIMARY KEY,
    adjustment_id  bigint NOT NULL REFERENCES adjustments (id),
    approver       text NOT NULL CHECK (length(approver) > 0),
    decision       text NOT NULL CHECK (decision IN ('approve', 'reject')),
    note           text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (adjustment_id, approver)
);

CREATE TRIGGER adjustment_decisions_append_only BEFORE UPDATE OR DELETE ON adjustment_decisions
    FOR EACH ROW EXECUTE FUNCTION payops_forbid_change();
CREATE TRIGGER adjustment_decisions_no_truncate BEFORE TRUNCATE ON adjustment_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION payops_forbid_change();

-- A decision is only taken on a pending request, and never by its requester.
CREATE FUNCTION payops_adjustment_decision_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    adj adjustments%ROWTYPE;
BEGIN
    SELECT * INTO adj FROM adjustments WHERE id = NEW.adjustment_id;
    IF adj.status <> 'PENDING_APPROVAL' THEN
        RAISE EXCEPTION 'adjustment % is %, not pending approval', adj.id, adj.status
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.approver = adj.requester THEN
        RAISE EXCEPTION 'adjustment %: the requester cannot decide it', adj.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER adjustment_decisions_check BEFORE INSERT ON adjustment_decisions
    FOR EACH ROW EXECUTE FUNCTION payops_adjustment_decision_check();

-- What was requested never changes; the status moves once, out of PENDING_APPROVAL; APPLIED
-- needs the required number of approvals already recorded. Only the Slack thread link (the
-- bot fills it in after posting) may change freely.
CREATE FUNCTION payops_adjustment_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    approvals integer;
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'adjustments are kept: DELETE refused' USING ERRCODE = 'restrict_violation';
    END IF;
    IF (to_jsonb(OLD) - 'status' - 'decided_at' - 'applied_ledger_tx' - 'slack_channel'
            - 'slack_thread_ts')
       IS DISTINCT FROM
       (to_jsonb(NEW) - 'status' - 'decided_at' - 'applied_ledger_tx' - 'slack_channel'
            - 'slack_thread_ts') THEN
        RAISE EXCEPTION 'adjustment %: the request itself cannot be changed', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF (OLD.status, OLD.decided_at, OLD.applied_ledger_tx)
       IS DISTINCT FROM (NEW.status, NEW.decided_at, NEW.applied_ledger_tx) THEN
        IF OLD.status <> 'PENDING_APPROVAL' THEN
            RAISE EXCEPTION 'adjustment % is already %', OLD.id, OLD.status
                USING ERRCODE = 'restrict_violation';
        END IF;
        IF NEW.status = 'APPLIED' THEN
            SELECT count(DISTINCT approver) INTO approvals FROM adjustment_decisions
             WHERE adjustment_id = NEW.id AND decision = 'approve' AND approver <> NEW.requester;
            IF approvals < NEW.approvals_required THEN
                RAISE EXCEPTION 'adjustment % has % of % approvals', NEW.id, approvals,
                    NEW.approvals_required USING ERRCODE = 'check_violation';
            END IF;
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER adjustments_guard BEFORE UPDATE OR DELETE ON adjustments
    FOR EACH ROW EXECUTE FUNCTION payops_adjustment_guard();
CREATE TRIGGER adjustments_no_truncate BEFORE TRUNCATE ON adjustments
    FOR EACH STATEMENT EXECUTE FUNCTION payops_forbid_change();

-- Incidents ----------------------------------------------------------------------------
CREATE TABLE incidents (
    id                 bigserial PRIMARY KEY,
    title              text NOT NULL CHECK (length(btrim(title)) > 0),
    status             text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    opened_by          text NOT NULL,
    opened_at          timestamptz NOT NULL DEFAULT now(),
    slack_channel      text,
    slack_thread_ts    text,
    closed_by          text,
    closed_at          timestamptz,
    -- the runbook's closeout
    root_cause         text,
    affected_users     text,
    corrective_action  text,
    prevention_action  text,
    CHECK (status = 'open' OR (
        closed_by IS NOT NULL AND closed_at IS NOT NULL
        AND length(btrim(coalesce(root_cause, ''))) > 0
        AND length(btrim(coalesce(affected_users, ''))) > 0
        AND length(btrim(coalesce(corrective_action, ''))) > 0
        AND length(btrim(coalesce(prevention_action, ''))) > 0)),
    CHECK (status = 'closed' OR (closed_by IS NULL AND closed_at IS NULL))
);
CREATE INDEX incidents_open ON incidents (opened_at) WHERE status = 'open';

CREATE TABLE incident_notes (
    id           bigserial PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents (id),
    author       text NOT NULL,
    text         text NOT NULL CHECK (length(btrim(text)) > 0),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incident_notes_incident ON incident_notes (incident_id, id);

CREATE TRIGGER incident_notes_append_only BEFORE UPDATE OR DELETE ON incident_notes
    FOR EACH ROW EXECUTE FUNCTION payops_forbid_change();
CREATE TRIGGER incident_notes_no_truncate BEFORE TRUNCATE ON incident_notes
    FOR EACH STATEMENT EXECUTE FUNCTION payops_forbid_change();

CREATE FUNCTION payops_incident_note_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM incidents WHERE id = NEW.incident_id AND status = 'open') THEN
        RAISE EXCEPTION 'incident % is not open: notes refused', NEW.incident_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER incident_notes_check BEFORE INSERT ON incident_notes
    FOR EACH ROW EXECUTE FUNCTION payops_incident_note_check();

-- A closed incident is a record: only its Slack thread link may still change.
CREATE FUNCTION payops_incident_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'incidents are kept: DELETE refused' USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.status = 'closed'
       AND (to_jsonb(OLD) - 'slack_channel' - 'slack_thread_ts')
           IS DISTINCT FROM (to_jsonb(NEW) - 'slack_channel' - 'slack_thread_ts') THEN
        RAISE EXCEPTION 'incident % is closed', OLD.id USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER incidents_guard BEFORE UPDATE OR DELETE ON incidents
    FOR EACH ROW EXECUTE FUNCTION payops_incident_guard();
CREATE TRIGGER incidents_no_truncate BEFORE TRUNCATE ON incidents
    FOR EACH STATEMENT EXECUTE FUNCTION payops_forbid_change();
