-- Several purchases' credits in one call, one transaction and one commit (group commit:
-- core/purchases/grouped.py). Item i is `payops_credit_purchase` with the i-th value of
-- each array; its postings are the next `p_counts[i]` of `p_accounts`/`p_amounts`. Each
-- item runs in a subtransaction of its own: an item that raises (a unique violation, a
-- deadlock, a lock timeout, ...) is rolled back alone, with nothing of it written, and
-- answers `outcome = 'error'` with the error's SQLSTATE, constraint and message; the
-- other items go on. The rows come back in item order, `idx` counting from 1. The service
-- sends the call between BEGIN and COMMIT, as the one-credit call; an error at COMMIT (the
-- deferred zero-sum check) fails the whole group, which the service then credits item by
-- item.
CREATE FUNCTION payops_credit_purchases(
    p_intent_ids uuid[], p_signatures text[], p_received numeric[],
    p_counts int[], p_accounts text[], p_amounts bigint[], p_descriptions text[],
    p_actors text[], p_actor_sources text[], p_facts jsonb[],
    p_attempt_sources text[], p_attempt_codes text[], p_attempt_details text[],
    p_request_ids text[]
) RETURNS TABLE (idx int, outcome text, status text, tx_signature text, reject_code text,
                 received_amount numeric, confirmed_at timestamptz, balance bigint,
                 error_state text, error_constraint text, error_message text)
LANGUAGE plpgsql AS $$
DECLARE
    n int := coalesce(cardinality(p_intent_ids), 0);
    first int := 1;
    done record;
BEGIN
    IF coalesce(cardinality(p_counts), 0) <> n
        OR (SELECT coalesce(sum(c), 0) FROM unnest(p_counts) c) <> coalesce(cardinality(p_accounts), 0)
    THEN
        RAISE EXCEPTION 'credit group: % items, % counts, % postings',
            n, cardinality(p_counts), cardinality(p_accounts) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. n LOOP
        idx := i;
        BEGIN
            SELECT * INTO STRICT done FROM payops_credit_purchase(
                p_intent_ids[i], p_signatures[i], p_received[i],
                p_accounts[first : first + p_counts[i] - 1],
                p_amounts[first : first + p_counts[i] - 1],
                p_descriptions[i], p_actors[i], p_actor_sources[i], p_facts[i],
                p_attempt_sources[i], p_attempt_codes[i], p_attempt_details[i], p_request_ids[i]);
            outcome := done.outcome;
            status := done.status;
            tx_signature := done.tx_signature;
            reject_code := done.reject_code;
            received_amount := done.received_amount;
            confirmed_at := done.confirmed_at;
            balance := done.balance;
            error_state := NULL;
            error_constraint := NULL;
            error_message := NULL;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE,
                error_constraint = CONSTRAINT_NAME, error_message = MESSAGE_TEXT;
            outcome := 'error';
            status := NULL;
            tx_signature := NULL;
            reject_code := NULL;
            received_amount := NULL;
            confirmed_at := NULL;
            balance := NULL;
        END;
        first := first + p_counts[i];
        RETURN NEXT;
    END LOOP;
END $$;
