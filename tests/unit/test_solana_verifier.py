"""SolanaVerifier: how RPC answers and failures map to verdicts (the rules decide the rest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.chain.rpc import SolanaRpc
from core.chain.rules import decide_raw
from core.chain.solana_verifier import SolanaVerifier, is_valid_signature
from core.chain.verdict import (
    TOKEN_PROGRAM,
    Confirmed,
    PaymentExpectation,
    Pending,
    PendingReason,
    RejectCode,
    Rejected,
    Verdict,
)
from tests.fake_node import (
    FAST,
    SIG,
    SPL_FIXTURE,
    FakeNode,
    Reply,
    load_fixture_result,
    refused_url,
)

GRACE = timedelta(minutes=10)
BLOCK_TIME = datetime.fromtimestamp(1679899845, tz=UTC)  # the SPL fixture's blockTime
NOW = BLOCK_TIME + timedelta(minutes=5)
# The keyapp SPL fixture: 1000 raw USDC into the ATA of 3i47..., with the memo "transfer".
EXPECTED = PaymentExpectation(
    intent_id="transfer",
    amount=1000,
    mint="EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
    token_program=TOKEN_PROGRAM,
    treasury_owner="3i476kTBBTy7pBGx4CXwJpJ6phuwLQgcwLTdHhU3c7ui",
    treasury_token_account="H51DXRt3ubThhdhNeDMScfkbC5X4AWzYfHaZS3JKEfPh",
    reference="8Hx5fAqoqhqZQ8zTGH9aKBoUELFbtasrWjnsfTZqV7yJ",
    created_at=BLOCK_TIME - timedelta(hours=1),
    expires_at=BLOCK_TIME + timedelta(hours=1),
)
NOT_FOUND = Reply(result=None)


def status(confirmation: str | None, err: Any = None, **extra: Any) -> dict[str, Any]:
    return {"slot": 10, "confirmations": 1, "err": err, "confirmationStatus": confirmation, **extra}


def statuses(*values: dict[str, Any] | None) -> Reply:
    return Reply(result={"context": {"slot": 11}, "value": list(values)})


async def verify(url: str, signature: str = SIG, **options: Any) -> Verdict:
    """One verify through a fresh SolanaRpc at `url`."""
    async with SolanaRpc(url, **{**FAST, **options}) as rpc:
        return await SolanaVerifier(rpc, grace=GRACE).verify(signature, EXPECTED, NOW)


async def test_rpc_down_is_pending_rpc_unavailable_never_rejected() -> None:
    verdict = await verify(refused_url())

    assert isinstance(verdict, Pending)
    assert verdict.reason is PendingReason.RPC_UNAVAILABLE
    assert "connection failed" in verdict.detail


async def test_rpc_errors_are_pending_rpc_unavailable(node: FakeNode) -> None:
    node.script = [Reply(status=500, raw=b"oops") for _ in range(3)]

    verdict = await verify(node.url)

    assert verdict == Pending(
        PendingReason.RPC_UNAVAILABLE, "getTransaction: HTTP 500 (after 3 attempts)"
    )


async def test_broken_node_answer_is_pending_not_rejected(node: FakeNode) -> None:
    node.results["getTransaction"] = {"slot": 5}  # no transaction, no meta: not a real answer

    verdict = await verify(node.url)

    assert isinstance(verdict, Pending)
    assert verdict.reason is PendingReason.RPC_UNAVAILABLE


async def test_not_found_anywhere_is_pending_not_found(node: FakeNode) -> None:
    node.script = [NOT_FOUND, statuses(None)]

    verdict = await verify(node.url)

    assert isinstance(verdict, Pending)
    assert verdict.reason is PendingReason.NOT_FOUND
    assert verdict == decide_raw(None, EXPECTED, NOW, GRACE)
    assert node.methods() == ["getTransaction", "getSignatureStatuses"]


@pytest.mark.parametrize(
    ("commitment", "seen"),
    [
        ("finalized", status("confirmed")),
        ("finalized", status("processed")),
        ("confirmed", status("processed")),
        ("finalized", {"slot": 10, "confirmations": 3, "err": None}),  # node without the field
    ],
)
async def test_seen_below_the_commitment_is_pending_not_final(
    node: FakeNode, commitment: str, seen: dict[str, Any]
) -> None:
    node.script = [NOT_FOUND, statuses(seen)]

    verdict = await verify(node.url, commitment=commitment)

    assert isinstance(verdict, Pending)
    assert verdict.reason is PendingReason.NOT_FINAL
    assert f"waiting for {commitment}" in verdict.detail


async def test_failed_but_not_final_is_still_pending(node: FakeNode) -> None:
    err = {"InstructionError": [0, {"Custom": 1}]}
    node.script = [NOT_FOUND, statuses(status("confirmed", err=err))]

    verdict = await verify(node.url)

    assert isinstance(verdict, Pending)
    assert verdict.reason is PendingReason.NOT_FINAL
    assert "will be rejected once final" in verdict.detail


async def test_status_already_at_the_commitment_stays_not_found(node: FakeNode) -> None:
    # Finalized between the two calls: the next verify finds it, nothing is "not final" now.
    node.script = [NOT_FOUND, statuses(status("finalized", confirmations=None))]

    verdict = await verify(node.url)

    assert isinstance(verdict, Pending)
    assert verdict.reason is PendingReason.NOT_FOUND


async def test_status_lookup_failure_keeps_the_not_found_answer(node: FakeNode) -> None:
    node.script = [NOT_FOUND, *(Reply(status=503, raw=b"") for _ in range(3))]

    verdict = await verify(node.url)

    assert isinstance(verdict, Pending)
    assert verdict.reason is PendingReason.NOT_FOUND


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "abc",
        "0OIl" * 22,  # not base58
        SIG + "1",  # one character too many
        "H51DXRt3ubThhdhNeDMScfkbC5X4AWzYfHaZS3JKEfPh",  # a 32-byte public key
        "5" * 10_000,
        f" {SIG}",
    ],
    ids=["empty", "short", "not-base58", "89-chars", "pubkey", "huge", "leading-space"],
)
async def test_malformed_signature_is_rejected_without_asking_the_node(
    node: FakeNode, signature: str
) -> None:
    verdict = await verify(node.url, signature)

    assert isinstance(verdict, Rejected)
    assert verdict.code is RejectCode.MALFORMED_TX
    assert node.requests == []


@pytest.mark.parametrize(
    ("text", "valid"),
    [(SIG, True), ("1" * 64, True), ("1" * 88, False), ("abc", False), ("", False)],
)
def test_is_valid_signature(text: str, valid: bool) -> None:
    assert is_valid_signature(text) is valid


async def test_real_transfer_gets_the_rules_verdict(node: FakeNode) -> None:
    captured = load_fixture_result(SPL_FIXTURE)
    node.results["getTransaction"] = captured

    verdict = await verify(node.url)

    assert verdict == decide_raw(captured, EXPECTED, NOW, GRACE)
    assert isinstance(verdict, Confirmed)
    assert verdict.received == 1000
    assert verdict.slot == 184930610


async def test_real_failed_transaction_is_rejected(node: FakeNode) -> None:
    captured = load_fixture_result("metamask_failed_swap_custom6001_v0_alt.json")
    node.results["getTransaction"] = captured

    verdict = await verify(node.url)

    assert verdict == decide_raw(captured, EXPECTED, NOW, GRACE)
    assert isinstance(verdict, Rejected)
    assert verdict.code is RejectCode.TX_FAILED


async def test_duplicate_verifies_ask_the_node_once(node: FakeNode) -> None:
    node.results["getTransaction"] = load_fixture_result(SPL_FIXTURE)
    async with SolanaRpc(node.url, **FAST) as rpc:
        verifier = SolanaVerifier(rpc, grace=GRACE)
        first = await verifier.verify(SIG, EXPECTED, NOW)
        second = await verifier.verify(SIG, EXPECTED, NOW)

    assert first == second
    assert node.methods() == ["getTransaction"]


async def test_negative_grace_is_refused() -> None:
    async with SolanaRpc("http://127.0.0.1:1/") as rpc:
        with pytest.raises(ValueError, match="grace"):
            SolanaVerifier(rpc, grace=timedelta(seconds=-1))
