"""Schemathesis against the running service: every route of /openapi.json, with and without
valid credentials; no server error and every response matching the documented schema."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis import checks

from api.app import api_document, create_app
from core import db
from tests.support import ScriptedVerifier, bearer, build_services

schema = schemathesis.openapi.from_dict(api_document())
# per route; PAYOPS_TEST_HEAVY=1 runs ten times more
EXAMPLES = 250 if os.environ.get("PAYOPS_TEST_HEAVY") == "1" else 25


@dataclass
class Running:
    base_url: str
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event


@pytest.fixture(scope="module")
def service(pg_admin_dsn: str) -> Iterator[str]:
    """The API in a thread of its own (schemathesis calls it synchronously)."""
    from tests.conftest import TEMPLATE, drop_database, new_database

    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        name, dsn = await new_database(pg_admin_dsn, TEMPLATE)
        pool = await db.create_pool(dsn, min_size=1, max_size=10)
        stop = asyncio.Event()
        runner = web.AppRunner(create_app(build_services(pool, ScriptedVerifier())))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        box["running"] = Running(f"http://{host}:{port}", asyncio.get_running_loop(), stop)
        ready.set()
        await stop.wait()
        await runner.cleanup()
        await pool.close()
        await drop_database(pg_admin_dsn, name)

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(30), "the service did not start"
    running: Running = box["running"]
    yield running.base_url
    running.loop.call_soon_threadsafe(running.stop.set)
    thread.join(30)


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# Whether a base58 string decodes to a 32-byte key or a 64-byte signature cannot be said in
# JSON Schema, so a schema-valid wallet or signature may still get 400 invalid_wallet /
# invalid_signature: every other check stays on.
EXCLUDED = [checks.positive_data_acceptance]


@schema.parametrize()
@FUZZ
def test_every_route_with_a_valid_token(case: Any, service: str, template_db: str) -> None:
    case.call_and_validate(
        base_url=service, headers=bearer("fuzz-user", "credits:debit"), excluded_checks=EXCLUDED
    )


@schema.parametrize()
@FUZZ
def test_every_route_without_credentials(case: Any, service: str, template_db: str) -> None:
    case.call_and_validate(base_url=service, excluded_checks=EXCLUDED)
