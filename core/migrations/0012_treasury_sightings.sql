-- Payments the treasury watcher saw at `confirmed`, before they were final: they let the
-- intent's event stream say "paid, waiting for finality". Not money: the payment becomes a
-- flow, and is credited, once final (treasury_flows). Rows of intents long settled may be
-- deleted: nothing depends on them.
CREATE TABLE treasury_sightings (
    intent_id  uuid NOT NULL REFERENCES purchase_intents (id),
    signature  text NOT NULL,
    slot       bigint NOT NULL,
    amount     numeric(21, 0) NOT NULL CHECK (amount > 0),
    seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (intent_id, signature)
);
