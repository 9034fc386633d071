-- Webhooks: a transactional outbox, and the events the database itself writes into it.
--
-- An event is written in the same database transaction as the change it reports, by a
-- trigger on the changed row (or, for debits, by the debit itself): no event without its
-- change, no change without its event. Each event fans out, in that same transaction, to
-- one delivery per enabled endpoint (`webhook_endpoints`, kept in step with
-- PAYOPS_WEBHOOK_URL by the service), so an event committed late is never passed by.

CREATE TABLE webhook_endpoints (
    url        text PRIMARY KEY,
    enabled    boolean NOT NULL DEFAULT true,
    added_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_events (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq         bigserial UNIQUE,
    type        text NOT NULL CHECK (type IN ('intent.confirmed', 'intent.expired',
                    'intent.rejected', 'credits.debited', 'adjustment.applied', 'recon.drift')),
    subject     text NOT NULL,  -- events of one subject are delivered in order
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_subject ON webhook_events (subject, seq);
CREATE INDEX webhook_events_created ON webhook_events (created_at);

CREATE TABLE webhook_deliveries (
    event_id         uuid NOT NULL REFERENCES webhook_events (id),
    endpoint         text NOT NULL REFERENCES webhook_endpoints (url),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    delivered_at     timestamptz,
    PRIMARY KEY (event_id, endpoint),
    CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint, next_attempt_at)
    WHERE status = 'pending';

CREATE FUNCTION webhook_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (event_id, endpoint)
    SELECT NEW.id, url FROM webhook_endpoints WHERE enabled;
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_events_fan_out AFTER INSERT ON webhook_events
    FOR EACH ROW EXECUTE FUNCTION webhook_fan_out();

-- An intent that settles: the webhook event, and a notification for the replicas' event
-- streams (`LISTEN payops_intents`; the payload is the intent id).
CREATE FUNCTION intent_settled_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (type, subject, data)
    VALUES ('intent.' || lower(NEW.status), 'intent:' || NEW.id,
            jsonb_build_object(
                'intent_id', NEW.id, 'user_id', NEW.user_id, 'status', NEW.status,
                'credits', NEW.credits, 'amount', NEW.amount::text, 'mint', NEW.mint,
                'tx_signature', NEW.tx_signature, 'reject_code', NEW.reject_code,
                'received_amount', NEW.received_amount::text));
    PERFORM pg_notify('payops_intents', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER purchase_intents_settled AFTER UPDATE OF status ON purchase_intents
    FOR EACH ROW WHEN (OLD.status = 'PENDING' AND NEW.status <> 'PENDING')
    EXECUTE FUNCTION intent_settled_event();

CREATE FUNCTION adjustment_applied_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (type, subject, data)
    VALUES ('adjustment.applied', 'user:' || NEW.user_id,
            jsonb_build_object(
                'adjustment_id', NEW.id, 'user_id', NEW.user_id, 'credits', NEW.credits,
                'kind', NEW.kind, 'ledger_transaction_id', NEW.applied_ledger_tx));
    RETURN NULL;
END $$;
CREATE TRIGGER adjustments_applied AFTER UPDATE OF status ON adjustments
    FOR EACH ROW WHEN (OLD.status <> 'APPLIED' AND NEW.status = 'APPLIED')
    EXECUTE FUNCTION adjustment_applied_event();

CREATE FUNCTION recon_drift_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (type, subject, data)
    VALUES ('recon.drift', 'recon',
            jsonb_build_object(
                'run_id', NEW.id, 'mode', NEW.mode, 'drift_credits', NEW.drift_credits,
                'drift_tokens', NEW.drift_tokens::text,
                'blocking_findings', NEW.blocking_findings,
                'open_findings', NEW.open_findings));
    RETURN NULL;
END $$;
CREATE TRIGGER recon_runs_drift AFTER INSERT ON recon_runs
    FOR EACH ROW WHEN (NOT NEW.zero_drift) EXECUTE FUNCTION recon_drift_event();
