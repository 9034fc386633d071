"""JSON-RPC over HTTP, as payops talks to a Solana node: one attempt bounded by a timeout,
bounded retries with exponential backoff and jitter (honouring a 429's `Retry-After`), a
bound on requests in flight, and the checks that turn a broken answer into `RpcUnavailable`
rather than into a verdict. `core/chain/rpc.py` (`SolanaRpc`) makes the Solana calls on it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from core.chain.batch import (
    NOT_ABOUT_BATCHES,
    Call,
    array_items,
    refusal,
    transient_error,
)
from core.chain.json_answers import loads

__all__ = ["JsonRpc", "RpcStats", "RpcUnavailable", "describe"]

# JSON-RPC errors a node returns while it is catching up or briefly degraded (block not
# available, node unhealthy, block status not available yet, min context slot not reached,
# long-term storage unreachable): asking again shortly can succeed.
_TRANSIENT_RPC_ERRORS: Final = frozenset({-32004, -32005, -32014, -32016, -32019})
_HEADERS: Final = {"Content-Type": "application/json", "Accept": "application/json"}
MAX_BATCH: Final = 1000  # calls per batch, at most
_encode = json.JSONEncoder(separators=(",", ":")).encode  # built once, not once a call

log = logging.getLogger("payops.chain")


class RpcUnavailable(Exception):
    """The RPC node gave no usable answer; `reason` says why, in words fit for a log line."""

    def __init__(self, method: str, reason: str) -> None:
        super().__init__(f"{method}: {reason}")
        self.method = method
        self.reason = reason


@dataclass
class RpcStats:
    """Counters for metrics and for tests that assert the node was (not) asked again."""

    requests: Counter[str] = field(default_factory=Counter)  # calls sent, by method
    failures: Counter[str] = field(default_factory=Counter)  # calls ending in RpcUnavailable
    retries: int = 0
    cache_hits: int = 0
    coalesced: int = 0  # getTransaction calls answered by one already in flight
    batches: int = 0  # HTTP requests that carried several calls (each counted in `requests`)
    batches_refused: int = 0  # batches the node would not take (then sent call by call)
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
    uses it (the HTTP session is made on first use); `close()` when done.

    With `max_batch` > 1, the calls made during one turn of the event loop leave together
    when the turn ends, as one JSON-RPC batch of at most `max_batch` calls (a lone call goes
    as a plain request, as with `max_batch` = 1). Each call keeps its own answer, retries and
    failure: a whole batch refused with 429 or 5xx, or cut by the timeout, is a retryable
    failure of each of its calls, each then asking again on its own schedule; a body that is
    no JSON fails each call, as it would fail a single one, and so does a wrong key or URL
    (401, 404, 407). A node that does not take batches (another client error, or one
    JSON-RPC error object instead of an array) has its calls sent one by one, then and from
    then on, with one warning."""

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
        max_batch: int = 1,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if backoff_base_seconds < 0 or backoff_cap_seconds < backoff_base_seconds:
            raise ValueError("need 0 <= backoff_base_seconds <= backoff_cap_seconds")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be between 1 and {MAX_BATCH}")
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
        self._max_batch = max_batch
        self._queue: list[Call] = []  # this turn's calls, sent when it ends
        self._sending: set[asyncio.Future[None]] = set()

    async def close(self) -> None:
        """Close the underlying HTTP session (calls still waiting for it are cancelled)."""
        for sending in list(self._sending):
            sending.cancel()
        for call in self._queue:
            call.answer.cancel()
        self._queue = []
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
        if self._max_batch == 1:
            return await self._exchange_one(method, params)
        # Calls made in one turn of the loop leave together, as one batch, when it ends.
        call = Call(method, params, asyncio.get_running_loop().create_future())
        self._queue.append(call)
        if len(self._queue) == 1:
            asyncio.get_running_loop().call_soon(self._send_queued)
        return await call.answer

    async def _exchange_one(self, method: str, params: list[Any] | None) -> tuple[Any, bytes]:
        body = _encode(self._request(method, params)).encode()
        status, retry_after, content = await self._post(body, (method,))
        self._check_status(method, status, retry_after)
        return self._result(method, self._envelope(method, content)), content

    def _request(self, method: str, params: list[Any] | None, id_: int = 0) -> dict[str, Any]:
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": id_ or next(self._ids), "method": method}
        if params is not None:
            request["params"] = params
        return request

    async def _post(self, body: bytes, methods: Sequence[str]) -> tuple[int, str | None, bytes]:
        """One HTTP exchange: its status, `Retry-After` and body; _Retryable when it failed."""
        # The slot is held only while the request is on the wire, not during backoff sleeps,
        # so one struggling call cannot starve the others.
        async with self._semaphore:
            self.stats.requests.update(methods)
            if len(methods) > 1:
                self.stats.batches += 1
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
        return status, retry_after, content

    def _check_status(self, method: str, status: int, retry_after: str | None) -> None:
        if _retryable(status):
            raise _status_failure(status, retry_after)
        if not 200 <= status < 300:
            # A wrong URL, path or API key does not fix itself: fail fast.
            raise self.failed(method, f"HTTP {status}")

    def _envelope(self, method: str, content: bytes) -> dict[str, Any]:
        try:
            envelope = loads(content)
        except ValueError:
            raise self.failed(method, f"response is not JSON: {content[:80]!r}") from None
        if not isinstance(envelope, dict):
            raise self.failed(method, f"response is not a JSON-RPC object: {describe(envelope)}")
        return envelope

    def _result(self, method: str, envelope: dict[str, Any]) -> Any:
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

    # --- batches: the calls of one turn of the loop in one request ------------------------

    def _send_queued(self) -> None:
        queued, self._queue = self._queue, []
        calls = [c for c in queued if not c.answer.done()]  # callers gone before it left
        size = self._max_batch
        for start in range(0, len(calls), size):
            sending = asyncio.ensure_future(self._send(calls[start : start + size]))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[Call]) -> None:
        """Answers every call: a result, _Retryable (its own loop asks again) or the
        RpcUnavailable it ends with."""
        try:
            if len(calls) > 1:
                await self._exchange_batch(calls)
                return
            call = calls[0]
            try:
                call.answer_with(await self._exchange_one(call.method, call.params))
            except (_Retryable, RpcUnavailable) as exc:
                call.fail(exc)
        except BaseException as exc:  # cancelled (closing), or a bug: nobody waits forever
            for call in calls:
                call.fail(exc)
            if not isinstance(exc, Exception):
                raise

    async def _exchange_batch(self, calls: list[Call]) -> None:
        ids = [next(self._ids) for _ in calls]
        requests = [self._request(c.method, c.params, i) for c, i in zip(calls, ids, strict=True)]
        body = _encode(requests).encode()
        status, retry_after, content = await self._post(body, [c.method for c in calls])
        if _retryable(status):  # each call's own failure: each asks again on its own
            for call in calls:
                call.fail(_status_failure(status, retry_after))
            return
        items = array_items(content) if 200 <= status < 300 else None
        transient = transient_error(content, _TRANSIENT_RPC_ERRORS) if items is None else None
        if transient is not None:  # one error for the whole batch, e.g. "node is unhealthy"
            for call in calls:
                call.fail(_Retryable(transient))
            return
        if status in NOT_ABOUT_BATCHES:  # a wrong key or URL: each fails as it would alone
            for call in calls:
                call.fail(self.failed(call.method, f"HTTP {status}"))
            return
        if items is None and refusal(status, content):
            # A node or plan that does not take batches: one by one, now and from now on.
            self._refused(len(calls), status, content)
            await asyncio.gather(*(self._send([call]) for call in calls))
            return
        if items is None:  # garbage, as a single call's would be: a broken node or proxy
            for call in calls:
                call.fail(self.failed(call.method, f"not a batch answer: {content[:80]!r}"))
            return
        by_id = {item.get("id"): (item, raw) for item, raw in items if isinstance(item, dict)}
        for call, id_ in zip(calls, ids, strict=True):
            found = by_id.get(id_)
            if found is None:
                call.fail(_Retryable("the batch answer has no entry for this call"))
                continue
            try:
                call.answer_with((self._result(call.method, found[0]), found[1]))
            except (_Retryable, RpcUnavailable) as exc:
                call.fail(exc)

    def _refused(self, calls: int, status: int, content: bytes) -> None:
        if self._max_batch > 1:
            log.warning(
                "the RPC node refused a batch of %d calls (HTTP %d: %s); sending each call "
                "on its own from now on (PAYOPS_RPC_MAX_BATCH=1 says so from the start)",
                calls,
                status,
                content[:120].decode(errors="replace"),
            )
        self._max_batch = 1
        self.stats.batches_refused += 1

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


def _retryable(status: int) -> bool:
    """Rate limited or a server error: asking again may succeed."""
    return status == 429 or status >= 500


def _status_failure(status: int, retry_after: str | None) -> _Retryable:
    reason = "rate limited (HTTP 429)" if status == 429 else f"HTTP {status}"
    return _Retryable(reason, _parse_retry_after(retry_after))


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
