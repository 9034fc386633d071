"""What every command handler receives."""

from __future__ import annotations

from dataclasses import dataclass

from bot.authz import Roles
from core.audit import Actor
from core.chain.rpc import SolanaRpc
from core.services import Services


@dataclass(frozen=True)
class OpsContext:
    services: Services
    rpc: SolanaRpc | None  # for live chain lookups (triage); None when not wired
    actor: Actor
    roles: Roles
    # Where a Slack command was typed (its channel), to find the incident it is about.
    channel: str | None = None
