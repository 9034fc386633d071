-- Scheduled jobs: one row per run, the recovery sweep's bookkeeping, and alert dedupe.

-- Job runs -------------------------------------------------------------------------------
-- Every replica fires each job at the same interval-aligned ticks; the one that takes the
-- job's advisory lock and then claims (job, tick) here runs it, the others skip (skips are
-- not recorded: see core/jobs.py). A run whose process died stays 'running' until the next
-- holder of the lock marks it 'failed' (abandoned).
CREATE TABLE job_runs (
    id           bigserial PRIMARY KEY,
    job          text NOT NULL CHECK (length(job) BETWEEN 1 AND 64),
    tick         timestamptz NOT NULL,
    replica      text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,
    outcome      text NOT NULL DEFAULT 'running'
                 CHECK (outcome IN ('running', 'ok', 'failed', 'skipped')),
    detail       text NOT NULL DEFAULT '',
    facts        jsonb NOT NULL DEFAULT '{}'::jsonb,
    CHECK ((outcome = 'running') = (finished_at IS NULL)),
    CHECK (finished_at IS NULL OR finished_at >= started_at)
);
-- Once per tick, whoever runs it.
CREATE UNIQUE INDEX job_runs_once_per_tick ON job_runs (job, tick) WHERE outcome <> 'skipped';
CREATE INDEX job_runs_job_started ON job_runs (job, started_at DESC);
CREATE INDEX job_runs_running ON job_runs (job) WHERE outcome = 'running';

-- Recovery sweep -------------------------------------------------------------------------
-- When each PENDING intent was last looked up on chain by its reference, so a bounded batch
-- visits the least recently checked first and every pending intent gets its turn.
CREATE TABLE intent_recovery (
    intent_id        uuid PRIMARY KEY REFERENCES purchase_intents (id),
    checks           integer NOT NULL DEFAULT 0 CHECK (checks >= 0),
    last_checked_at  timestamptz NOT NULL,
    last_outcome     text NOT NULL
);

-- Alert posts ----------------------------------------------------------------------------
-- One row per reconciliation finding (or the pseudo-finding 'drift') announced in Slack:
-- where, when, whether it was escalated and whether its resolution was posted. A finding is
-- announced once while it stays open; one that reappears after its resolution was posted
-- is announced again.
CREATE TABLE alert_posts (
    fingerprint         text PRIMARY KEY,
    kind                text NOT NULL,
    severity            text NOT NULL,
    summary             text NOT NULL DEFAULT '',
    triage              text,  -- what its "Run triage" button looks up (user id, signature)
    posted_at           timestamptz NOT NULL DEFAULT now(),
    channel             text NOT NULL,
    ts                  text,  -- NULL while claimed and not yet posted
    escalated_at        timestamptz,
    escalated_ts        text,
    resolved_at         timestamptz,  -- a run reported it resolved
    resolved_posted_at  timestamptz   -- ... and that was posted in the thread
);
CREATE INDEX alert_posts_open ON alert_posts (posted_at) WHERE resolved_at IS NULL;
CREATE INDEX alert_posts_unposted_resolution ON alert_posts (resolved_at)
    WHERE resolved_at IS NOT NULL AND resolved_posted_at IS NULL;
