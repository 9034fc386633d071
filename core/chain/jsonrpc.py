"""JSON-RPC over HTTP, as payops talks to a Solana node: one attempt bounded by a timeout,
bounded retries with exponential backoff and jitter (honouring a 429's `Retry-After`), a
bound on requests in flight, and the checks that turn a broken answer into `RpcUnavailable`
rather than into a verdict. `core/chain/rpc.py` (`SolanaRpc`) makes the Solana calls on it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

__all__ = ["JsonRpc", "RpcStats", "RpcUnavailable", "describe"]

# JSON-RPC errors a node returns while it is catching up or briefly degraded (block not
# available, node unhealthy, block status not available yet, min context slot not reached,
# long-term storage unreachable): asking again shortly can succeed.
_TRANSIENT_RPC_ERRORS: Final = frozenset({-32004, -32005, -32014, -32016, -32019})
_HEADERS: Final = {"Content-Type": "application/json", "Accept": "application/json"}


class RpcUnavailable(Exception):
    """The RPC node gave no usable answer; `reason` says why, in words fit for a log line."""

    def __init__(self, method: str, reason: str) -> None:
        super().__init__(f"{method}: {reason}")
        self.method = method
        self.reason = reason


@dataclass
class RpcStats:
    """Counters for metrics and for tests that assert the node was (not) asked again."""

    requests: Counter[str] = field(default_factory=Counter)  # HTTP attempts, by method
    failures: Counter[str] = field(default_factory=Counter)  # calls ending in RpcUnavailable
    retries: int = 0
    cache_hits: int = 0
    coalesced: int = 0  # getTransaction calls answered by one already in flight
    waited_seconds: float = 0.0  # total backoff slept, Retry-After included

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


class _Retryable(Exception):
    """One attempt failed in a way that asking again may fix."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class JsonRpc:
    """Calls to one JSON-RPC endpoint, counted in `stats`. Make it in the event loop that
    uses it (the HTTP session is made on first use); `close()` when done."""

    def __init__(
        self,
        url: str,
        stats: RpcStats,
        *,
        timeout_seconds: float,
        max_retries: int,
        backoff_base_seconds: float,
        backoff_cap_seconds: float,
        max_concurrency: int,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if backoff_base_seconds < 0 or backoff_cap_seconds < backoff_base_seconds:
            raise ValueError("need 0 <= backoff_base_seconds <= backoff_cap_seconds")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.stats = stats
        self._timeout = timeout_seconds
        self._max_retries = max_retries
        self._backoff_base = backoff_base_seconds
        self._backoff_cap = backoff_cap_seconds
        self._url = url
        self._max_concurrency = max_concurrency
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None  # made on first use, in the loop
        self._proxy = _proxy_for(url)

    async def close(self) -> None:
        """Close the underlying HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_concurrency),
                headers=_HEADERS,
                # Each exchange is bounded by `_attempt`'s own timeout.
                timeout=aiohttp.ClientTimeout(total=None),
                # The proxy comes from the environment once (`_proxy_for`): aiohttp's
                # trust_env would read it, and ~/.netrc, in a thread on every request.
                trust_env=False,
            )
        return self._session

    async def call(self, method: str, params: list[Any] | None, *, retry: bool = True) -> Any:
        result, _ = await self.call_raw(method, params, retry=retry)
        return result

    async def call_raw(
        self, method: str, params: list[Any] | None, *, retry: bool = True
    ) -> tuple[Any, bytes]:
        """The call's `result` and the response body it came in."""
        attempts = 1 + (self._max_retries if retry else 0)
        attempt = 0
        while True:
            try:
                return await self._attempt(method, params)
            except _Retryable as exc:
                attempt += 1
                if attempt == attempts:
                    suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
                    raise self.failed(method, exc.reason + suffix) from exc
                if exc.retry_after is not None and exc.retry_after > self._backoff_cap:
                    raise self.failed(
                        method,
                        f"{exc.reason}; the node asked to wait {exc.retry_after:g}s, "
                        f"more than the {self._backoff_cap:g}s cap",
                    ) from exc
                delay = self._backoff(attempt - 1, exc.retry_after)
                self.stats.retries += 1
                self.stats.waited_seconds += delay
                await asyncio.sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self._backoff_cap, self._backoff_base * 2**attempt)
        # Jitter spreads replicas' retries apart; keeping the lower half avoids instant retries.
        # Not security-sensitive, hence the plain PRNG.
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311
        # Never earlier than the node asked; the caller has checked it is within the cap.
        return delay if retry_after is None else max(delay, retry_after)

    async def _attempt(self, method: str, params: list[Any] | None) -> tuple[Any, bytes]:
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params is not None:
            request["params"] = params
        body = json.dumps(request, separators=(",", ":")).encode()
        # The slot is held only while the request is on the wire, not during backoff sleeps,
        # so one struggling call cannot starve the others.
        async with self._semaphore:
            self.stats.requests[method] += 1
            try:
                # One bound on the whole exchange: connect, send, headers and body.
                async with (
                    asyncio.timeout(self._timeout),
                    self._http().post(
                        self._url, data=body, allow_redirects=False, proxy=self._proxy
                    ) as response,
                ):
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
                    content = await response.read()
            except TimeoutError as exc:
                raise _Retryable(f"no answer within {self._timeout:g}s") from exc
            except aiohttp.ClientError as exc:
                raise _Retryable(f"connection failed: {type(exc).__name__}: {exc}") from exc
        return self._unwrap(method, status, retry_after, content), content

    def _unwrap(self, method: str, status: int, retry_after: str | None, content: bytes) -> Any:
        if status == 429 or status >= 500:
            reason = "rate limited (HTTP 429)" if status == 429 else f"HTTP {status}"
            raise _Retryable(reason, _parse_retry_after(retry_after))
        if not 200 <= status < 300:
            # A wrong URL, path or API key does not fix itself: fail fast.
            raise self.failed(method, f"HTTP {status}")
        try:
            envelope = json.loads(content)
        except ValueError:
            raise self.failed(method, f"response is not JSON: {content[:80]!r}") from None
        if not isinstance(envelope, dict):
            raise self.failed(method, f"response is not a JSON-RPC object: {describe(envelope)}")
        error = envelope.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
            reason = f"JSON-RPC error {code}: {message}"
            if code in _TRANSIENT_RPC_ERRORS:
                raise _Retryable(reason)
            raise self.failed(method, reason)
        if "result" not in envelope:
            raise self.failed(method, "response has neither result nor error")
        return envelope["result"]

    # --- shape checks: a wrong shape is a broken node, not a verdict ----------------------

    def failed(self, method: str, reason: str) -> RpcUnavailable:
        # Every RpcUnavailable is built here, so this counts each failed call exactly once.
        self.stats.failures[method] += 1
        return RpcUnavailable(method, reason)

    def expect_dict(self, method: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.failed(method, f"unexpected result shape: {describe(value)}")
        return value

    def expect_context_value(self, method: str, result: Any) -> Any:
        if not isinstance(result, dict) or "value" not in result:
            raise self.failed(method, f"unexpected result shape: {describe(result)}")
        return result["value"]


def _proxy_for(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY / NO_PROXY name for `url`, as httpx honoured them."""
    parts = urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _parse_retry_after(header: str | None) -> float | None:
    """Retry-After in delay-seconds; an HTTP-date (or junk) falls back to our own backoff."""
    if header is None:
        return None
    try:
        seconds = float(header.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def describe(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
