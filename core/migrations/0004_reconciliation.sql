-- Reconciliation runs, findings and tickets (core/recon*.py).
-- A run stores its totals, its drift and the watermark the next incremental run starts
-- from. A finding has a stable fingerprint (sha256 of its kind and sorted subject ids) and
-- one row per time it is open: from the run that first found it to the run that no longer
-- did. A ticket groups open findings for the runbook's "Resolve" step and closes only once a
-- re-run found every one of them resolved. Runs are a record: never updated nor deleted.

-- Runs ----------------------------------------------------------------------------------
CREATE TABLE recon_runs (
    id                 bigserial PRIMARY KEY,
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz NOT NULL,
    mode               text NOT NULL CHECK (mode IN ('full', 'incremental', 'window')),
    full_run           boolean NOT NULL,
    window_start       timestamptz,
    window_end         timestamptz NOT NULL,
    -- where the next incremental run starts (horizon, snapshot); NULL for window runs
    watermark          jsonb,
    totals             jsonb NOT NULL,
    drift_credits      bigint NOT NULL,
    drift_tokens       numeric(30, 0) NOT NULL,
    zero_drift         boolean NOT NULL,
    chain_checked      boolean NOT NULL,
    open_findings      integer NOT NULL CHECK (open_findings >= 0),
    blocking_findings  integer NOT NULL CHECK (blocking_findings BETWEEN 0 AND open_findings),
    new_findings       integer NOT NULL CHECK (new_findings >= 0),
    resolved_findings  integer NOT NULL CHECK (resolved_findings >= 0),
    actor              text NOT NULL,
    source             text NOT NULL,
    CHECK (finished_at >= started_at),
    CHECK (full_run = (mode = 'full')),
    CHECK ((mode = 'window') = (window_start IS NOT NULL)),
    CHECK ((mode = 'window') = (watermark IS NULL)),
    CHECK (window_start IS NULL OR window_start < window_end),
    -- zero drift is provable from the row itself
    CHECK (NOT zero_drift OR (drift_credits = 0 AND drift_tokens = 0 AND blocking_findings = 0))
);
CREATE INDEX recon_runs_watermarked ON recon_runs (id) WHERE watermark IS NOT NULL;
CREATE INDEX recon_runs_full ON recon_runs (started_at) WHERE full_run;

CREATE TRIGGER recon_runs_append_only BEFORE UPDATE OR DELETE ON recon_runs
    FOR EACH ROW EXECUTE FUNCTION payops_forbid_change();
CREATE TRIGGER recon_runs_no_truncate BEFORE TRUNCATE ON recon_runs
    FOR EACH STATEMENT EXECUTE FUNCTION payops_forbid_change();

-- Findings ------------------------------------------------------------------------------
CREATE TABLE recon_findings (
    id              bigserial PRIMARY KEY,
    fingerprint     text NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
    kind            text NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
    severity        text NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    user_ids        text[] NOT NULL DEFAULT '{}',
    signatures      text[] NOT NULL DEFAULT '{}',
    intent_ids      text[] NOT NULL DEFAULT '{}',
    ledger_tx_ids   bigint[] NOT NULL DEFAULT '{}',
    credits         bigint NOT NULL DEFAULT 0,   -- owed to users (+) or given in excess (-)
    tokens          numeric(30, 0) NOT NULL DEFAULT 0,  -- base units at the treasury, uncredited
    detail          text NOT NULL,
    first_seen_run  bigint NOT NULL REFERENCES recon_runs (id),
    run_id          bigint NOT NULL REFERENCES recon_runs (id),  -- the last run that changed it
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    resolved_run    bigint REFERENCES recon_runs (id),
    CHECK ((status = 'resolved') = (resolved_run IS NOT NULL)),
    CHECK (run_id >= first_seen_run),
    CHECK (resolved_run IS NULL OR resolved_run > run_id)
);
-- One open row per fingerprint: the same anomaly is the same finding run after run.
CREATE UNIQUE INDEX recon_findings_one_open ON recon_findings (fingerprint) WHERE status = 'open';
CREATE INDEX recon_findings_first_seen ON recon_findings (first_seen_run);
CREATE INDEX recon_findings_resolved ON recon_findings (resolved_run) WHERE resolved_run IS NOT NULL;
CREATE INDEX recon_findings_fingerprint ON recon_findings (fingerprint, id);

-- What a finding is never changes; a resolved finding is a record.
CREATE FUNCTION payops_recon_finding_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'recon_findings are kept: DELETE refused' USING ERRCODE = 'restrict_violation';
    END IF;
    IF (OLD.fingerprint, OLD.kind, OLD.first_seen_run)
       IS DISTINCT FROM (NEW.fingerprint, NEW.kind, NEW.first_seen_run) THEN
        RAISE EXCEPTION 'recon finding %: its identity cannot change', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.status = 'resolved' THEN
        RAISE EXCEPTION 'recon finding % is resolved', OLD.id USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.run_id < OLD.run_id THEN
        RAISE EXCEPTION 'recon finding %: runs only move forward', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER recon_findings_guard BEFORE UPDATE OR DELETE ON recon_findings
    FOR EACH ROW EXECUTE FUNCTION payops_recon_finding_guard();
CREATE TRIGGER recon_findings_no_truncate BEFORE TRUNCATE ON recon_findings
    FOR EACH STATEMENT EXECUTE FUNCTION payops_forbid_change();

-- Tickets -------------------------------------------------------------------------------
-- `RECON-<id>`; its adjustments are those whose `ticket` equals that text.
CREATE TABLE recon_tickets (
    id           bigserial PRIMARY KEY,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    note         text NOT NULL DEFAULT '',
    user_ids     text[] NOT NULL,
    signatures   text[] NOT NULL,
    intent_ids   text[] NOT NULL,
    opened_by    text NOT NULL,
    opened_at    timestamptz NOT NULL,
    closed_by    text,
    closed_at    timestamptz,
    closed_run   bigint REFERENCES recon_runs (id),
    CHECK ((status = 'closed')
           = (closed_by IS NOT NULL AND closed_at IS NOT NULL AND closed_run IS NOT NULL)),
    CHECK (status = 'closed' OR (closed_by IS NULL AND closed_at IS NULL AND closed_run IS NULL))
);
CREATE INDEX recon_tickets_open ON recon_tickets (id) WHERE status = 'open';

CREATE TABLE recon_ticket_findings (
    ticket_id   bigint NOT NULL REFERENCES recon_tickets (id),
    finding_id  bigint NOT NULL REFERENCES recon_findings (id),
    PRIMARY KEY (ticket_id, finding_id)
);
CREATE INDEX recon_ticket_findings_finding ON recon_ticket_findings (finding_id);

CREATE TRIGGER recon_ticket_findings_append_only BEFORE UPDATE OR DELETE ON recon_ticket_findings
    FOR EACH ROW EXECUTE FUNCTION payops_forbid_change();
CREATE TRIGGER recon_ticket_findings_no_truncate BEFORE TRUNCATE ON recon_ticket_findings
    FOR EACH STATEMENT EXECUTE FUNCTION payops_forbid_change();

-- A ticket closes once, and only when a run found every one of its findings resolved.
CREATE FUNCTION payops_recon_ticket_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'recon tickets are kept: DELETE refused' USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.status = 'closed' THEN
        RAISE EXCEPTION 'ticket RECON-% is closed', OLD.id USING ERRCODE = 'restrict_violation';
    END IF;
    IF (to_jsonb(OLD) - 'status' - 'closed_by' - 'closed_at' - 'closed_run')
       IS DISTINCT FROM (to_jsonb(NEW) - 'status' - 'closed_by' - 'closed_at' - 'closed_run') THEN
        RAISE EXCEPTION 'ticket RECON-%: only closing it may change it', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.status = 'closed' AND EXISTS (
        SELECT 1 FROM recon_ticket_findings tf JOIN recon_findings f ON f.id = tf.finding_id
         WHERE tf.ticket_id = NEW.id AND (f.status = 'open' OR f.resolved_run > NEW.closed_run)
    ) THEN
        RAISE EXCEPTION 'ticket RECON-% still has open findings', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER recon_tickets_guard BEFORE UPDATE OR DELETE ON recon_tickets
    FOR EACH ROW EXECUTE FUNCTION payops_recon_ticket_guard();
CREATE TRIGGER recon_tickets_no_truncate BEFORE TRUNCATE ON recon_tickets
    FOR EACH STATEMENT EXECUTE FUNCTION payops_forbid_change();

-- Helpers and indexes the checks use ----------------------------------------------------
-- The credits a ledger transaction moved on user accounts (0 for none).
CREATE FUNCTION payops_recon_user_amount(ltx bigint) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(sum(e.amount), 0)::bigint
      FROM ledger_entries e JOIN accounts a ON a.id = e.account_id AND a.kind = 'user'
     WHERE e.transaction_id = ltx
$$;

-- Intent ids kept as text (adjustments.intent_ids) as uuids, ignoring anything malformed.
CREATE FUNCTION payops_recon_uuids(ids text[]) RETURNS uuid[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(x::uuid), '{}')
      FROM unnest(ids) x
     WHERE x ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
$$;

-- incremental runs: what changed since the last run's horizon
CREATE INDEX purchase_intents_updated ON purchase_intents (updated_at);
CREATE INDEX ledger_transactions_created ON ledger_transactions (created_at);
-- window runs
CREATE INDEX purchase_intents_created ON purchase_intents (created_at);
-- the chain side: unsettled intents whose reference is looked up, newest first
CREATE INDEX purchase_intents_unsettled ON purchase_intents (created_at)
    WHERE status IN ('EXPIRED', 'REJECTED');
-- a signature confirmed for two intents: a streaming GROUP BY in (signature, intent) order
CREATE INDEX verification_attempts_confirmed ON verification_attempts (signature, intent_id)
    WHERE outcome = 'confirmed';
-- failed verifications and flagged (late, overpaid) confirmations
CREATE INDEX verification_attempts_recon ON verification_attempts (intent_id)
    WHERE outcome = 'rejected' OR (outcome = 'confirmed' AND code IS NOT NULL);
-- adjustments naming a payment
CREATE INDEX adjustments_tx_signatures ON adjustments USING gin (tx_signatures);
CREATE INDEX adjustments_intent_ids ON adjustments USING gin (intent_ids);
