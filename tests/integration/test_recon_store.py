"""The reconciliation store: a run reads back as the engine built it, and a finding's kind and
severity (and an alert's) come back as the enums they were written as."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from core.recon import (
    DRIFT_KIND,
    AlertItem,
    FindingKind,
    RunMode,
    Severity,
    claim_new,
    fingerprint,
    latest_run,
    of_message,
    open_findings,
    set_posted,
)
from core.services import Services
from tests.integration.test_recon import buy, create_intent, recon, superuser
from tests.support import ScriptedVerifier, build_services

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def svc(pool: asyncpg.Pool) -> Services:
    return build_services(pool, ScriptedVerifier())


async def test_a_stored_run_reads_back_equal_to_the_run(svc: Services) -> None:
    await buy(svc, "alice", 3)
    await create_intent(svc, "bob", 2)  # stale once the clock is past the SLA
    async with superuser(svc.pool) as conn:
        await conn.execute("UPDATE user_balances SET balance = balance + 7 WHERE user_id = 'alice'")
    later = datetime.now(UTC) + timedelta(hours=3)

    first = await recon(svc, now=later)
    assert sorted(f.kind for f in first.findings) == [
        FindingKind.BALANCE_MISMATCH,
        FindingKind.STALE_PENDING,
    ]
    assert first.watermark is not None
    assert await latest_run(svc.pool) == first

    async with superuser(svc.pool) as conn:
        await conn.execute("UPDATE user_balances SET balance = balance - 7 WHERE user_id = 'alice'")
    second = await recon(svc, now=later + timedelta(minutes=1))
    assert [f.kind for f in second.resolved_findings] == [FindingKind.BALANCE_MISMATCH]
    assert await latest_run(svc.pool) == second


async def test_a_window_run_reads_back_equal_to_the_run(svc: Services) -> None:
    await buy(svc, "alice", 3)
    now = datetime.now(UTC)
    run = await recon(svc, window_start=now - timedelta(hours=1), window_end=now)
    assert (run.mode, run.watermark) == (RunMode.WINDOW, None)
    assert await latest_run(svc.pool) == run


async def test_every_finding_kind_and_severity_reads_back_as_its_enum(svc: Services) -> None:
    run = await recon(svc)
    severities = list(Severity)
    written = {
        fingerprint(kind.value, [f"test:{n}"]): (kind, severities[n % len(severities)])
        for n, kind in enumerate(FindingKind)
    }
    for fp, (kind, severity) in written.items():
        await svc.pool.execute(
            """INSERT INTO recon_findings (fingerprint, kind, severity, detail, first_seen_run,
                   run_id)
               VALUES ($1, $2, $3, 'written by hand', $4, $4)""",
            fp,
            kind.value,
            severity.value,
            run.id,
        )

    found = await open_findings(svc.pool)
    assert {f.fingerprint: (f.kind, f.severity) for f in found} == written
    assert all(type(f.kind) is FindingKind and type(f.severity) is Severity for f in found)


async def test_alert_kinds_and_severities_read_back_as_enums(svc: Services) -> None:
    now = datetime.now(UTC)
    items = [
        AlertItem(f"fp-{kind.value}", kind, Severity.WARNING, "a finding") for kind in FindingKind
    ]
    items += [AlertItem(f"fp-{s.value}", FindingKind.OVERPAYMENT, s, "severity") for s in Severity]
    items.append(AlertItem("drift", DRIFT_KIND, Severity.CRITICAL, "drift"))
    assert await claim_new(svc.pool, items, "C_ALERTS", now) == items
    await set_posted(svc.pool, [i.fingerprint for i in items], "C_ALERTS", "1.000")

    posted = [p.item for p in await of_message(svc.pool, "1.000")]
    assert sorted(posted, key=lambda i: i.fingerprint) == sorted(items, key=lambda i: i.fingerprint)
    assert all(type(i.severity) is Severity for i in posted)
    assert {type(i.kind) for i in posted if i.kind != DRIFT_KIND} == {FindingKind}
