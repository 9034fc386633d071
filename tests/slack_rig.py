"""The service with its Slack app, running against the fake Slack Web API (tests/slack_fake.py).

`slack_services` builds the services with the bot's token, signing secret and the fake's API URL
(and whatever other settings the test gives); `slack_app` starts the fake, serves the app with
Slack added on those services and closes both the client and the fake afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from bot.slack_app import add_slack
from core.services import Services
from tests.slack_fake import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.support import ScriptedVerifier, build_services


@dataclass(frozen=True)
class SlackApp:
    client: TestClient[Any, Any]
    fake: FakeSlack
    services: Services


def slack_services(
    pool: asyncpg.Pool,
    fake: FakeSlack,
    *,
    clock: Callable[[], datetime] | None = None,
    **settings: Any,
) -> Services:
    """The services on a `ScriptedVerifier`, their bot talking to the started `fake`; `clock`
    is theirs unless given."""
    svc = build_services(
        pool,
        ScriptedVerifier(),
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=fake.api_url(),
        **settings,
    )
    return svc if clock is None else replace(svc, clock=clock)


@asynccontextmanager
async def slack_app(
    pool: asyncpg.Pool,
    *,
    fake: FakeSlack | None = None,
    clock: Callable[[], datetime] | None = None,
    **settings: Any,
) -> AsyncIterator[SlackApp]:
    """The app on a test client, with `slack_services`; `fake` is started here (a new one by
    default)."""
    fake = fake if fake is not None else FakeSlack()
    await fake.start()
    try:
        svc = slack_services(pool, fake, clock=clock, **settings)
        app = create_app(svc)
        add_slack(app, svc, rpc=None)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        try:
            yield SlackApp(client, fake, svc)
        finally:
            await client.close()
    finally:
        await fake.close()
