"""`/pay-gate rollback-check` (`payops ops rollback-check`): the runbook's Rollback Safety.

    1. Pause verification path.
    2. Roll application back to known-good image.
    3. Restore DB snapshot if mismatch cannot be safely repaired forward.
    4. Reconcile and verify before re-opening payment flow.

It checks what can be checked (the gate, a full reconciliation now, a smoke test since the
close) and says what is left to do; `/pay-gate open` itself refuses while drift is non-zero.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version

from bot import blocks as b
from bot.context import OpsContext
from bot.replies import Reply
from core import db, gate, smoke
from core.errors import InvalidInput
from core.gate import GateState
from core.recon import ReconRun, RpcChainLookup, latest_run, run_reconciliation

HELP = """*payops ops rollback-check [--json] [--fresh]* (in Slack `/pay-gate rollback-check`) —
the runbook's Rollback Safety, step by step: gate paused, version and schema,
snapshot/restore, a full reconciliation since the close (a full run of the last 10 minutes is
reused and its age said; `--fresh` makes a new one), a smoke test since the close. On the CLI
it exits 1 while NOT ready; `--json` prints the steps for scripts."""


def _version() -> str:
    try:
        return version("payops")
    except PackageNotFoundError:
        return "unknown"


async def run(ctx: OpsContext, args: list[str]) -> Reply:
    unknown = [a for a in args if a not in ("--json", "--fresh")]
    if unknown:
        raise InvalidInput(
            f"unknown argument {unknown[0]!r}: rollback-check [--json] [--fresh]",
            code="invalid_arguments",
        )
    svc = ctx.services
    state = await gate.read(svc.pool)
    paused = not state.verify.is_open
    schema = await db.schema_version(svc.pool)
    restored = await svc.pool.fetchval(
        "SELECT max(at) FROM audit_log WHERE action = 'database.restored'"
    )
    run = None if "--fresh" in args else await _recent_run(ctx, state)
    reused = run is not None
    if run is None:
        run = await _full_run(ctx)
    passed = await smoke.last_passed_at(svc.pool)
    smoke_ok = passed is not None and passed > state.verify.changed_at
    steps = _steps(state, schema, restored, run, smoke_ok, svc.clock() if reused else None)
    reply = _reply(steps, paused, run.zero_drift, smoke_ok)
    if "--json" in args:
        return replace(reply, text=_json(steps, reply.ok, run, reused))
    return reply


# A full run this recent, made after the gate closed, answers step 4 without another one.
REUSE_RUN_FOR = timedelta(minutes=10)


async def _recent_run(ctx: OpsContext, state: GateState) -> ReconRun | None:
    latest = await latest_run(ctx.services.pool)
    now = ctx.services.clock()
    if (
        latest is None
        or not latest.full
        or latest.started_at < state.verify.changed_at
        or now - latest.finished_at > REUSE_RUN_FOR
    ):
        return None
    return latest


async def _full_run(ctx: OpsContext) -> ReconRun:
    svc = ctx.services
    smoke_sig = svc.settings.smoke_signature
    return await run_reconciliation(
        svc.pool,
        None if ctx.rpc is None else RpcChainLookup(ctx.rpc),
        now=svc.clock(),
        actor=ctx.actor,
        pending_sla=timedelta(seconds=svc.settings.pending_sla_seconds),
        expiry_grace=svc.expiry_grace,
        payment=svc.payment,
        full=True,
        ignore_signatures=(smoke_sig,) if smoke_sig else (),
    )


def _json(steps: list[Step], ready: bool, run: ReconRun, reused: bool) -> str:
    return json.dumps(
        {
            "ready": ready,
            "steps": [{"step": title.strip(), "done": ok, "detail": d} for ok, title, d in steps],
            "reconciliation": {"run_id": run.id, "zero_drift": run.zero_drift, "reused": reused},
        },
        indent=2,
    )


Step = tuple[bool, str, str]  # done, the runbook's step, what payops sees


def _steps(
    state: GateState,
    schema: int,
    restored: datetime | None,
    run: ReconRun,
    smoke_ok: bool,
    reused_at: datetime | None = None,
) -> list[Step]:
    """The runbook's Rollback Safety steps, each with whether it is done (pure). `reused_at`:
    now, when `run` is a recent run reused rather than one made for this check."""
    paused = not state.verify.is_open
    which = f"full run {run.id}"
    if reused_at is not None:
        age = int((reused_at - run.finished_at).total_seconds())
        which += f" (made {age // 60} min {age % 60} s ago, after the close)"
    return [
        (
            paused,
            "1. Pause verification path",
            f"verify is CLOSED since {state.verify.changed_at:%Y-%m-%d %H:%M} UTC by "
            f"{state.verify.changed_by}: {state.verify.reason}"
            if paused
            else "verify is OPEN: run `/pay-gate close <reason>` first",
        ),
        (
            True,
            "2. Roll application back to known-good image",
            f"this service runs payops {_version()} on schema version {schema}; migrations are "
            "forward-compatible for one release, so the previous image runs on this schema "
            "(docs/MIGRATIONS.md)",
        ),
        (
            True,
            "3. Restore DB snapshot if the mismatch cannot be repaired forward",
            (f"last restore: {restored:%Y-%m-%d %H:%M} UTC" if restored else "no restore recorded")
            + "; `payops snapshot` now, `payops restore <manifest>` only if adjustments "
            "cannot fix it",
        ),
        (
            run.zero_drift,
            "4. Reconcile before re-opening",
            f"{which}: ZERO DRIFT"
            if run.zero_drift
            else f"{which}: {len(run.findings)} finding(s), drift {run.drift_credits} "
            f"credits / {run.drift_tokens} token units — `/pay-recon findings`, "
            "fix with `/pay-adjust`",
        ),
        (
            smoke_ok,
            "   and verify (smoke test since the close)",
            "a smoke test passed since the close" if smoke_ok else "run `/pay-smoke`",
        ),
    ]


def _reply(steps: list[Step], paused: bool, zero_drift: bool, smoke_ok: bool) -> Reply:
    ready = paused and zero_drift and smoke_ok
    verdict = (
        "READY to reopen: `/pay-gate open`" if ready else "NOT ready to reopen the payment flow"
    )
    text = "Rollback check\n" + "\n".join(
        f"{'ok ' if ok else 'TODO'} {title}: {detail}" for ok, title, detail in steps
    )
    blocks = [
        b.header("Rollback safety check"),
        b.section("\n".join(f"{b.mark(ok)} *{title}* — {detail}" for ok, title, detail in steps)),
        b.section(f"*{verdict}*"),
    ]
    return Reply(text=f"{text}\n{verdict}", blocks=blocks, ok=ready)
