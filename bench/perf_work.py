"""What the perf run's slices are prepared with and measured under: synthetic intent numbers
handed out once each, intents created through the service's API and paid on the local chain,
their verify requests, the quiescing before every slice, the count of credited intents, the
py-spy profile of the service (`--profile`) and the sampler of its RSS under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from solders.pubkey import Pubkey

from bench import perf_cpu, perf_runs, perf_sql, perf_stack
from bench.perf_config import Config
from bench.perf_stats import RunStats, summarise
from core import audit
from localnet.records import TxRecord
from localnet.tokens import build_payment


class Numbers:
    """Hands out ranges of synthetic intent numbers, never twice."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, count: int) -> int:
        first = self.next
        self.next += count
        return first


@dataclass(frozen=True, slots=True)
class PaidIntent:
    id: str
    user: int
    signature: str


async def paid_intents(
    cfg: Config, chain: perf_stack.Chain, port: int, tokens: list[str], count: int, work: Path
) -> tuple[list[PaidIntent], RunStats]:
    """`count` intents created through the service's API, each paid on the local chain by a
    real SPL transfer carrying its reference (built and landed in-process, in one batch)."""
    intents, stats = await created_intents(cfg, port, tokens, count, work)
    return pay(cfg, chain, intents), stats


async def created_intents(
    cfg: Config, port: int, tokens: list[str], count: int, work: Path
) -> tuple[list[dict[str, Any]], RunStats]:
    """`count` intents created through the service's API (their JSON), users in turn."""
    create = [
        perf_runs.http_request(
            "POST", "/v1/purchase-intents", port, token=tokens[i % cfg.users], body=b'{"credits":1}'
        )
        for i in range(count)
    ]
    run = await perf_runs.load(
        work,
        port,
        create,
        concurrency=32,
        warmup=0,
        duration=3600,
        cpu=cfg.client_cpu,
        keep_bodies=True,
        ok_statuses=frozenset({201}),
    )
    if run.statuses != {201: count}:
        raise RuntimeError(f"creating intents answered {run.statuses}")
    intents = []
    for body in run.bodies:
        assert body is not None
        intents.append(json.loads(body))
    return intents, summarise(run.records, warmup=0, duration=3600)


def pay(cfg: Config, chain: perf_stack.Chain, intents: list[dict[str, Any]]) -> list[PaidIntent]:
    """Pay each intent (created by `created_intents`, user i % users) on the local chain with
    a real SPL transfer carrying its reference, landed in-process one after the other."""
    info = chain.info
    payer = info.payer_keypair()
    mint = Pubkey.from_string(info.mint)
    treasury = Pubkey.from_string(info.treasury_owner)
    program = Pubkey.from_string(info.token_program)
    paid = []
    blockhash = chain.chain.latest_blockhash()[0]
    for i, intent in enumerate(intents):
        if i % 200 == 0:
            blockhash = chain.chain.latest_blockhash()[0]
        tx = build_payment(
            payer,
            blockhash,
            mint=mint,
            recipient_owner=treasury,
            amount=int(intent["amount"]),
            decimals=info.decimals,
            token_program=program,
            references=[Pubkey.from_string(intent["reference"])],
        )
        landed = chain.chain.process(tx)
        if not isinstance(landed, TxRecord) or landed.execution.err is not None:
            raise RuntimeError(f"payment of intent {intent['id']} did not land: {landed}")
        paid.append(PaidIntent(intent["id"], i % cfg.users, str(tx.signatures[0])))
    return paid


def verify_requests(port: int, tokens: list[str], intents: list[PaidIntent]) -> list[str]:
    return [
        perf_runs.http_request(
            "POST",
            f"/v1/purchase-intents/{p.id}/verify",
            port,
            token=tokens[p.user],
            body=perf_sql.json_body({"signature": p.signature}),
        )
        for p in intents
    ]


async def create_intents(dsn: str, first: int, count: int, users: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await perf_sql.create_intents(conn, first, count, users)
    finally:
        await conn.close()


async def quiesce(dsn: str) -> None:
    """Before every slice: seal the audit rows earlier work left (the service seals every
    second, and no slice should pay for sealing another's rows), then a checkpoint, so each
    slice pays the same full-page writes."""
    conn = await asyncpg.connect(dsn)
    try:
        await audit.seal(conn)
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def credited(dsn: str, intent_ids: list[str]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM ledger_transactions WHERE intent_id = ANY($1::uuid[])",
                intent_ids,
            )
        )
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def profiled(cfg: Config, pid: int, path: Path) -> AsyncIterator[None]:
    """py-spy (when --profile) sampling `pid` and its children (the workers of
    `payops serve --workers N`, which serve while their parent waits) into `path` as
    collapsed stacks."""
    if not cfg.profile:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    beside = Path(sys.executable).with_name("py-spy")  # the venv's, when not on PATH
    exe = str(beside) if beside.exists() else "py-spy"
    spy = await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--subprocesses", "--rate", "250", "--format", "raw",
        "--output", str(path), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(0.5)  # attached before the load starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        await spy.wait()


class RssSampler:
    """Samples a process's RSS every 50 ms while load runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_rss_kib = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.max_rss_kib = max(self.max_rss_kib, perf_cpu.memory_kib(self.pid)["VmRSS"])
            await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[None]:
        self._task = asyncio.create_task(self._sample())
        try:
            yield
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
