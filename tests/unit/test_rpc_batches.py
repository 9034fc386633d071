"""JSON-RPC batches: the calls made in one turn of the event loop leave as one request, each
keeping its own answer, retries and failure; a node that takes no batches gets the calls one
by one. Against the scripted node on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from core.chain.batch import array_items
from core.chain.rpc import RpcUnavailable, SolanaRpc
from tests.fake_node import OTHER_SIG, SIG, SPL_FIXTURE, FakeNode, Reply, load_fixture_result
from tests.unit.conftest import MakeRpc


@pytest.fixture
def batching(make_rpc: MakeRpc) -> MakeRpc:
    """`make_rpc` with batches of up to 10 calls (`PAYOPS_RPC_MAX_BATCH`'s default)."""
    return lambda **overrides: make_rpc(**{"max_batch": 10, **overrides})


def tx(n: int) -> dict[str, Any]:
    return {"slot": n, "transaction": {"signatures": [f"sig{n}"]}, "meta": {"err": None}}


async def test_calls_made_together_leave_in_one_request_and_each_gets_its_own_answer(
    node: FakeNode, batching: MakeRpc
) -> None:
    node.reverse_batches = True  # JSON-RPC lets a node answer a batch in any order
    node.script = [Reply(result=tx(n)) for n in range(4)]
    rpc = batching()
    answers = await asyncio.gather(*(rpc.get_transaction(f"sig{n}") for n in range(4)))
    assert node.batches == [4]
    assert [a["slot"] for a in answers] == [0, 1, 2, 3]
    assert [r["params"][0] for r in node.requests] == ["sig0", "sig1", "sig2", "sig3"]
    assert rpc.stats.requests["getTransaction"] == 4  # calls, batched or not
    assert rpc.stats.batches == 1


async def test_a_lone_call_is_a_plain_request(node: FakeNode, batching: MakeRpc) -> None:
    node.results["getTransaction"] = tx(7)
    rpc = batching()
    assert (await rpc.get_transaction(SIG))["slot"] == 7
    assert (await rpc.get_transaction(OTHER_SIG))["slot"] == 7  # a later turn: its own request
    assert node.batches == []
    assert len(node.requests) == 2
    assert rpc.stats.batches == 0


async def test_a_batch_holds_at_most_max_batch_calls(node: FakeNode, batching: MakeRpc) -> None:
    node.results["getTransaction"] = tx(1)
    rpc = batching(max_batch=10)
    await asyncio.gather(*(rpc.get_transaction(f"sig{n}") for n in range(25)))
    assert sorted(node.batches) == [5, 10, 10]


async def test_max_batch_one_never_batches(node: FakeNode, batching: MakeRpc) -> None:
    node.results["getTransaction"] = tx(1)
    rpc = batching(max_batch=1)
    await asyncio.gather(*(rpc.get_transaction(f"sig{n}") for n in range(5)))
    assert node.batches == []
    assert len(node.requests) == 5


async def test_captured_answer_comes_through_a_batch_and_the_cache_unchanged(
    node: FakeNode, batching: MakeRpc
) -> None:
    real = load_fixture_result(SPL_FIXTURE)
    node.script = [Reply(result=real), Reply(result=tx(2))]
    rpc = batching()
    first, _ = await asyncio.gather(rpc.get_transaction(SIG), rpc.get_transaction(OTHER_SIG))
    assert node.batches == [2]
    assert first == real
    again = await rpc.get_transaction(SIG)  # the finalized cache: the batch's slice of it
    assert again == real
    assert again is not first
    assert rpc.stats.cache_hits == 1
    assert len(node.requests) == 2


async def test_one_calls_error_fails_only_that_call(node: FakeNode, batching: MakeRpc) -> None:
    node.script = [
        Reply(result=tx(0)),
        Reply(error={"code": -32602, "message": "Invalid param: WrongSize"}),
        Reply(result=tx(2)),
    ]
    rpc = batching()
    answers = await asyncio.gather(
        *(rpc.get_transaction(f"sig{n}") for n in range(3)), return_exceptions=True
    )
    assert answers[0]["slot"] == 0  # type: ignore[index]
    assert isinstance(answers[1], RpcUnavailable)
    assert "-32602" in answers[1].reason
    assert answers[2]["slot"] == 2  # type: ignore[index]
    assert node.batches == [3]  # not asked again: a non-transient error
    assert rpc.stats.failures["getTransaction"] == 1


async def test_a_transient_error_retries_only_its_call(node: FakeNode, batching: MakeRpc) -> None:
    node.script = [
        Reply(result=tx(0)),
        Reply(error={"code": -32004, "message": "Block not available for slot"}),
        Reply(result=tx(1)),  # the retry, alone
    ]
    rpc = batching()
    answers = await asyncio.gather(rpc.get_transaction("sig0"), rpc.get_transaction("sig1"))
    assert [a["slot"] for a in answers] == [0, 1]
    assert node.batches == [2]
    assert [r["params"][0] for r in node.requests] == ["sig0", "sig1", "sig1"]
    assert rpc.stats.retries == 1


async def test_a_call_missing_from_the_answer_is_asked_again(
    node: FakeNode, batching: MakeRpc
) -> None:
    node.script = [Reply(result=tx(0)), Reply(omit=True), Reply(result=tx(1))]
    rpc = batching()
    answers = await asyncio.gather(rpc.get_transaction("sig0"), rpc.get_transaction("sig1"))
    assert [a["slot"] for a in answers] == [0, 1]
    assert [r["params"][0] for r in node.requests] == ["sig0", "sig1", "sig1"]


async def test_a_rate_limited_batch_retries_each_call(node: FakeNode, batching: MakeRpc) -> None:
    node.script = [Reply(status=429, raw=b"slow down", headers={"Retry-After": "0"})]
    node.results["getTransaction"] = tx(3)
    rpc = batching()
    answers = await asyncio.gather(*(rpc.get_transaction(f"sig{n}") for n in range(3)))
    assert [a["slot"] for a in answers] == [3, 3, 3]
    assert node.batches[0] == 3
    assert rpc.stats.retries == 3  # each call waited and asked again
    assert rpc.stats.batches_refused == 0


async def test_a_batch_past_the_timeout_fails_each_call_after_its_retries(
    node: FakeNode, batching: MakeRpc
) -> None:
    node.script = [Reply(result=tx(0), delay=1.0) for _ in range(12)]
    rpc = batching(timeout_seconds=0.2, max_retries=1)
    answers = await asyncio.gather(
        *(rpc.get_transaction(f"sig{n}") for n in range(2)), return_exceptions=True
    )
    assert all(isinstance(a, RpcUnavailable) for a in answers)
    assert all("no answer within 0.2s (after 2 attempts)" in a.reason for a in answers)  # type: ignore[union-attr]
    assert rpc.stats.failures["getTransaction"] == 2


@pytest.mark.parametrize(
    "refusal",
    [
        Reply(error={"code": -32600, "message": "batch requests are not supported"}),
        Reply(status=403, raw=b'{"error":"Batch requests are only available for paid plans"}'),
        Reply(status=413, raw=b"request entity too large"),
    ],
    ids=["json-rpc-error", "403", "413"],
)
async def test_a_node_that_takes_no_batches_gets_the_calls_one_by_one(
    node: FakeNode, batching: MakeRpc, refusal: Reply, caplog: pytest.LogCaptureFixture
) -> None:
    node.refuse_batches = refusal
    node.results["getTransaction"] = tx(4)
    rpc = batching()
    with caplog.at_level(logging.WARNING, logger="payops.chain"):
        answers = await asyncio.gather(*(rpc.get_transaction(f"sig{n}") for n in range(3)))
        assert [a["slot"] for a in answers] == [4, 4, 4]
        later = await asyncio.gather(*(rpc.get_transaction(f"late{n}") for n in range(3)))
    assert [a["slot"] for a in later] == [4, 4, 4]
    assert node.batches == [3]  # refused once; every call since went on its own
    assert len(node.requests) == 6
    assert rpc.stats.batches_refused == 1
    assert rpc.stats.retries == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "payops.chain"]
    assert len(warnings) == 1
    assert "refused a batch of 3 calls" in warnings[0]
    assert "PAYOPS_RPC_MAX_BATCH=1" in warnings[0]


@pytest.mark.parametrize("status", [401, 404, 407])
async def test_a_wrong_key_or_url_fails_each_call_and_keeps_batching(
    node: FakeNode, batching: MakeRpc, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    node.script = [Reply(status=status, raw=b'{"error":"invalid api key"}')]
    node.results["getTransaction"] = tx(8)
    rpc = batching()
    with caplog.at_level(logging.WARNING, logger="payops.chain"):
        answers = await asyncio.gather(
            *(rpc.get_transaction(f"sig{n}") for n in range(2)), return_exceptions=True
        )
    assert [a.reason for a in answers] == [f"HTTP {status}"] * 2  # type: ignore[union-attr]
    assert node.batches == [2]  # not asked again, one by one or otherwise: fail fast
    assert rpc.stats.batches_refused == 0
    assert not [r for r in caplog.records if r.name == "payops.chain"]
    again = await asyncio.gather(*(rpc.get_transaction(f"sig{n}") for n in range(2)))
    assert [a["slot"] for a in again] == [8, 8]
    assert node.batches == [2, 2]  # still batching once the key is right


async def test_a_caller_gone_before_the_turn_ends_is_not_sent(
    node: FakeNode, batching: MakeRpc
) -> None:
    node.results["getSlot"] = 9
    rpc = batching()
    gone = asyncio.ensure_future(rpc.get_slot())
    kept = asyncio.ensure_future(rpc.get_slot())
    await asyncio.sleep(0)  # both queued for this turn's batch
    gone.cancel()
    assert await kept == 9
    assert len(node.requests) == 1
    assert gone.cancelled()


async def test_close_cancels_calls_still_waiting(node: FakeNode, batching: MakeRpc) -> None:
    node.script = [Reply(result=tx(0), delay=5.0), Reply(result=tx(1), delay=5.0)]
    rpc = batching()
    waiting = asyncio.gather(
        rpc.get_transaction("sig0"), rpc.get_transaction("sig1"), return_exceptions=True
    )
    await asyncio.sleep(0.1)  # the batch is on the wire
    async with asyncio.timeout(2):
        await rpc.close()
        answers = await waiting
    assert all(isinstance(a, asyncio.CancelledError) for a in answers)


def test_max_batch_is_bounded() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        SolanaRpc("http://127.0.0.1:1/", max_batch=0)
    with pytest.raises(ValueError, match="max_batch"):
        SolanaRpc("http://127.0.0.1:1/", max_batch=1001)


# --- the answer's items, each with its own text -------------------------------------------


def test_array_items_keep_each_items_bytes() -> None:
    body = b' [ {"id":1,"result":{"a":[1,2]}} ,\n{"id":2,"result":null}\t] \n'
    assert array_items(body) == [
        ({"id": 1, "result": {"a": [1, 2]}}, b'{"id":1,"result":{"a":[1,2]}}'),
        ({"id": 2, "result": None}, b'{"id":2,"result":null}'),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":1,"error":{"code":-32600}}',  # an object: no batch answer
        b"[]",  # says nothing about any call
        b'[{"id":1} {"id":2}]',  # no comma
        b'[{"id":1},]',
        b'[{"id":1}] trailing',
        b'[{"id":1}',
        b"\xff[",
        b"",
    ],
)
def test_array_items_refuse_what_is_not_one_array(body: bytes) -> None:
    assert array_items(body) is None


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"[]", b'{"jsonrpc":"2.0"}'])
async def test_garbage_for_a_batch_fails_its_calls_and_keeps_batching(
    node: FakeNode, batching: MakeRpc, body: bytes
) -> None:
    node.script = [Reply(raw=body)]
    node.results["getTransaction"] = tx(5)
    rpc = batching()
    answers = await asyncio.gather(
        *(rpc.get_transaction(f"sig{n}") for n in range(2)), return_exceptions=True
    )
    assert all(isinstance(a, RpcUnavailable) for a in answers)
    assert all("not a batch answer" in a.reason for a in answers)  # type: ignore[union-attr]
    assert rpc.stats.batches_refused == 0
    again = await asyncio.gather(*(rpc.get_transaction(f"sig{n}") for n in range(2)))
    assert [a["slot"] for a in again] == [5, 5]
    assert node.batches == [2, 2]  # still batching: one broken answer is not a refusal


async def test_one_transient_error_for_a_whole_batch_retries_each_call(
    node: FakeNode, batching: MakeRpc
) -> None:
    node.script = [
        Reply(
            raw=b'{"jsonrpc":"2.0","id":null,"error":{"code":-32005,"message":"Node is unhealthy"}}'
        )
    ]
    node.results["getTransaction"] = tx(6)
    rpc = batching()
    answers = await asyncio.gather(*(rpc.get_transaction(f"sig{n}") for n in range(2)))
    assert [a["slot"] for a in answers] == [6, 6]
    assert rpc.stats.retries == 2
    assert rpc.stats.batches_refused == 0
