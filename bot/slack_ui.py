"""What a command module declares of its Slack UI, and what its handlers receive.

Each module in bot/commands/ has a `SLACK = SlackUI(...)`: its buttons (action id → handler),
its forms (view callback id → handler), the form a slash command opens instead of answering,
what it posts to channels after answering, and the events it follows. bot/slack_app.py
wires every command's `SlackUI` the same way, so no command needs a special case there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.authz import Roles
from bot.context import OpsContext
from bot.replies import Reply, slack_text
from core.services import Services

View = dict[str, Any]


@dataclass(frozen=True)
class SlackEnv:
    """What every button and form handler may use, whoever clicked."""

    services: Services
    roles: Roles
    context_for: Callable[[str], OpsContext]


@dataclass(frozen=True)
class Click:
    """A button click (Bolt's `block_actions`), already acknowledged."""

    body: dict[str, Any]
    client: AsyncWebClient
    respond: Callable[..., Awaitable[Any]]

    @property
    def user(self) -> str:
        return str(self.body.get("user", {}).get("id", ""))

    @property
    def value(self) -> str:
        return str(((self.body.get("actions") or [{}])[0]).get("value", ""))

    @property
    def message_ts(self) -> str | None:
        """The message the button was clicked on (its thread root, for our posts)."""
        ts = (self.body.get("message") or {}).get("ts")
        return None if ts is None else str(ts)

    @property
    def channel(self) -> str | None:
        channel = (self.body.get("channel") or {}).get("id")
        return None if channel is None else str(channel)

    async def refuse(self, message: str) -> None:
        """Only the clicker sees why; the message with the buttons stays as it is."""
        await self.respond(
            text=f":no_entry: {message}", response_type="ephemeral", replace_original=False
        )


@dataclass(frozen=True)
class Submission:
    """A submitted form (Bolt's `view_submission`); the handler acks, with errors or not."""

    ack: Callable[..., Awaitable[Any]]
    body: dict[str, Any]
    view: View
    client: AsyncWebClient

    @property
    def user(self) -> str:
        return str(self.body.get("user", {}).get("id", ""))


@dataclass(frozen=True)
class Event:
    """An Events API event (`reaction_added`, `app_home_opened`), already acknowledged."""

    body: dict[str, Any]
    client: AsyncWebClient

    @property
    def event(self) -> dict[str, Any]:
        return dict(self.body.get("event") or {})

    @property
    def user(self) -> str:
        return str(self.event.get("user", ""))


ActionHandler = Callable[[SlackEnv, Click], Awaitable[None]]
EventHandler = Callable[[SlackEnv, Event], Awaitable[None]]
ViewHandler = Callable[[SlackEnv, Submission], Awaitable[None]]
# The arguments of a slash command → the form (modal) to open instead of running it, or None.
Form = Callable[[list[str]], View | None]
Publisher = Callable[[OpsContext, AsyncWebClient, Reply], Awaitable[None]]


async def post_alert(ctx: OpsContext, client: AsyncWebClient, reply: Reply) -> None:
    """Post a reply the team must see (gate changes, smoke results) to the alerts channel."""
    channel = ctx.services.settings.slack_alerts_channel
    if reply.alert and channel:
        await client.chat_postMessage(
            channel=channel, text=slack_text(reply.text), blocks=reply.blocks
        )


@dataclass(frozen=True)
class SlackUI:
    actions: Mapping[str, ActionHandler] = field(default_factory=dict)
    views: Mapping[str, ViewHandler] = field(default_factory=dict)
    form: Form | None = None
    publish: Publisher = post_alert
    # Events API subscriptions (event type -> handler); manifest.yml lists them.
    events: Mapping[str, EventHandler] = field(default_factory=dict)
