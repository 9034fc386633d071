"""The Slack Bolt app: every command of the registry (bot/ops.py) with its buttons and forms.

HTTP mode: `POST /slack/events` on the service's aiohttp app, verified with the signing
secret; a signed request runs once (a replay within its five minutes is refused on every
replica, and a retry Slack sends itself is acknowledged without running). Socket Mode when
SLACK_APP_TOKEN is set, connected in the aiohttp start-up. Every command acks at once
(Slack's 3 seconds) and answers afterwards through `respond`; errors reach the user as a
private (ephemeral) message, never a silent failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot import ops
from bot.authz import Roles
from bot.context import OpsContext
from bot.replies import slack_text
from bot.slack_ui import (
    ActionHandler,
    Click,
    Event,
    EventHandler,
    SlackEnv,
    SlackUI,
    Submission,
    ViewHandler,
)
from core import seen_requests
from core.audit import Actor
from core.chain.rpc import SolanaRpc
from core.errors import ConfigError, PayopsError
from core.services import Services

log = logging.getLogger("payops.bot")

H = TypeVar("H")
BOLT_APP = web.AppKey("bolt_app", AsyncApp)

# Slack accepts a signature for five minutes either side of its timestamp; a seen signature
# is kept a minute longer, for clocks that differ between replicas.
SIGNATURE_WINDOW = timedelta(minutes=5)
SEEN_MARGIN = timedelta(minutes=1)
PRUNE_EVERY_SECONDS = 60.0


def web_client(services: Services) -> AsyncWebClient:
    """The one Slack Web API client: base URL from settings, 429s retried."""
    token = services.settings.slack_bot_token
    return AsyncWebClient(
        token=token.get_secret_value() if token else None,
        base_url=services.settings.slack_api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=3)],
    )


def create_bolt_app(services: Services, rpc: SolanaRpc | None) -> AsyncApp:
    settings = services.settings
    if settings.slack_signing_secret is None or settings.slack_bot_token is None:
        raise ConfigError("Slack needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET")
    client = web_client(services)
    app = AsyncApp(
        client=client,
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        process_before_response=False,
    )

    async def read_group(group: str) -> list[str]:
        answer = await client.usergroups_users_list(usergroup=group)
        return list(answer.get("users") or [])

    roles = Roles(settings.slack_oncall, settings.slack_managers, read_group)

    def context_for(user: str) -> OpsContext:
        return OpsContext(services, rpc, Actor(user, "slack", uuid.uuid4().hex), roles)

    env = SlackEnv(services, roles, context_for)
    for name, ui in ops.slash_commands().items():
        app.command(f"/pay-{name}")(_command_handler(name, ui, env))
    for action_id, on_click in declared(lambda ui: ui.actions).items():
        app.action(action_id)(_action_handler(on_click, env))
    for callback_id, on_submit in declared(lambda ui: ui.views).items():
        app.view(callback_id)(_view_handler(on_submit, env))
    for event_type, on_event in declared(lambda ui: ui.events).items():
        app.event(event_type)(_event_handler(on_event, env))
    return app


def declared(ids_of: Callable[[SlackUI], Mapping[str, H]]) -> dict[str, H]:
    """Every slash command's action ids (or view callback ids) with their handlers.

    Bolt would run only the first handler of an id declared twice, so that is refused here.
    """
    found: dict[str, H] = {}
    for name, ui in ops.slash_commands().items():
        for key, handler in ids_of(ui).items():
            if key in found:
                raise ConfigError(f"/pay-{name} declares {key!r}, which another command has")
            found[key] = handler
    return found


def _command_handler(name: str, ui: SlackUI, env: SlackEnv) -> Any:
    async def handle(
        ack: Any, command: dict[str, Any], respond: Any, client: AsyncWebClient
    ) -> None:
        await ack()
        user = command.get("user_id", "")
        ctx = replace(env.context_for(user), channel=command.get("channel_id"))
        try:
            text = (command.get("text") or "").strip()
            if text != "help":
                await env.roles.require_oncall(user)
            form = None if ui.form is None else ui.form(ops.split_args(text))
            if form is not None:
                await client.views_open(trigger_id=command.get("trigger_id"), view=form)
                return
            reply = await ops.run(ctx, name, text)
        except PayopsError as exc:
            await respond(text=f":no_entry: {exc.message}", response_type="ephemeral")
            return
        except Exception:
            log.exception("/pay-%s failed", name, extra={"request_id": ctx.actor.request_id})
            await respond(
                text=f":boom: /pay-{name} failed unexpectedly (request id {ctx.actor.request_id}); "
                "see the service logs",
                response_type="ephemeral",
            )
            return
        await respond(text=slack_text(reply.text), blocks=reply.blocks, response_type="ephemeral")
        await ui.publish(ctx, client, reply)

    handle.__name__ = f"pay_{name}"
    return handle


def _action_handler(on_click: ActionHandler, env: SlackEnv) -> Any:
    # Bolt passes a listener's arguments by parameter name, hence this wrapper per handler.
    async def handle(ack: Any, body: dict[str, Any], client: AsyncWebClient, respond: Any) -> None:
        await ack()  # at once: Slack gives a click 3 seconds
        click = Click(body, client, respond)
        try:
            await on_click(env, click)
        except Exception:
            # Handlers refuse what they understand; anything else still gets an answer.
            log.exception("button %s failed", on_click.__name__)
            await click.refuse("this button could not be handled; see the service logs")

    handle.__name__ = on_click.__name__
    return handle


def _view_handler(on_submit: ViewHandler, env: SlackEnv) -> Any:
    async def handle(
        ack: Any, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await on_submit(env, Submission(ack, body, view, client))

    handle.__name__ = on_submit.__name__
    return handle


class ReplayGuard:
    """Lets each validly signed Slack request through once, across replicas."""

    def __init__(self, services: Services, signing_secret: str) -> None:
        self._services = services
        self._verifier = SignatureVerifier(signing_secret)
        self._pruned_at = 0.0  # monotonic; pruning is shared work, any replica may do it

    async def refusal(self, request: web.Request) -> web.Response | None:
        """None to run the request; otherwise the answer that stands for it."""
        body = await request.text()
        timestamp = request.headers.get("X-Slack-Request-Timestamp")
        signature = request.headers.get("X-Slack-Signature")
        if not self._verifier.is_valid(body, timestamp, signature):
            return None  # Bolt refuses it with 401, as before
        assert timestamp is not None  # is_valid checked both
        assert signature is not None
        if request.headers.get("X-Slack-Retry-Num"):
            # Slack resends when an answer was slow; the first delivery is already running.
            log.info("Slack retry %s acknowledged", request.headers.get("X-Slack-Retry-Num"))
            return web.Response(status=200, headers={"X-Slack-No-Retry": "1"})
        pool = self._services.pool
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            await seen_requests.prune(pool, self._services.clock() - SEEN_MARGIN)
        expires = datetime.fromtimestamp(int(timestamp), UTC) + SIGNATURE_WINDOW + SEEN_MARGIN
        if await seen_requests.first_sight(pool, signature, expires):
            return None
        log.warning("replayed Slack request refused")
        return web.Response(status=401, text="this signed request was already received")


SLACK_GUARD = web.AppKey("slack_guard", ReplayGuard)


def _event_handler(on_event: EventHandler, env: SlackEnv) -> Any:
    async def handle(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        try:
            await on_event(env, Event(body, client))
        except Exception:
            log.exception("event %s failed", (body.get("event") or {}).get("type"))

    handle.__name__ = on_event.__name__
    return handle


async def slack_events(request: web.Request) -> web.Response:
    refused = await request.app[SLACK_GUARD].refusal(request)
    if refused is not None:
        return refused
    bolt = request.app[BOLT_APP]
    return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))


def add_slack(app: web.Application, services: Services, rpc: SolanaRpc | None) -> None:
    """Mount `/slack/events`, and start Socket Mode with the app when SLACK_APP_TOKEN is set."""
    bolt = create_bolt_app(services, rpc)
    app[BOLT_APP] = bolt
    assert services.settings.slack_signing_secret is not None  # create_bolt_app checked it
    app[SLACK_GUARD] = ReplayGuard(
        services, services.settings.slack_signing_secret.get_secret_value()
    )
    app.router.add_post("/slack/events", slack_events, name="slack")
    app_token = services.settings.slack_app_token
    if app_token is None:
        return

    async def socket_mode(app: web.Application) -> AsyncIterator[None]:
        from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

        handler = AsyncSocketModeHandler(bolt, app_token.get_secret_value())
        # connect, not start: start would block the aiohttp start-up forever.
        connect = asyncio.create_task(handler.connect_async())  # type: ignore[no-untyped-call]
        yield
        connect.cancel()
        with contextlib.suppress(Exception):
            await handler.close_async()  # type: ignore[no-untyped-call]

    app.cleanup_ctx.append(socket_mode)
