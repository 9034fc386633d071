-- Request integrity.
--
-- 1. A ledger transaction's idempotency key in three columns: scope, principal, key.
--    Until now debits were stored as "<sub>:<key>" and adjustments as "adjustment:<id>" in
--    one unique text column, so service "svc:a" with key "b" and service "svc" with key
--    "a:b" collided, and a service whose sub is "adjustment" could take an adjustment's key.
--    New rows leave `idempotency_key` empty and fill the three columns; rows written before
--    (and by the previous release during a deploy or a rollback) keep their text key and its
--    unique constraint, untouched: the ledger is append-only. The two never collide.
ALTER TABLE ledger_transactions
    ADD COLUMN idempotency_scope     text,
    ADD COLUMN idempotency_principal text,
    ADD COLUMN idempotency_value     text;

ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_idempotency_columns CHECK (
    (idempotency_scope IS NULL) = (idempotency_principal IS NULL)
    AND (idempotency_scope IS NULL) = (idempotency_value IS NULL)
    AND (idempotency_scope IS NULL OR (idempotency_key IS NULL AND idempotency_scope <> ''))
) NOT VALID;
ALTER TABLE ledger_transactions VALIDATE CONSTRAINT ledger_transactions_idempotency_columns;

CREATE UNIQUE INDEX ledger_transactions_idempotency
    ON ledger_transactions (idempotency_scope, idempotency_principal, idempotency_value)
    WHERE idempotency_scope IS NOT NULL;

-- 2. Slack request signatures seen in the last few minutes, across replicas: a signed
--    request replayed within Slack's five-minute window is refused. Rows are pruned once
--    they expire (the signature's timestamp is too old to pass the check by then anyway).
CREATE TABLE slack_requests_seen (
    signature   text PRIMARY KEY CHECK (length(signature) BETWEEN 1 AND 200),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX slack_requests_seen_expiry ON slack_requests_seen (expires_at);
