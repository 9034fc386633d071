-- Seed applied by every `payops migrate` run; idempotent.
INSERT INTO accounts (kind, name) VALUES
    ('system', 'system:token_sales'),   -- the other side of every purchase credit
    ('system', 'system:spend'),         -- credits spent by other services (debits)
    ('system', 'system:adjustments')    -- approved manual adjustments and reversals
ON CONFLICT (name) DO NOTHING;

INSERT INTO gate_switches (name, is_open, reason, changed_by) VALUES
    ('verify', true, 'initial', 'system'),
    ('client_retries', true, 'initial', 'system')
ON CONFLICT (name) DO NOTHING;
