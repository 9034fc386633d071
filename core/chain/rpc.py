"""The one Solana JSON-RPC client wrapper payops uses.

`SolanaRpc` answers the few calls payops needs and hides the unreliable parts of talking to a
node: a timeout per attempt, bounded retries with exponential backoff and jitter (honouring a
429's `Retry-After`), a bound on requests in flight, an LRU cache of finalized transactions,
and one request for concurrent `getTransaction` calls of one signature. Every answer is the
node's own JSON `result`, as plain Python values.

Exceptions:

    RpcUnavailable   the node could not give an answer after the allowed retries: down,
                     refused, slow, HTTP 5xx or 429, another non-2xx status, a body that is
                     not JSON-RPC, an unexpected result shape, or a JSON-RPC error object.
                     Callers turn it into Pending(RPC_UNAVAILABLE); it never means "rejected".
    ValueError       a programming error in the arguments (checked before any request).

Why aiohttp, and raw JSON, rather than solana-py's `AsyncClient`: its typed methods parse
every answer into solders objects, and its provider calls `raise_for_status()` before we can
see the response. The pure verification rules need the node's exact jsonParsed JSON (solders
drops fields it does not model, and rejects shapes it does not know, which would turn a real
answer into an outage), and honouring `Retry-After` needs the 429's headers. So this module
posts its own JSON-RPC body. It does so on an aiohttp session (DESIGN: aiohttp is payops' HTTP
client) rather than on the AsyncClient's httpx2 session: on the verify path, httpx2's layers
(httpx, httpcore, anyio) cost about 1.3 ms of CPU per call against 0.1 ms for aiohttp
(docs/PERFORMANCE.md). solana-py still provides the commitment levels. Retrying has one
owner: this module.

Worst case, one call takes about (max_retries + 1) * timeout + max_retries * backoff_cap
seconds, plus any wait for a free concurrency slot: every single wait, a `Retry-After`
included, is at most `backoff_cap_seconds`; a server asking for longer gets a fast
RpcUnavailable instead of a stuck verify.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import urllib.request
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit

import aiohttp
from solana.rpc.commitment import Commitment

__all__ = ["RpcStats", "RpcUnavailable", "SolanaRpc"]

# JSON-RPC errors a node returns while it is catching up or briefly degraded (block not
# available, node unhealthy, block status not available yet, min context slot not reached,
# long-term storage unreachable): asking again shortly can succeed.
_TRANSIENT_RPC_ERRORS: Final = frozenset({-32004, -32005, -32014, -32016, -32019})
_MAX_SIGNATURES_PER_STATUS_CALL: Final = 256
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


class _Fetched:
    """A fetched transaction: the response body, and its `result` as parsed on arrival,
    which only the first taker gets (the others parse `raw` for objects of their own)."""

    __slots__ = ("_parsed", "raw")

    def __init__(self, raw: bytes, parsed: dict[str, Any]) -> None:
        self.raw = raw
        self._parsed: dict[str, Any] | None = parsed

    def take(self) -> dict[str, Any] | None:
        parsed, self._parsed = self._parsed, None
        return parsed


class SolanaRpc:
    """Solana JSON-RPC over HTTP, with retries, a concurrency bound and a cache of finalized
    transactions. Use as an async context manager or call `close()`."""

    def __init__(
        self,
        url: str,
        *,
        commitment: str = "finalized",
        max_supported_transaction_version: int = 0,
        timeout_seconds: float = 10.0,
        max_retries: int = 3,
        backoff_base_seconds: float = 0.25,
        backoff_cap_seconds: float = 4.0,
        max_concurrency: int = 16,
        cache_size: int = 1024,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if backoff_base_seconds < 0 or backoff_cap_seconds < backoff_base_seconds:
            raise ValueError("need 0 <= backoff_base_seconds <= backoff_cap_seconds")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self.commitment = Commitment(commitment)  # ValueError on an unknown level
        self.max_supported_transaction_version = max_supported_transaction_version
        self._timeout = timeout_seconds
        self._max_retries = max_retries
        self._backoff_base = backoff_base_seconds
        self._backoff_cap = backoff_cap_seconds
        self._url = url
        self._max_concurrency = max_concurrency
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._cache_size = cache_size
        # The node's answer as it came (bytes): parsing it anew on every hit hands each caller
        # its own objects, several times cheaper than deep-copying a parsed one.
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._ids = itertools.count(1)
        self.stats = RpcStats()
        self._session: aiohttp.ClientSession | None = None  # made on first use, in the loop
        self._proxy = _proxy_for(url)
        # getTransaction calls on the wire, by signature: a burst of verifies of one payment
        # (a client retrying, duplicate requests) costs the node one request.
        self._in_flight: dict[str, asyncio.Future[_Fetched | None]] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the underlying HTTP session."""
        for fetch in list(self._in_flight.values()):
            fetch.cancel()
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

    # --- the calls payops makes -------------------------------------------------------------

    async def get_transaction(self, signature: str) -> dict[str, Any] | None:
        """`getTransaction` (jsonParsed, configured commitment): the node's `result`, or None
        when the node does not have the transaction at that commitment.

        Concurrent calls for one signature share one request; each caller gets its own copy
        of the answer, so none can corrupt another's: the first caller to wake takes the
        objects parsed on arrival, every other (and every cache hit) parses the body anew."""
        raw = self._cache.get(signature)
        if raw is not None:
            self._cache.move_to_end(signature)
            self.stats.cache_hits += 1
        else:
            fetch = self._in_flight.get(signature)
            if fetch is None:
                fetch = asyncio.ensure_future(self._fetch_transaction(signature))
                self._in_flight[signature] = fetch
                fetch.add_done_callback(lambda done: self._fetched(signature, done))
            else:
                self.stats.coalesced += 1
            # Shielded: a caller that gives up does not cancel the others' request.
            fetched = await asyncio.shield(fetch)
            if fetched is None:
                return None
            parsed = fetched.take()
            if parsed is not None:
                return parsed
            raw = fetched.raw
        return self._expect_dict("getTransaction", json.loads(raw)["result"])

    def _fetched(self, signature: str, fetch: asyncio.Future[_Fetched | None]) -> None:
        self._in_flight.pop(signature, None)
        if not fetch.cancelled():
            fetch.exception()  # retrieved here too: every waiter may have gone

    async def _fetch_transaction(self, signature: str) -> _Fetched | None:
        """A found transaction: the response body (cached when final) and its `result` as
        parsed on arrival (handed to one caller only), or None."""
        config = {
            "encoding": "jsonParsed",
            "commitment": self.commitment.value,
            "maxSupportedTransactionVersion": self.max_supported_transaction_version,
        }
        method = "getTransaction"
        result, raw = await self._call_raw(method, [signature, config])
        if result is None:
            return None  # not found yet: never cached, it may appear any moment
        tx = self._expect_dict(method, result)
        # A real node always sends both keys (meta may be null). Without them this is a broken
        # node or proxy, and must not reach the rules, which would reject it for good.
        # The transaction is an object (json, jsonParsed) or [data, encoding] (base64); meta an
        # object or null. Anything else is garbage from the node, not a malformed payment.
        if (
            not isinstance(tx.get("transaction"), dict | list)
            or "meta" not in tx
            or not isinstance(tx["meta"], dict | None)
        ):
            raise self._failed(method, f"unexpected result shape: {_describe(tx)}")
        # Only a finalized answer is immutable; a confirmed one can still be rolled back.
        if self.commitment is Commitment.FINALIZED and self._cache_size > 0:
            self._cache[signature] = raw
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return _Fetched(raw, tx)

    async def get_signatures_for_address(
        self,
        address: str,
        limit: int | None = None,
        before: str | None = None,
        until: str | None = None,
        *,
        commitment: str | None = None,
    ) -> list[dict[str, Any]]:
        """`getSignaturesForAddress`, newest first, as the node's list of signature records
        (at the configured commitment unless another is asked for)."""
        level = self.commitment if commitment is None else Commitment(commitment)
        # The node refuses `processed` for this method; `confirmed` is the nearest it allows.
        commitment = (Commitment.CONFIRMED if level is Commitment.PROCESSED else level).value
        config: dict[str, Any] = {"commitment": commitment}
        if limit is not None:
            if not 1 <= limit <= 1000:
                raise ValueError("limit must be between 1 and 1000")
            config["limit"] = limit
        if before is not None:
            config["before"] = before
        if until is not None:
            config["until"] = until
        method = "getSignaturesForAddress"
        result = await self._call(method, [address, config])
        if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
            raise self._failed(method, f"unexpected result shape: {_describe(result)}")
        return result

    async def get_signature_statuses(
        self, signatures: Sequence[str], *, search_transaction_history: bool = True
    ) -> list[dict[str, Any] | None]:
        """`getSignatureStatuses`: one status (or None, unknown) per signature, in order.

        Statuses are always answered at the node's lowest commitment (that is the point: they
        show a transaction that is processed or confirmed but not yet finalized)."""
        if not signatures:
            return []
        if len(signatures) > _MAX_SIGNATURES_PER_STATUS_CALL:
            raise ValueError(f"at most {_MAX_SIGNATURES_PER_STATUS_CALL} signatures per call")
        method = "getSignatureStatuses"
        params = [list(signatures), {"searchTransactionHistory": search_transaction_history}]
        value = self._expect_context_value(method, await self._call(method, params))
        if (
            not isinstance(value, list)
            or len(value) != len(signatures)
            or not all(v is None or isinstance(v, dict) for v in value)
        ):
            raise self._failed(method, f"unexpected result shape: {_describe(value)}")
        return value

    async def get_account_info_json_parsed(self, address: str) -> dict[str, Any] | None:
        """`getAccountInfo` (jsonParsed): the account's `value`, or None if it does not exist."""
        method = "getAccountInfo"
        config = {"encoding": "jsonParsed", "commitment": self.commitment.value}
        value = self._expect_context_value(method, await self._call(method, [address, config]))
        return None if value is None else self._expect_dict(method, value)

    async def get_confirmed_transaction(self, signature: str) -> dict[str, Any] | None:
        """`getTransaction` at `confirmed` (jsonParsed), never cached: an early look at a
        payment that may still be rolled back. None when the node does not have it."""
        method = "getTransaction"
        config = {
            "encoding": "jsonParsed",
            "commitment": Commitment.CONFIRMED.value,
            "maxSupportedTransactionVersion": self.max_supported_transaction_version,
        }
        result = await self._call(method, [signature, config])
        return None if result is None else self._expect_dict(method, result)

    async def get_token_account_balance(self, address: str) -> tuple[int, int]:
        """`getTokenAccountBalance`: (the balance in base units, the slot it was read at)."""
        method = "getTokenAccountBalance"
        result = await self._call(method, [address, {"commitment": self.commitment.value}])
        context = result.get("context") if isinstance(result, dict) else None
        value = result.get("value") if isinstance(result, dict) else None
        slot = context.get("slot") if isinstance(context, dict) else None
        amount = value.get("amount") if isinstance(value, dict) else None
        if (
            isinstance(slot, bool)
            or not isinstance(slot, int)
            or not isinstance(amount, str)
            or not amount.isascii()
            or not amount.isdigit()
        ):
            raise self._failed(method, f"unexpected result shape: {_describe(result)}")
        return int(amount), slot

    async def get_slot(self) -> int:
        """`getSlot` at the configured commitment."""
        method = "getSlot"
        result = await self._call(method, [{"commitment": self.commitment.value}])
        if isinstance(result, bool) or not isinstance(result, int):
            raise self._failed(method, f"unexpected result shape: {_describe(result)}")
        return result

    async def health(self) -> bool:
        """True if the node answers `getHealth` with "ok". One attempt, no retries: readiness
        probes want a quick, current answer, and their caller asks again anyway."""
        try:
            result: object = await self._call("getHealth", None, retry=False)
        except RpcUnavailable:
            return False
        return result == "ok"

    # --- one JSON-RPC call: retries around single attempts --------------------------------

    async def _call(self, method: str, params: list[Any] | None, *, retry: bool = True) -> Any:
        result, _ = await self._call_raw(method, params, retry=retry)
        return result

    async def _call_raw(
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
                    raise self._failed(method, exc.reason + suffix) from exc
                if exc.retry_after is not None and exc.retry_after > self._backoff_cap:
                    raise self._failed(
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
            raise self._failed(method, f"HTTP {status}")
        try:
            envelope = json.loads(content)
        except ValueError:
            raise self._failed(method, f"response is not JSON: {content[:80]!r}") from None
        if not isinstance(envelope, dict):
            raise self._failed(method, f"response is not a JSON-RPC object: {_describe(envelope)}")
        error = envelope.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
            reason = f"JSON-RPC error {code}: {message}"
            if code in _TRANSIENT_RPC_ERRORS:
                raise _Retryable(reason)
            raise self._failed(method, reason)
        if "result" not in envelope:
            raise self._failed(method, "response has neither result nor error")
        return envelope["result"]

    # --- shape checks: a wrong shape is a broken node, not a verdict ----------------------

    def _failed(self, method: str, reason: str) -> RpcUnavailable:
        # Every RpcUnavailable is built here, so this counts each failed call exactly once.
        self.stats.failures[method] += 1
        return RpcUnavailable(method, reason)

    def _expect_dict(self, method: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self._failed(method, f"unexpected result shape: {_describe(value)}")
        return value

    def _expect_context_value(self, method: str, result: Any) -> Any:
        if not isinstance(result, dict) or "value" not in result:
            raise self._failed(method, f"unexpected result shape: {_describe(result)}")
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


def _describe(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
