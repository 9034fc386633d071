-- The treasury watcher: the chain side of the books.
--
-- `treasury_cursor` is how far the watcher has read the treasury token account's history: the
-- newest signature whose transaction is recorded (every older one is too). It moves only in
-- the transaction that records the flows up to it, so a crash, a restart or a change of
-- leader re-reads at most what was not recorded, and the primary key of `treasury_flows`
-- keeps a re-read from recording anything twice. `start_balance` is the account's balance
-- when watching began: balance on chain = start_balance + the sum of the flows since.
CREATE TABLE treasury_cursor (
    account        text PRIMARY KEY,
    signature      text,
    slot           bigint,
    start_balance  numeric(20, 0) NOT NULL CHECK (start_balance >= 0),
    start_slot     bigint NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Every transaction that changed the treasury token account: an inflow (amount > 0) or an
-- outflow (amount < 0), in base units of the configured mint. `intent_id` is the intent the
-- transaction is bound to (its reference among the account keys, or its id in a memo);
-- `settled_at` and `outcome` are set once the watcher has put an inflow bound to an intent
-- through the verify rules to a final outcome: 'credited', 'duplicate', 'partial' (valid
-- but short of the price: it counts towards a top-up) or 'refused:<code>'.
CREATE TABLE treasury_flows (
    signature    text PRIMARY KEY,
    account      text NOT NULL,
    slot         bigint NOT NULL,
    block_time   timestamptz,
    amount       numeric(21, 0) NOT NULL CHECK (amount <> 0),
    payer        text NOT NULL,
    refs         text[] NOT NULL DEFAULT '{}',
    memos        text[] NOT NULL DEFAULT '{}',
    intent_id    uuid REFERENCES purchase_intents (id),
    detected_at  timestamptz NOT NULL DEFAULT now(),
    settled_at   timestamptz,
    outcome      text CHECK (outcome IN ('credited', 'duplicate', 'partial')
                             OR outcome LIKE 'refused:%'),
    CHECK ((settled_at IS NULL) = (outcome IS NULL))
);
CREATE INDEX treasury_flows_intent ON treasury_flows (intent_id) WHERE intent_id IS NOT NULL;
CREATE INDEX treasury_flows_partial ON treasury_flows (intent_id) WHERE outcome = 'partial';
CREATE INDEX treasury_flows_unsettled ON treasury_flows (slot)
    WHERE intent_id IS NOT NULL AND settled_at IS NULL;

-- A recorded flow is a fact of the chain: only its settlement may be written afterwards.
CREATE FUNCTION treasury_flows_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'treasury_flows is append-only';
    END IF;
    IF (NEW.signature, NEW.account, NEW.slot, NEW.block_time, NEW.amount, NEW.payer, NEW.refs,
        NEW.memos, NEW.intent_id, NEW.detected_at)
       IS DISTINCT FROM
       (OLD.signature, OLD.account, OLD.slot, OLD.block_time, OLD.amount, OLD.payer, OLD.refs,
        OLD.memos, OLD.intent_id, OLD.detected_at)
       OR OLD.settled_at IS NOT NULL THEN
        RAISE EXCEPTION 'a recorded treasury flow cannot change (only its settlement, once)';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER treasury_flows_append_only BEFORE UPDATE OR DELETE ON treasury_flows
    FOR EACH ROW EXECUTE FUNCTION treasury_flows_guard();

-- The watcher's verifies are recorded as attempts of their own source.
ALTER TABLE verification_attempts DROP CONSTRAINT verification_attempts_source_check;
ALTER TABLE verification_attempts ADD CONSTRAINT verification_attempts_source_check
    CHECK (source IN ('api', 'recovery', 'smoke', 'cli', 'slack', 'watcher'));
