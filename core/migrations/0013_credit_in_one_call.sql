-- A ledger transaction with its entries, in one call: the transaction row, then one entry per
-- posting in order, creating a user's account on its first posting. System accounts are
-- never created here (the seed creates them). Unique violations (one purchase per
-- signature and per intent, one reversal per transaction, one per idempotency key) raise
-- as they would from the INSERT itself, with their constraint's name; the zero-sum check
-- stays at commit.
CREATE FUNCTION payops_ledger_post(
    p_kind text, p_intent_id uuid, p_purchase_signature text,
    p_scope text, p_principal text, p_key text, p_reverses_id bigint,
    p_description text, p_created_by text, p_accounts text[], p_amounts bigint[]
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    tx_id bigint;
    acct_id bigint;
BEGIN
    IF cardinality(p_accounts) IS DISTINCT FROM cardinality(p_amounts) THEN
        RAISE EXCEPTION 'postings: % accounts and % amounts',
            cardinality(p_accounts), cardinality(p_amounts) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO ledger_transactions (kind, intent_id, purchase_signature, idempotency_scope,
        idempotency_principal, idempotency_value, reverses_id, description, created_by)
    VALUES (p_kind, p_intent_id, p_purchase_signature, p_scope, p_principal, p_key,
        p_reverses_id, p_description, p_created_by)
    RETURNING id INTO tx_id;
    FOR i IN 1 .. coalesce(cardinality(p_accounts), 0) LOOP
        SELECT id INTO acct_id FROM accounts WHERE name = p_accounts[i];
        IF acct_id IS NULL THEN
            IF left(p_accounts[i], 5) <> 'user:' THEN
                RAISE EXCEPTION 'system account % is missing: run `payops migrate`', p_accounts[i]
                    USING ERRCODE = 'no_data_found';
            END IF;
            -- no conflict target: a concurrent first posting's row may collide on name or
            -- on user_id, and either means the account now exists
            INSERT INTO accounts (kind, name, user_id)
            VALUES ('user', p_accounts[i], substr(p_accounts[i], 6))
            ON CONFLICT DO NOTHING;
            SELECT id INTO STRICT acct_id FROM accounts WHERE name = p_accounts[i];
        END IF;
        INSERT INTO ledger_entries (transaction_id, account_id, amount)
        VALUES (tx_id, acct_id, p_amounts[i]);
    END LOOP;
    RETURN tx_id;
END $$;

-- A purchase's credit in one call (one round trip; the service sends it between BEGIN and
-- COMMIT, so that a client that dies while it waits for a lock leaves nothing: the server
-- rolls back a transaction whose client is gone, where a lone statement would commit):
-- lock the intent row and re-check it; when
-- it is PENDING or EXPIRED, post the purchase (`p_accounts`/`p_amounts`, decided by the
-- caller from the intent's user and credits, which never change), mark it CONFIRMED by
-- `p_signature`, record the attempt and the `intent.confirm` audit record; when it is
-- already CONFIRMED by `p_signature`, record the attempt as a duplicate and change nothing
-- else; otherwise write nothing. The outcome says which: 'credited', 'duplicate',
-- 'refused' (the intent's status, signature and reject code are returned for the caller's
-- answer) or 'missing'. `balance` is the user's balance after.
CREATE FUNCTION payops_credit_purchase(
    p_intent_id uuid, p_signature text, p_received numeric,
    p_accounts text[], p_amounts bigint[], p_description text,
    p_actor text, p_actor_source text, p_facts jsonb,
    p_attempt_source text, p_attempt_code text, p_attempt_detail text, p_request_id text
) RETURNS TABLE (outcome text, status text, tx_signature text, reject_code text,
                 received_amount numeric, confirmed_at timestamptz, balance bigint)
LANGUAGE plpgsql AS $$
DECLARE
    locked purchase_intents%ROWTYPE;
    before_status text;
BEGIN
    SELECT * INTO locked FROM purchase_intents i WHERE i.id = p_intent_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, NULL::text, NULL::text, NULL::text, NULL::numeric,
            NULL::timestamptz, NULL::bigint;
        RETURN;
    END IF;
    IF locked.status = 'CONFIRMED' AND locked.tx_signature = p_signature THEN
        INSERT INTO verification_attempts
            (intent_id, user_id, signature, source, outcome, code, detail, request_id)
        VALUES (locked.id, locked.user_id, p_signature, p_attempt_source, 'duplicate',
            p_attempt_code, p_attempt_detail, p_request_id);
        outcome := 'duplicate';
    ELSIF locked.status IN ('PENDING', 'EXPIRED') THEN
        before_status := locked.status;
        PERFORM payops_ledger_post('purchase', locked.id, p_signature, NULL, NULL, NULL, NULL,
            p_description, p_actor, p_accounts, p_amounts);
        UPDATE purchase_intents i SET status = 'CONFIRMED', tx_signature = p_signature,
            received_amount = p_received, confirmed_at = now(), updated_at = now()
        WHERE i.id = locked.id
        RETURNING i.status, i.tx_signature, i.received_amount, i.confirmed_at
        INTO locked.status, locked.tx_signature, locked.received_amount, locked.confirmed_at;
        INSERT INTO verification_attempts
            (intent_id, user_id, signature, source, outcome, code, detail, request_id)
        VALUES (locked.id, locked.user_id, p_signature, p_attempt_source, 'confirmed',
            p_attempt_code, p_attempt_detail, p_request_id);
        INSERT INTO audit_log (actor, source, action, subject, before, after, request_id)
        VALUES (p_actor, p_actor_source, 'intent.confirm', 'intent:' || locked.id::text,
            jsonb_build_object('status', before_status), p_facts, p_request_id);
        outcome := 'credited';
    ELSE
        RETURN QUERY SELECT 'refused'::text, locked.status, locked.tx_signature,
            locked.reject_code, locked.received_amount, locked.confirmed_at, NULL::bigint;
        RETURN;
    END IF;
    RETURN QUERY SELECT outcome, locked.status, locked.tx_signature, locked.reject_code,
        locked.received_amount, locked.confirmed_at,
        coalesce((SELECT b.balance FROM user_balances b WHERE b.user_id = locked.user_id), 0);
END $$;
