-- Smoke test runs (/pay-smoke, payops ops smoke): reopening the verify gate after a close
-- requires a passing run recorded after the close.
CREATE TABLE smoke_runs (
    id           bigserial PRIMARY KEY,
    actor        text NOT NULL,
    source       text NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    passed       boolean NOT NULL,
    checks       jsonb NOT NULL,
    CHECK (finished_at >= started_at)
);
CREATE INDEX smoke_runs_passed ON smoke_runs (finished_at DESC) WHERE passed;
