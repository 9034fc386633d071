"""SolanaRpc against a scripted JSON-RPC node on 127.0.0.1: real answers, and the faults of a
real node (rate limits, 5xx, slowness, garbage, errors, refusal)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import pytest

from core.chain.rpc import RpcUnavailable, SolanaRpc
from tests.fake_node import (
    FAST,
    OTHER_SIG,
    SIG,
    SPL_FIXTURE,
    TX,
    FakeNode,
    Reply,
    load_fixture_result,
    refused_url,
)
from tests.fixtures import SOLANA_FIXTURES
from tests.unit.conftest import MakeRpc


async def raises_unavailable(call: Awaitable[Any]) -> RpcUnavailable:
    with pytest.raises(RpcUnavailable) as info:
        await call
    return info.value


# --- real answers -------------------------------------------------------------------------


async def test_get_transaction_returns_the_nodes_json_parsed_result_verbatim(
    node: FakeNode, make_rpc: MakeRpc
) -> None:
    captured = load_fixture_result(SPL_FIXTURE)
    node.results["getTransaction"] = captured

    tx = await make_rpc().get_transaction(SIG)

    assert tx == captured
    assert node.requests[0]["params"] == [
        SIG,
        {"encoding": "jsonParsed", "commitment": "finalized", "maxSupportedTransactionVersion": 0},
    ]


@pytest.mark.parametrize("name", sorted(p.name for p in SOLANA_FIXTURES.glob("*.json")))
async def test_get_transaction_passes_every_captured_response_through_unchanged(
    node: FakeNode, make_rpc: MakeRpc, name: str
) -> None:
    captured = load_fixture_result(name)
    node.results["getTransaction"] = captured

    assert await make_rpc().get_transaction(SIG) == captured


async def test_configured_commitment_and_transaction_version_are_sent(
    node: FakeNode, make_rpc: MakeRpc
) -> None:
    node.results["getTransaction"] = None
    rpc = make_rpc(commitment="confirmed", max_supported_transaction_version=1)

    assert await rpc.get_transaction(SIG) is None

    config = node.requests[0]["params"][1]
    assert config["commitment"] == "confirmed"
    assert config["maxSupportedTransactionVersion"] == 1


# --- faults ---------------------------------------------------------------------------------


async def test_429_retry_after_is_honoured_then_succeeds(node: FakeNode, make_rpc: MakeRpc) -> None:
    node.script = [Reply(status=429, raw=b"slow down", headers={"Retry-After": "1"})]
    node.results["getSlot"] = 42
    rpc = make_rpc(backoff_cap_seconds=2.0)

    started = time.monotonic()
    assert await rpc.get_slot() == 42
    elapsed = time.monotonic() - started

    gap = node.arrivals[1] - node.arrivals[0]
    assert gap >= 0.99  # not before the node said
    assert elapsed < 1.8  # and not much after: bounded by the cap
    assert rpc.stats.retries == 1


async def test_retry_after_longer_than_the_cap_fails_fast_instead_of_waiting(
    node: FakeNode, make_rpc: MakeRpc
) -> None:
    node.script = [Reply(status=429, raw=b"", headers={"Retry-After": "120"})]
    rpc = make_rpc(backoff_cap_seconds=0.5)

    started = time.monotonic()
    exc = await raises_unavailable(rpc.get_slot())

    assert time.monotonic() - started < 0.5
    assert "429" in exc.reason
    assert "120s" in exc.reason
    assert len(node.requests) == 1


async def test_503_then_success(node: FakeNode, make_rpc: MakeRpc) -> None:
    node.script = [Reply(status=503, raw=b"<html>bad gateway</html>")]
    node.results["getSlot"] = 7
    rpc = make_rpc()

    assert await rpc.get_slot() == 7
    assert len(node.requests) == 2
    assert rpc.stats.failures.total() == 0


async def test_transient_json_rpc_error_is_retried(node: FakeNode, make_rpc: MakeRpc) -> None:
    node.script = [Reply(error={"code": -32005, "message": "Node is unhealthy"})]
    node.results["getSlot"] = 9

    assert await make_rpc().get_slot() == 9
    assert len(node.requests) == 2


async def test_persistent_500_raises_after_bounded_retries(
    node: FakeNode, make_rpc: MakeRpc
) -> None:
    node.script = [Reply(status=500, raw=b"oops") for _ in range(10)]
    rpc = make_rpc(max_retries=2)

    exc = await raises_unavailable(rpc.get_transaction(SIG))

    assert exc.reason == "HTTP 500 (after 3 attempts)"
    assert len(node.requests) == 3
    assert rpc.stats.failures["getTransaction"] == 1
    assert rpc.stats.waited_seconds <= 2 * 0.05


async def test_slow_response_beyond_timeout_raises(node: FakeNode, make_rpc: MakeRpc) -> None:
    node.script = [Reply(result=1, delay=0.5) for _ in range(2)]
    rpc = make_rpc(timeout_seconds=0.1, max_retries=1)

    started = time.monotonic()
    exc = await raises_unavailable(rpc.get_slot())

    assert time.monotonic() - started < 0.45
    assert "no answer within 0.1s" in exc.reason
    assert len(node.requests) == 2


@pytest.mark.parametrize(
    "body",
    [b"<html>502 Bad Gateway</html>", b'{"jsonrpc": "2.0", "id": 1', b"[1, 2]", b'{"id": 1}'],
    ids=["html", "truncated", "not-an-object", "no-result"],
)
async def test_garbage_body_raises_without_retry(
    node: FakeNode, make_rpc: MakeRpc, body: bytes
) -> None:
    node.script = [Reply(raw=body)]

    await raises_unavailable(make_rpc().get_slot())

    assert len(node.requests) == 1


async def test_json_rpc_error_object_raises_with_code_and_message(
    node: FakeNode, make_rpc: MakeRpc
) -> None:
    node.script = [Reply(error={"code": -32602, "message": "Invalid param: WrongSize"})]

    exc = await raises_unavailable(make_rpc().get_transaction(SIG))

    assert exc.reason == "JSON-RPC error -32602: Invalid param: WrongSize"
    assert str(exc) == "getTransaction: JSON-RPC error -32602: Invalid param: WrongSize"
    assert len(node.requests) == 1


async def test_client_error_status_fails_fast(node: FakeNode, make_rpc: MakeRpc) -> None:
    node.script = [Reply(status=401, raw=b"bad api key")]

    exc = await raises_unavailable(make_rpc().get_slot())

    assert exc.reason == "HTTP 401"
    assert len(node.requests) == 1


@pytest.mark.parametrize(
    "result",
    [
        ["not", "a", "transaction"],
        {"slot": 5},
        "ok",
        {"slot": 5, "transaction": None, "meta": None},
        {"slot": 5, "transaction": "AAAA", "meta": {}},
        {"slot": 5, "transaction": {}, "meta": "ok"},
        {"slot": 5, "transaction": {}},
    ],
    ids=["list", "no-tx", "string", "null-tx", "string-tx", "string-meta", "no-meta"],
)
async def test_unexpected_transaction_shape_raises(
    node: FakeNode, make_rpc: MakeRpc, result: Any
) -> None:
    node.results["getTransaction"] = result

    exc = await raises_unavailable(make_rpc().get_transaction(SIG))

    assert "unexpected result shape" in exc.reason


async def test_connection_refused_raises_after_retries() -> None:
    rpc = SolanaRpc(refused_url(), **FAST)
    try:
        exc = await raises_unavailable(rpc.get_transaction(SIG))
    finally:
        await rpc.close()

    assert exc.reason.startswith("connection failed")
    assert exc.reason.endswith("(after 3 attempts)")
    assert rpc.stats.total_requests == 3


# --- cache ----------------------------------------------------------------------------------


async def test_finalized_transaction_is_served_from_cache_the_second_time(
    node: FakeNode, make_rpc: MakeRpc
) -> None:
    node.results["getTransaction"] = TX
    rpc = make_rpc()

    first = await rpc.get_transaction(SIG)
    assert first is not None
    first["meta"]["err"] = (
        "scribbled"  # a caller scribbling on its answer must not poison the cache
    )
    second = await rpc.get_transaction(SIG)

    assert second == TX
    assert node.methods() == ["getTransaction"]
    assert rpc.stats.requests["getTransaction"] == 1
    assert rpc.stats.cache_hits == 1


async def test_concurrent_callers_of_one_request_get_objects_of_their_own(
    node: FakeNode, make_rpc: MakeRpc
) -> None:
    node.script = [Reply(result=TX, delay=0.05)]
    rpc = make_rpc()

    answers = await asyncio.gather(*(rpc.get_transaction(SIG) for _ in range(3)))

    assert node.methods() == ["getTransaction"]
    assert all(answer == TX for answer in answers)
    assert len({id(answer) for answer in answers}) == 3
    assert len({id(answer["meta"]) for answer in answers if answer is not None}) == 3


async def test_not_found_is_never_cached(node: FakeNode, make_rpc: MakeRpc) -> None:
    node.script = [Reply(result=None)]
    node.results["getTransaction"] = TX
    rpc = make_rpc()

    assert await rpc.get_transaction(SIG) is None
    assert await rpc.get_transaction(SIG) == TX
    assert len(node.requests) == 2


async def test_answers_below_finalized_are_never_cached(node: FakeNode, make_rpc: MakeRpc) -> None:
    node.results["getTransaction"] = TX
    rpc = make_rpc(commitment="confirmed")

    await rpc.get_transaction(SIG)
    await rpc.get_transaction(SIG)

    assert len(node.requests) == 2


async def test_cache_evicts_the_least_recently_used(node: FakeNode, make_rpc: MakeRpc) -> None:
    node.results["getTransaction"] = TX
    rpc = make_rpc(cache_size=1)

    for signature in (SIG, OTHER_SIG, SIG):
        await rpc.get_transaction(signature)

    assert [r["params"][0] for r in node.requests] == [SIG, OTHER_SIG, SIG]


# --- concurrency ----------------------------------------------------------------------------


async def test_requests_in_flight_never_exceed_max_concurrency(
    node: FakeNode, make_rpc: MakeRpc
) -> None:
    node.script = [Reply(result=i, delay=0.05) for i in range(10)]
    rpc = make_rpc(max_concurrency=3)

    slots = await asyncio.gather(*(rpc.get_slot() for _ in range(10)))

    assert sorted(slots) == list(range(10))
    assert node.max_in_flight == 3


# --- the other calls ------------------------------------------------------------------------


async def test_get_signatures_for_address_sends_paging_and_returns_records(
    node: FakeNode, make_rpc: MakeRpc
) -> None:
    records = [{"signature": SIG, "slot": 1, "err": None, "blockTime": 2, "memo": None}]
    node.results["getSignaturesForAddress"] = records

    got = await make_rpc().get_signatures_for_address(
        "3i476kTBBTy7pBGx4CXwJpJ6phuwLQgcwLTdHhU3c7ui", limit=10, before=OTHER_SIG, until=SIG
    )

    assert got == records
    assert node.requests[0]["params"][1] == {
        "commitment": "finalized",
        "limit": 10,
        "before": OTHER_SIG,
        "until": SIG,
    }


async def test_get_signature_statuses_returns_one_status_per_signature(
    node: FakeNode, make_rpc: MakeRpc
) -> None:
    status = {"slot": 3, "confirmations": 1, "err": None, "confirmationStatus": "confirmed"}
    node.results["getSignatureStatuses"] = {"context": {"slot": 4}, "value": [status, None]}

    got = await make_rpc().get_signature_statuses([SIG, OTHER_SIG])

    assert got == [status, None]
    assert node.requests[0]["params"] == [[SIG, OTHER_SIG], {"searchTransactionHistory": True}]


async def test_get_account_info_json_parsed_returns_value_or_none(
    node: FakeNode, make_rpc: MakeRpc
) -> None:
    account = {"lamports": 1, "owner": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"}
    node.script = [
        Reply(result={"context": {"slot": 1}, "value": account}),
        Reply(result={"context": {"slot": 1}, "value": None}),
    ]
    rpc = make_rpc()
    address = "H51DXRt3ubThhdhNeDMScfkbC5X4AWzYfHaZS3JKEfPh"

    assert await rpc.get_account_info_json_parsed(address) == account
    assert await rpc.get_account_info_json_parsed(address) is None
    assert node.requests[0]["params"] == [
        address,
        {"encoding": "jsonParsed", "commitment": "finalized"},
    ]


async def test_health_is_true_only_for_ok_and_never_retries(
    node: FakeNode, make_rpc: MakeRpc
) -> None:
    node.script = [
        Reply(result="ok"),
        Reply(error={"code": -32005, "message": "Node is behind by 42 slots"}),
        Reply(status=503, raw=b""),
    ]
    rpc = make_rpc()

    assert await rpc.health() is True
    assert await rpc.health() is False
    assert await rpc.health() is False
    assert len(node.requests) == 3


async def test_rejects_unknown_commitment() -> None:
    with pytest.raises(ValueError, match="nonsense"):
        SolanaRpc("http://127.0.0.1:1/", commitment="nonsense")
