"""Who may do what: on-call users run commands, managers approve adjustments.

Configured as Slack user ids (`U...`/`W...`) and user-group ids (`S...`) in
PAYOPS_SLACK_ONCALL and PAYOPS_SLACK_MANAGERS. Groups are expanded through the Slack API
(`usergroups.users.list`), cached for a minute. Nothing configured means nobody: fail closed.
On the CLI (Slack down) only explicitly listed user ids count, since groups cannot be read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from core.errors import Forbidden

log = logging.getLogger("payops.bot")

GroupReader = Callable[[str], Awaitable[list[str]]]
GROUP_CACHE_SECONDS = 60.0


class Roles:
    def __init__(
        self, oncall: Iterable[str], managers: Iterable[str], read_group: GroupReader | None = None
    ) -> None:
        self._oncall = frozenset(oncall)
        self._managers = frozenset(managers)
        self._read_group = read_group
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    async def _expand(self, ids: frozenset[str]) -> frozenset[str]:
        users = {i for i in ids if not i.startswith("S")}
        for group in (i for i in ids if i.startswith("S")):
            users |= await self._members(group)
        return frozenset(users)

    async def _members(self, group: str) -> frozenset[str]:
        cached = self._cache.get(group)
        if cached and time.monotonic() - cached[0] < GROUP_CACHE_SECONDS:
            return cached[1]
        if self._read_group is None:
            return frozenset()
        try:
            members = frozenset(await self._read_group(group))
        except Exception as exc:
            # Fail closed: an unreadable group grants nothing.
            log.warning("cannot read Slack user group %s: %s", group, exc)
            return cached[1] if cached else frozenset()
        self._cache[group] = (time.monotonic(), members)
        return members

    async def managers(self) -> frozenset[str]:
        return await self._expand(self._managers)

    async def require_oncall(self, user: str) -> None:
        """On-call users (and managers) may run commands."""
        if not self._oncall and not self._managers:
            raise Forbidden(
                "payops commands are disabled: set PAYOPS_SLACK_ONCALL (and PAYOPS_SLACK_MANAGERS)",
                code="not_configured",
            )
        if user not in await self._expand(self._oncall | self._managers):
            raise Forbidden(
                f"<@{user}> is not on call: ask to be added to PAYOPS_SLACK_ONCALL",
                code="not_oncall",
            )
