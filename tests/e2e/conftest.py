"""End-to-end fixtures: real chain processes, real `payops serve` processes, real databases.

Shared for the session (each test uses its own users and intents, so they cannot see each
other's money): a plain SPL Token chain and a Token-2022 chain with a 1% transfer fee, each
with a service, all four processes started at once. A test that pauses the shared chain
(holds finality, SIGSTOPs it) resumes it in a `finally`; one that kills or time-travels its
chain, or stops its service, gets its own (`own_chain`, `own_service`, and the fixtures of
`test_shutdown.py` and `test_time.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from tests.e2e.facts import session_database
from tests.e2e.harness import (
    TOKEN_2022_FEE_BPS,
    Chain,
    Service,
    enter_concurrently,
    running_chain,
    running_service,
    running_stack,
)

if TYPE_CHECKING:
    from tests.conftest import DatabaseFactory


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture(scope="session")
async def stacks(
    http: aiohttp.ClientSession,
    database_factory: DatabaseFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, Service]]:
    """The two shared chains, each with its service, started at the same time."""
    async with contextlib.AsyncExitStack() as stack:
        spl_db = await stack.enter_async_context(session_database(database_factory))
        fee_db = await stack.enter_async_context(session_database(database_factory))
        spl, fee = await enter_concurrently(
            stack,
            [
                running_stack(tmp_path_factory.mktemp("spl"), http, spl_db),
                running_stack(
                    tmp_path_factory.mktemp("fee"),
                    http,
                    fee_db,
                    chain_args=("--token-2022", "--transfer-fee-bps", str(TOKEN_2022_FEE_BPS)),
                ),
            ],
        )
        yield {"spl": spl, "fee": fee}


@pytest.fixture(scope="session")
def service(stacks: dict[str, Service]) -> Service:
    """`payops serve` on `chain`."""
    return stacks["spl"]


@pytest.fixture(scope="session")
def chain(service: Service) -> Chain:
    """`python -m localnet`: an SPL Token mint (6 decimals), a treasury and a funded payer."""
    return service.chain


@pytest.fixture(scope="session")
def fee_service(stacks: dict[str, Service]) -> Service:
    """`payops serve` on `fee_chain`."""
    return stacks["fee"]


@pytest.fixture(scope="session")
def fee_chain(fee_service: Service) -> Chain:
    """`python -m localnet --token-2022 --transfer-fee-bps 100`."""
    return fee_service.chain


@pytest.fixture
async def own_chain(http: aiohttp.ClientSession, tmp_path: Path) -> AsyncIterator[Chain]:
    """A chain for one test, which may kill it."""
    async with running_chain(tmp_path / "chain", http) as started:
        yield started


@pytest.fixture
async def own_service(
    own_chain: Chain, http: aiohttp.ClientSession, database_url: str, tmp_path: Path
) -> AsyncIterator[Service]:
    """A service for one test on its own chain and database."""
    async with running_service(own_chain, database_url, tmp_path / "service", http) as started:
        yield started
