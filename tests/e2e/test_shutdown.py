"""Graceful shutdown: SIGTERM stops new connections, lets a verify in flight finish (and
credit), then the process exits 0."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from core import audit
from tests.e2e.facts import assert_credited_once, new_user
from tests.e2e.harness import Chain, Service, running_service
from tests.e2e.procs import wait_until


@pytest.fixture
async def doomed_service(
    chain: Chain, http: aiohttp.ClientSession, database_url: str, tmp_path: Path
) -> AsyncIterator[Service]:
    """A service of its own (this test stops it) on the shared chain."""
    async with running_service(chain, database_url, tmp_path / "service", http) as started:
        yield started


def unread_bytes_at(port: int) -> int:
    """Bytes sent to local TCP `port` that its process has not read yet (Linux /proc)."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            _, rx_queue = fields[4].split(":")
            if local_port == port:
                total += int(rx_queue, 16)
    return total


async def refuses_connections(url: str) -> bool:
    parts = urlsplit(url)
    try:
        _, writer = await asyncio.open_connection(parts.hostname, parts.port)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        # caught in the backlog as the listener closed: not conclusive yet, ask again
        return False
    writer.close()
    await writer.wait_closed()
    return False


async def test_a_verify_in_flight_at_sigterm_completes_and_the_service_exits_cleanly(
    chain: Chain, doomed_service: Service
) -> None:
    service = doomed_service
    user = new_user("shutdown")
    intent = await service.create_intent(user)
    signature = await chain.wallet.pay(intent, decimals=chain.info.decimals)
    await chain.finalized(signature)

    # Freeze the chain so the verify is provably in flight: its getTransaction sits unread
    # in the chain's socket while SIGTERM arrives and the listener closes.
    chain.proc.send(signal.SIGSTOP)
    try:
        verify = asyncio.create_task(service.verify(user, intent, signature))

        async def waits_at_chain() -> bool:
            return unread_bytes_at(chain.port) > 0

        await wait_until(waits_at_chain, "the verify's RPC request waiting at the chain")
        service.proc.send(signal.SIGTERM)
        await wait_until(lambda: refuses_connections(service.url), "the listener closed")
        assert not verify.done()
    finally:
        chain.proc.send(signal.SIGCONT)

    answer = await verify
    code = await service.proc.wait_exit()

    assert answer.status == 200, answer
    assert answer.body["already_credited"] is False
    assert answer.body["balance"] == intent["credits"]
    assert code == 0, service.proc.tail()
    await assert_credited_once(service, intent, signature)
    # the last thing the service did was seal the audit log, the credit's record included
    async with service.pool.acquire() as conn:
        unsealed = await conn.fetchval("SELECT count(*) FROM audit_log WHERE seq IS NULL")
        report = await audit.verify_chain(conn)
    assert unsealed == 0
    assert report.ok, report
