"""The one Solana JSON-RPC client wrapper payops uses.

`SolanaRpc` answers the few calls payops needs and hides the unreliable parts of talking to a
node: a timeout per attempt, bounded retries with exponential backoff and jitter (honouring a
429's `Retry-After`), a bound on requests in flight, an LRU cache of finalized transactions,
one request for concurrent `getTransaction` calls of one signature, and (`max_batch` > 1)
the calls made in one turn of the event loop sent together as one JSON-RPC batch. Every
answer is the node's own JSON `result`, as plain Python values.

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
owner: the JSON-RPC transport under it (`core/chain/jsonrpc.py`), which this module's calls
go through.

Worst case, one call takes about (max_retries + 1) * timeout + max_retries * backoff_cap
seconds, plus any wait for a free concurrency slot: every single wait, a `Retry-After`
included, is at most `backoff_cap_seconds`; a server asking for longer gets a fast
RpcUnavailable instead of a stuck verify.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, Self

from solana.rpc.commitment import Commitment

from core.chain.json_answers import loads
from core.chain.jsonrpc import JsonRpc, RpcStats, RpcUnavailable, describe

__all__ = ["RpcStats", "RpcUnavailable", "SolanaRpc"]

_MAX_SIGNATURES_PER_STATUS_CALL: Final = 256


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
        max_batch: int = 1,
        cache_size: int = 1024,
    ) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self.commitment = Commitment(commitment)  # ValueError on an unknown level
        self.max_supported_transaction_version = max_supported_transaction_version
        self.stats = RpcStats()
        self._rpc = JsonRpc(
            url,
            self.stats,
            timeout_seconds=timeout_seconds,
            max_retries=max_retries,
            backoff_base_seconds=backoff_base_seconds,
            backoff_cap_seconds=backoff_cap_seconds,
            max_concurrency=max_concurrency,
            max_batch=max_batch,
        )
        self._cache_size = cache_size
        # The node's answer as it came (bytes): parsing it anew on every hit hands each caller
        # its own objects, several times cheaper than deep-copying a parsed one.
        self._cache: OrderedDict[str, bytes] = OrderedDict()
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
        await self._rpc.close()

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
        return self._rpc.expect_dict("getTransaction", loads(raw)["result"])

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
        result, raw = await self._rpc.call_raw(method, [signature, config])
        if result is None:
            return None  # not found yet: never cached, it may appear any moment
        tx = self._rpc.expect_dict(method, result)
        # A real node always sends both keys (meta may be null). Without them this is a broken
        # node or proxy, and must not reach the rules, which would reject it for good.
        # The transaction is an object (json, jsonParsed) or [data, encoding] (base64); meta an
        # object or null. Anything else is garbage from the node, not a malformed payment.
        if (
            not isinstance(tx.get("transaction"), dict | list)
            or "meta" not in tx
            or not isinstance(tx["meta"], dict | None)
        ):
            raise self._rpc.failed(method, f"unexpected result shape: {describe(tx)}")
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
        result = await self._rpc.call(method, [address, config])
        if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
            raise self._rpc.failed(method, f"unexpected result shape: {describe(result)}")
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
        value = self._rpc.expect_context_value(method, await self._rpc.call(method, params))
        if (
            not isinstance(value, list)
            or len(value) != len(signatures)
            or not all(v is None or isinstance(v, dict) for v in value)
        ):
            raise self._rpc.failed(method, f"unexpected result shape: {describe(value)}")
        return value

    async def get_account_info_json_parsed(self, address: str) -> dict[str, Any] | None:
        """`getAccountInfo` (jsonParsed): the account's `value`, or None if it does not exist."""
        method = "getAccountInfo"
        config = {"encoding": "jsonParsed", "commitment": self.commitment.value}
        value = self._rpc.expect_context_value(
            method, await self._rpc.call(method, [address, config])
        )
        return None if value is None else self._rpc.expect_dict(method, value)

    async def get_confirmed_transaction(self, signature: str) -> dict[str, Any] | None:
        """`getTransaction` at `confirmed` (jsonParsed), never cached: an early look at a
        payment that may still be rolled back. None when the node does not have it."""
        method = "getTransaction"
        config = {
            "encoding": "jsonParsed",
            "commitment": Commitment.CONFIRMED.value,
            "maxSupportedTransactionVersion": self.max_supported_transaction_version,
        }
        result = await self._rpc.call(method, [signature, config])
        return None if result is None else self._rpc.expect_dict(method, result)

    async def get_token_account_balance(self, address: str) -> tuple[int, int]:
        """`getTokenAccountBalance`: (the balance in base units, the slot it was read at)."""
        method = "getTokenAccountBalance"
        result = await self._rpc.call(method, [address, {"commitment": self.commitment.value}])
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
            raise self._rpc.failed(method, f"unexpected result shape: {describe(result)}")
        return int(amount), slot

    async def get_slot(self) -> int:
        """`getSlot` at the configured commitment."""
        method = "getSlot"
        result = await self._rpc.call(method, [{"commitment": self.commitment.value}])
        if isinstance(result, bool) or not isinstance(result, int):
            raise self._rpc.failed(method, f"unexpected result shape: {describe(result)}")
        return result

    async def health(self) -> bool:
        """True if the node answers `getHealth` with "ok". One attempt, no retries: readiness
        probes want a quick, current answer, and their caller asks again anyway."""
        try:
            result: object = await self._rpc.call("getHealth", None, retry=False)
        except RpcUnavailable:
            return False
        return result == "ok"
