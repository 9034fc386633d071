"""Reconciliation tickets and `/pay-recon`: the runbook's Resolve step, end to end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from bot import ops
from bot.authz import Roles
from bot.context import OpsContext
from core import recon as recon_tickets
from core.errors import Conflict, InvalidInput, NotFound
from core.services import Services
from tests.integration.test_recon import (
    MANAGER,
    ONCALL,
    adjust,
    buy,
    create_intent,
    kinds,
    recon,
    superuser,
)
from tests.support import ScriptedVerifier, build_services

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def svc(pool: asyncpg.Pool) -> Services:
    return build_services(pool, ScriptedVerifier())


def ctx(svc: Services) -> OpsContext:
    return OpsContext(svc, None, ONCALL, Roles([ONCALL.id], [MANAGER.id]))


async def corrupt_balance(svc: Services, user: str, by: int) -> None:
    async with superuser(svc.pool) as conn:
        await conn.execute(
            "UPDATE user_balances SET balance = balance + $2 WHERE user_id = $1", user, by
        )


async def test_ticket_lifecycle(svc: Services) -> None:
    await buy(svc, "alice", 3)
    await corrupt_balance(svc, "alice", 5)
    run = await recon(svc)
    [finding] = run.findings
    async with svc.pool.acquire() as conn:
        ticket = await recon_tickets.open_ticket(
            conn, ONCALL, [finding.fingerprint[:10]], now=datetime.now(UTC), note="cache bug"
        )
    assert ticket.ref == f"RECON-{ticket.id}"
    assert (ticket.status, ticket.user_ids, ticket.note) == ("open", ("alice",), "cache bug")
    assert [f.fingerprint for f in ticket.open_findings] == [finding.fingerprint]

    # a finding is on one open ticket at a time
    async with svc.pool.acquire() as conn:
        with pytest.raises(Conflict) as taken:
            await recon_tickets.open_ticket(
                conn, ONCALL, [finding.fingerprint], now=datetime.now(UTC)
            )
    assert taken.value.code == "finding_already_ticketed"

    # the correction names the ticket; closing waits for a run that shows it resolved
    await adjust(svc.pool, "alice", 1, ["ticket:" + ticket.ref], kind=None)
    async with svc.pool.acquire() as conn:
        with pytest.raises(Conflict) as still_open:
            await recon_tickets.close_ticket(conn, ONCALL, ticket.ref, now=datetime.now(UTC))
    assert still_open.value.code == "ticket_findings_open"
    assert finding.fingerprint[:12] in still_open.value.message

    await corrupt_balance(svc, "alice", -5)
    after = await recon(svc)
    assert after.zero_drift
    async with svc.pool.acquire() as conn:
        closed = await recon_tickets.close_ticket(conn, ONCALL, ticket.ref, now=datetime.now(UTC))
        with pytest.raises(Conflict) as again:
            await recon_tickets.close_ticket(conn, ONCALL, ticket.ref, now=datetime.now(UTC))
    assert again.value.code == "ticket_closed"
    assert (closed.status, closed.closed_run, closed.closed_by) == ("closed", after.id, ONCALL.id)
    assert [(a.credits, a.status) for a in closed.adjustments] == [(1, "APPLIED")]
    actions = [
        r["action"]
        for r in await svc.pool.fetch(
            "SELECT action FROM audit_log WHERE subject = $1 ORDER BY id",
            f"recon_ticket:{ticket.ref}",
        )
    ]
    assert actions == ["recon.ticket.open", "recon.ticket.close"]


async def test_the_database_refuses_to_close_a_ticket_with_open_findings(svc: Services) -> None:
    await create_intent(svc, "bob", 2)
    run = await recon(svc, now=datetime.now(UTC) + timedelta(hours=2))
    async with svc.pool.acquire() as conn:
        ticket = await recon_tickets.open_ticket(
            conn, ONCALL, [run.findings[0].fingerprint], now=datetime.now(UTC)
        )
    with pytest.raises(asyncpg.CheckViolationError, match="still has open findings"):
        await svc.pool.execute(
            """UPDATE recon_tickets SET status = 'closed', closed_by = 'x', closed_at = now(),
                   closed_run = $2 WHERE id = $1""",
            ticket.id,
            run.id,
        )


@pytest.mark.parametrize(
    ("fingerprints", "error"),
    [
        ([], InvalidInput),
        (["abc"], InvalidInput),
        (["zz" * 6], InvalidInput),
        (["0" * 64], NotFound),
    ],
)
async def test_open_refuses_what_is_not_an_open_finding(
    svc: Services, fingerprints: list[str], error: type[Exception]
) -> None:
    async with svc.pool.acquire() as conn:
        with pytest.raises(error):
            await recon_tickets.open_ticket(conn, ONCALL, fingerprints, now=datetime.now(UTC))


async def test_unknown_ticket(svc: Services) -> None:
    with pytest.raises(NotFound):
        await recon_tickets.get_ticket(svc.pool, "RECON-999")
    with pytest.raises(InvalidInput):
        await recon_tickets.get_ticket(svc.pool, "TICKET-1")


# --- /pay-recon ------------------------------------------------------------------------------


async def test_pay_recon_runs_shows_and_lists(svc: Services) -> None:
    latest = await ops.run(ctx(svc), "recon", "latest")
    assert "No reconciliation has run yet" in latest.text
    await buy(svc, "alice", 3)
    full = await ops.run(ctx(svc), "recon", "")
    assert "ZERO DRIFT" in full.text
    assert not full.alert
    quick = await ops.run(ctx(svc), "recon", "quick")
    assert "incremental" in quick.text
    window = await ops.run(ctx(svc), "recon", "last 24h")
    assert "intents created" in window.text
    stored = await ops.run(ctx(svc), "recon", "latest")
    assert "(stored)" in stored.text
    assert "window" in stored.text
    assert (await ops.run(ctx(svc), "recon", "findings")).text.startswith("No open")
    usage = await ops.run(ctx(svc), "recon", "help")
    assert "ticket open" in usage.text


async def test_pay_recon_reports_drift_and_tickets_it(svc: Services) -> None:
    await buy(svc, "alice", 3)
    await corrupt_balance(svc, "alice", 4)
    reply = await ops.run(ctx(svc), "recon", "")
    assert "DRIFT: 1 finding(s)" in reply.text
    assert "balance_mismatch" in reply.text
    assert reply.alert  # a fresh run with drift is posted to the alerts channel too
    fingerprint = (await svc.pool.fetchval("SELECT fingerprint FROM recon_findings"))[:12]
    listed = await ops.run(ctx(svc), "recon", "findings")
    assert fingerprint in listed.text
    opened = await ops.run(ctx(svc), "recon", f'ticket open {fingerprint} "cache drift"')
    ref = opened.text.split()[0]
    assert ref.startswith("RECON-")
    assert "users: alice" in opened.text
    assert "cache drift" in opened.text
    assert ref in (await ops.run(ctx(svc), "recon", "ticket list")).text
    with pytest.raises(Conflict):
        await ops.run(ctx(svc), "recon", f"ticket close {ref}")
    await corrupt_balance(svc, "alice", -4)
    assert "ZERO DRIFT" in (await ops.run(ctx(svc), "recon", "")).text
    closed = await ops.run(ctx(svc), "recon", f"ticket close {ref}")
    assert "(closed)" in closed.text
    shown = await ops.run(ctx(svc), "recon", f"ticket show {ref}")
    assert "resolved" in shown.text
    with pytest.raises(InvalidInput):
        await ops.run(ctx(svc), "recon", "ticket frobnicate")


async def test_pay_recon_rejects_a_bad_window(svc: Services) -> None:
    with pytest.raises(InvalidInput):
        await ops.run(ctx(svc), "recon", "last 99 fortnights")
    assert kinds(await recon(svc)) == []
