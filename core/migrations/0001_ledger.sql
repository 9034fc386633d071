-- Purchase intents, verification attempts, the double-entry ledger, cached balances,
-- the hash-chained audit log, gate switches and idempotency keys.
-- The invariants of DESIGN.md live here as constraints and triggers, so no code path
-- (nor a person at a psql prompt) can break them.

-- Accounts -----------------------------------------------------------------------------
CREATE TABLE accounts (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('user', 'system')),
    name        text NOT NULL UNIQUE,
    user_id     text UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'user') = (user_id IS NOT NULL))
);

-- Purchase intents ---------------------------------------------------------------------
CREATE TABLE purchase_intents (
    id                      uuid PRIMARY KEY,
    user_id                 text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 200),
    credits                 bigint NOT NULL CHECK (credits > 0),
    amount                  numeric(20, 0) NOT NULL CHECK (amount > 0 AND amount <= 18446744073709551615),
    mint                    text NOT NULL,
    token_program           text NOT NULL,
    recipient               text NOT NULL,
    recipient_token_account text NOT NULL,
    reference               text NOT NULL UNIQUE,
    memo                    text NOT NULL,
    wallet                  text,
    status                  text NOT NULL DEFAULT 'PENDING'
                            CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'EXPIRED')),
    tx_signature            text UNIQUE,
    received_amount         numeric(20, 0),
    reject_code             text,
    created_at              timestamptz NOT NULL,
    expires_at              timestamptz NOT NULL,
    confirmed_at            timestamptz,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (expires_at > created_at),
    CHECK ((status = 'CONFIRMED') = (tx_signature IS NOT NULL AND confirmed_at IS NOT NULL))
);
CREATE INDEX purchase_intents_user_created ON purchase_intents (user_id, created_at DESC);
CREATE INDEX purchase_intents_pending ON purchase_intents (created_at) WHERE status = 'PENDING';
CREATE INDEX purchase_intents_wallet ON purchase_intents (wallet) WHERE wallet IS NOT NULL;

-- Verification attempts: every verify call and background re-check, with its outcome ---
CREATE TABLE verification_attempts (
    id          bigserial PRIMARY KEY,
    intent_id   uuid NOT NULL REFERENCES purchase_intents (id),
    user_id     text NOT NULL,
    signature   text NOT NULL,
    source      text NOT NULL CHECK (source IN ('api', 'recovery', 'smoke', 'cli', 'slack')),
    outcome     text NOT NULL
                CHECK (outcome IN ('confirmed', 'duplicate', 'pending', 'rejected', 'conflict', 'paused')),
    code        text,
    detail      text,
    request_id  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX verification_attempts_intent ON verification_attempts (intent_id, created_at);
CREATE INDEX verification_attempts_signature ON verification_attempts (signature);
CREATE INDEX verification_attempts_created ON verification_attempts (created_at);

-- Ledger -------------------------------------------------------------------------------
CREATE TABLE ledger_transactions (
    id                  bigserial PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('purchase', 'debit', 'adjustment', 'reversal')),
    intent_id           uuid UNIQUE REFERENCES purchase_intents (id),
    purchase_signature  text UNIQUE,
    idempotency_key     text UNIQUE,
    reverses_id         bigint UNIQUE REFERENCES ledger_transactions (id),
    description         text NOT NULL DEFAULT '',
    created_by          text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- the database transaction that wrote this row; entries may only be added by it
    created_xact        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CHECK ((kind = 'purchase') = (intent_id IS NOT NULL AND purchase_signature IS NOT NULL)),
    CHECK ((kind = 'reversal') = (reverses_id IS NOT NULL)),
    CHECK (reverses_id IS NULL OR reverses_id < id)
);

CREATE TABLE ledger_entries (
    id              bigserial PRIMARY KEY,
    transaction_id  bigint NOT NULL REFERENCES ledger_transactions (id),
    account_id      bigint NOT NULL REFERENCES accounts (id),
    amount          bigint NOT NULL CHECK (amount <> 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_transaction ON ledger_entries (transaction_id);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id DESC);

-- Cached user balances: kept by a trigger on every entry, so they always equal the sum.
CREATE TABLE user_balances (
    account_id  bigint PRIMARY KEY REFERENCES accounts (id),
    user_id     text NOT NULL UNIQUE,
    balance     bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION payops_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION payops_forbid_change();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION payops_forbid_change();
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION payops_forbid_change();
CREATE TRIGGER ledger_transactions_no_truncate BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION payops_forbid_change();

-- An entry belongs to a ledger transaction written in the same database transaction, and
-- moves a user balance (the cache) in the same statement.
CREATE FUNCTION payops_entry_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tx_xact xid8;
    acct accounts%ROWTYPE;
    new_balance bigint;
BEGIN
    SELECT created_xact INTO tx_xact FROM ledger_transactions WHERE id = NEW.transaction_id;
    IF tx_xact IS DISTINCT FROM pg_current_xact_id() THEN
        RAISE EXCEPTION 'ledger transaction % is closed: entries are only added with it',
            NEW.transaction_id USING ERRCODE = 'restrict_violation';
    END IF;
    SELECT * INTO acct FROM accounts WHERE id = NEW.account_id;
    IF acct.kind = 'user' THEN
        INSERT INTO user_balances AS b (account_id, user_id, balance)
        VALUES (acct.id, acct.user_id, NEW.amount)
        ON CONFLICT (account_id)
        DO UPDATE SET balance = b.balance + EXCLUDED.balance, updated_at = now()
        RETURNING b.balance INTO new_balance;
        -- spending can never take a balance below zero (corrections may, and are flagged)
        IF new_balance < 0 AND NEW.amount < 0 AND EXISTS (
            SELECT 1 FROM ledger_transactions WHERE id = NEW.transaction_id AND kind = 'debit'
        ) THEN
            RAISE EXCEPTION 'debit would take % below zero', acct.name
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_entries_inserted AFTER INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION payops_entry_inserted();

-- At commit, every ledger transaction written has at least two entries summing to zero.
CREATE FUNCTION payops_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    total numeric;
BEGIN
    SELECT count(*), coalesce(sum(amount), 0) INTO n, total
      FROM ledger_entries WHERE transaction_id = NEW.id;
    IF n < 2 OR total <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced: % entries summing to %', NEW.id, n, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_transactions_balanced AFTER INSERT ON ledger_transactions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION payops_check_balanced();

-- Audit log: append-only, each row hashed on insert and chained in commit order by
-- audit_seal(); a row may only go from unsealed to sealed, never change otherwise.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    source      text NOT NULL CHECK (source IN ('api', 'slack', 'cli', 'scheduler', 'system')),
    action      text NOT NULL,
    subject     text NOT NULL,
    before      jsonb,
    after       jsonb,
    request_id  text,
    row_hash    bytea NOT NULL,
    seq         bigint UNIQUE,
    chain_hash  bytea,
    CHECK ((seq IS NULL) = (chain_hash IS NULL))
);
CREATE INDEX audit_log_subject ON audit_log (subject, id);
CREATE INDEX audit_log_unsealed ON audit_log (id) WHERE seq IS NULL;

CREATE FUNCTION payops_audit_row_hash(a audit_log) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(convert_to(jsonb_build_array(
        a.id, to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), a.actor, a.source,
        a.action, a.subject, a.before, a.after, a.request_id)::text, 'UTF8'))
$$;

CREATE FUNCTION payops_audit_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.row_hash := payops_audit_row_hash(NEW);
    NEW.seq := NULL;
    NEW.chain_hash := NULL;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_log_hash BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION payops_audit_inserted();

CREATE FUNCTION payops_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq IS NOT NULL
       AND (to_jsonb(OLD) - 'seq' - 'chain_hash') = (to_jsonb(NEW) - 'seq' - 'chain_hash') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION payops_audit_guard();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION payops_forbid_change();

-- Chains every committed, unsealed row after the last sealed one. One sealer at a time.
-- Returns the number of rows sealed.
CREATE FUNCTION audit_seal() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    last_seq bigint;
    last_hash bytea;
    r record;
    n bigint := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('payops.audit_seal'));
    SELECT seq, chain_hash INTO last_seq, last_hash FROM audit_log
     WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1;
    last_seq := coalesce(last_seq, 0);
    last_hash := coalesce(last_hash, '\x'::bytea);
    FOR r IN SELECT id, row_hash FROM audit_log WHERE seq IS NULL ORDER BY id LOOP
        last_seq := last_seq + 1;
        last_hash := sha256(last_hash || r.row_hash);
        UPDATE audit_log SET seq = last_seq, chain_hash = last_hash WHERE id = r.id;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- Gate switches ------------------------------------------------------------------------
CREATE TABLE gate_switches (
    name        text PRIMARY KEY CHECK (name IN ('verify', 'client_retries')),
    is_open     boolean NOT NULL DEFAULT true,
    reason      text NOT NULL DEFAULT '',
    changed_by  text NOT NULL DEFAULT 'system',
    changed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION payops_gate_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('payops_gate', NEW.name);
    RETURN NULL;
END $$;
CREATE TRIGGER gate_switches_notify AFTER INSERT OR UPDATE ON gate_switches
    FOR EACH ROW EXECUTE FUNCTION payops_gate_notify();

-- Idempotency keys for POST requests: same key + same body -> same stored response ------
CREATE TABLE idempotency_keys (
    scope         text NOT NULL,
    principal     text NOT NULL,
    key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    request_hash  text NOT NULL,
    status        integer NOT NULL,
    response      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, principal, key)
);
