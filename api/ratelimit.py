"""Rate limits on the public routes: per client IP, and per user once authenticated.

Token buckets in this process's memory: a limit protects the service (and the RPC budget
behind verify) from one noisy client; it is not state that must survive a restart, so each
replica keeps its own (N replicas admit at most N times the configured rate). Buckets are
kept for the most recent `max_keys` clients only, so memory stays bounded under a flood of
new addresses. Health, metrics, OpenAPI and Slack routes are not limited (Slack is verified
by signature and retries on its own).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from aiohttp import web

from core.errors import RateLimited

UNLIMITED_PREFIXES = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/slack/")


def is_limited(path: str) -> bool:
    """Whether requests to `path` count against the per-address limit."""
    return not path.startswith(UNLIMITED_PREFIXES)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """`rate` requests per second with bursts of `burst`, per key."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """0 when `key` may go ahead now, else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        bucket = self._buckets.pop(key, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        self._buckets[key] = bucket  # most recent last
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


@dataclass(frozen=True)
class Limits:
    per_ip: TokenBuckets
    per_user: TokenBuckets
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()


LIMITS = web.AppKey("rate_limits", Limits)


def client_ip(request: web.Request, trusted_proxies: tuple[IPv4Network | IPv6Network, ...]) -> str:
    """The client's address: the connection's peer, or behind trusted proxies the rightmost
    address in X-Forwarded-For that is not one of them.

    Each proxy appends the address it received the request from, so only the entries added by
    trusted proxies are true; anything to the left of the first untrusted one is what the
    client chose to send.
    """
    peer = request.remote or "unknown"
    if not trusted_proxies or not _trusted(_address(peer), trusted_proxies):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getall("X-Forwarded-For", [])
        for hop in header.split(",")
    ]
    closest = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # a trusted proxy would not write this: believe nothing further left
        if not _trusted(address, trusted_proxies):
            return str(address)
        closest = str(address)
    return closest


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(
    address: IPv4Address | IPv6Address | None, proxies: tuple[IPv4Network | IPv6Network, ...]
) -> bool:
    return address is not None and any(address in network for network in proxies)


def _refuse(wait: float, who: str) -> RateLimited:
    return RateLimited(
        f"too many requests from this {who}; retry after {math.ceil(wait)} s",
        retry_after=max(1, math.ceil(wait)),
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def limit_per_ip(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_limited(request.path):
        limits = request.app[LIMITS]
        wait = limits.per_ip.take(client_ip(request, limits.trusted_proxies))
        if wait:
            raise _refuse(wait, "address")
    return await handler(request)


def limit_user(request: web.Request, user: str) -> None:
    """Called once the user is authenticated (an unverified `sub` could starve someone)."""
    wait = request.app[LIMITS].per_user.take(user)
    if wait:
        raise _refuse(wait, "user")
