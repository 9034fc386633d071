"""Triage: classify the subject, gather its evidence (`store.py`, one snapshot), ask the
chain about its signatures, diagnose (`rules.py`); and a window's verification picture."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg

from core.triage.chain import SignatureStatusReader, chain_facts
from core.triage.diagnosis import TriageReport
from core.triage.evidence import Subject, SubjectKind, classify_subject
from core.triage.rules import diagnose
from core.triage.store import gather, window_summary
from core.triage.window import WindowSummary, parse_window

_ALSO_A_USER_ID = frozenset({SubjectKind.INTENT, SubjectKind.WALLET})


async def triage(
    pool: asyncpg.Pool,
    rpc: SignatureStatusReader | None,
    text: str,
    now: datetime,
    pending_sla: timedelta,
) -> TriageReport:
    """`/pay-triage <text>`: classify, gather, ask the chain (unless `rpc` is None), diagnose.

    An unprefixed intent id or wallet that matches nothing is read again as a user id, since
    a JWT `sub` may look like either. Raises `InvalidInput` for an unreadable subject.
    """
    subject = classify_subject(text)
    evidence = await gather(pool, subject)
    if not evidence.found and not subject.explicit and subject.kind in _ALSO_A_USER_ID:
        as_user = await gather(pool, Subject(SubjectKind.USER, text.strip()))
        if as_user.found:
            evidence = as_user
    if rpc is not None:
        evidence = replace(evidence, chain=tuple(await chain_facts(rpc, evidence.signatures)))
    return TriageReport(evidence.subject, evidence, diagnose(evidence, now, pending_sla))


async def triage_window(pool: asyncpg.Pool, text: str, now: datetime) -> WindowSummary:
    """The window summary for `text` ("" = the last hour; see `parse_window`)."""
    return await window_summary(pool, parse_window(text, now))
