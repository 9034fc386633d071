"""The chain side of reconciliation on real captured responses, through a fake ChainLookup.

`treasury_receipt` is what reached the configured treasury token account; `observe` finds
the payments the database does not know (by reference and in the treasury's history) and
never fails a run on an unreachable node.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core.chain.rpc import RpcUnavailable
from core.chain.transfers import parse_transaction
from core.config import PaymentConfig
from core.recon import (
    ChainLimits,
    ChainObservation,
    PaymentFacts,
    observe,
    payment_findings,
    treasury_receipt,
)

TOKEN = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
TOKEN_2022 = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
KEYAPP = "keyapp_validGetSendSPLTransactionResponse_jsonParsed.json"
KEYAPP_TREASURY = PaymentConfig(
    mint=USDC,
    token_program=TOKEN,
    decimals=6,
    treasury_owner="3i476kTBBTy7pBGx4CXwJpJ6phuwLQgcwLTdHhU3c7ui",
    treasury_token_account="H51DXRt3ubThhdhNeDMScfkbC5X4AWzYfHaZS3JKEfPh",
    price_per_credit=10_000,
    max_credits_per_intent=1_000_000,
    intent_ttl_seconds=900,
)
KEYAPP_SIG = (
    "2S2rTZjaqzxYRw9mnqzwtyqitKtSsnE8GVqLn1KrD5R2YpXZnU4GdjppsgfSAbrzJfaqadfi8CtrqEBy588WVQ3E"
)


@pytest.fixture
def fixtures(solana_fixtures_dir: Path) -> Path:
    return solana_fixtures_dir


def load(folder: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / name).read_text())
    return data.get("result", data) if "jsonrpc" in data else data


def treasury(owner: str, account: str, mint: str, program: str = TOKEN) -> PaymentConfig:
    return replace(
        KEYAPP_TREASURY,
        treasury_owner=owner,
        treasury_token_account=account,
        mint=mint,
        token_program=program,
    )


# The receiving side of each real transfer, as the fixtures' README lists it.
RECEIPTS = [
    (KEYAPP, KEYAPP_TREASURY, 1000),
    (
        "cordialsys_usdc_transferChecked_0.0002_base64.json",  # no programId: the mint decides
        treasury(
            "91t4uSdtBiftqsB24W2fRXFCXjUyc6xY3WMGFedAaTHh",
            "6Yg9GttAiHjbHMoiomBuGBDULP7HxQyez45dEiR9CJqw",
            "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
        ),
        200_000,
    ),
    (
        "cordialsys_v0_alt_inner_usdc_base64.json",  # by CPI, through lookup tables
        treasury(
            "3CznQLcJWpyNKrYyq7qCvZsHn19csgB8g5wvisx4us47",
            "917TbE5DbzFzzGimezHfqBJWAsy4SL3UU5BzJNcVhXJ",
            USDC,
        ),
        4_608_152_451,
    ),
    (
        "metamask_token2022_transfer_unchecked_create_ata.json",  # into an ATA made in the tx
        treasury(
            "BYh4CfuGDvFMKaZp3RPmkw9y6qg3sWukA2TiGJDeLKZi",
            "5k4KRS1HVR5DaQhPzY3P9mRBw1k3TK7fug23utRcqgk1",
            "HeLp6NuQkmYB4pYWo2zYs22mESHXPQYzXbB8n4V98jwC",
            TOKEN_2022,
        ),
        10_000_000,
    ),
    (
        "metamask_jupiter_swap_usdc_jup_v0_alt_inner.json",  # a swap paying a fee account
        treasury(
            "9yj3zvLS3fDMqi1F8zhkaWfq8TZpZWHe6cz1Sgt7djXf",
            "J8gt2jBUi6DW6gdUdm1fkP9oGN4xXwPdQbCZkkN78R3Z",
            USDC,
        ),
        9350,
    ),
    (
        "metamask_devnet_usdc_transfer.json",  # the sender's side: money left
        treasury(
            "BLw3RweJmfbTapJRgnPRvd962YDjFYAnVGd1p5hmZ5tP",
            "G23tQHsbQuh3yqUBoyXDn3TwqEbbbUHAHEeUSvJaVRtA",
            "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
        ),
        -10_000,
    ),
    ("keyapp_validGetSendSOLTransactionResponse_jsonParsed.json", KEYAPP_TREASURY, 0),
    ("metamask_jup_transferChecked_to_self_legacy.json", KEYAPP_TREASURY, 0),
    ("metamask_failed_swap_custom6001_v0_alt.json", KEYAPP_TREASURY, 0),
    (KEYAPP, replace(KEYAPP_TREASURY, mint="4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU"), 0),
    (KEYAPP, replace(KEYAPP_TREASURY, token_program=TOKEN_2022), 0),
    (
        KEYAPP,
        replace(KEYAPP_TREASURY, treasury_owner="8fusVwhgo4oS1fGpZKeRaXrJXQk9auKnAgcj9A97wR3t"),
        0,
    ),
    (
        KEYAPP,
        replace(
            KEYAPP_TREASURY, treasury_token_account="9rB2Poc468mPpY9WMUmaqEPsvJah8SpPB8bKqAjjXp5H"
        ),
        0,
    ),
]


@pytest.mark.parametrize(
    ("name", "payment", "received"),
    [pytest.param(n, p, r, id=f"{n[:40]}-{i}") for i, (n, p, r) in enumerate(RECEIPTS)],
)
def test_treasury_receipt_on_real_responses(
    fixtures: Path, name: str, payment: PaymentConfig, received: int
) -> None:
    assert treasury_receipt(parse_transaction(load(fixtures, name)), payment) == received


def test_a_failed_transaction_paid_nothing(fixtures: Path) -> None:
    failed = copy.deepcopy(load(fixtures, KEYAPP))
    failed["meta"]["err"] = {"InstructionError": [0, {"Custom": 1}]}
    assert treasury_receipt(parse_transaction(failed), KEYAPP_TREASURY) == 0


class FakeChain:
    """A `ChainLookup` answering from dicts; records what it was asked."""

    def __init__(
        self,
        signatures: dict[str, list[dict[str, Any]]],
        transactions: dict[str, dict[str, Any] | None],
        fail: str | None = None,
    ) -> None:
        self.signatures = signatures
        self.transactions = transactions
        self.fail = fail
        self.asked: list[tuple[str, str]] = []

    async def signatures_for_address(self, address: str, *, limit: int) -> list[dict[str, Any]]:
        self.asked.append(("signatures", address))
        if self.fail == "signatures":
            raise RpcUnavailable("getSignaturesForAddress", "connection refused")
        return self.signatures.get(address, [])[:limit]

    async def get_transaction(self, signature: str) -> dict[str, Any] | None:
        self.asked.append(("transaction", signature))
        if self.fail == "transaction":
            raise RpcUnavailable("getTransaction", "HTTP 503")
        return self.transactions.get(signature)


def record(signature: str, err: object = None) -> dict[str, Any]:
    return {"signature": signature, "slot": 1, "err": err, "blockTime": 1, "memo": None}


def nothing_known() -> Any:
    async def known(signatures: list[str]) -> set[str]:
        return set()

    return known


def knows(*held: str) -> Any:
    async def known(signatures: list[str]) -> set[str]:
        return set(held) & set(signatures)

    return known


async def test_unmatched_payment_in_the_treasury_history(fixtures: Path) -> None:
    chain = FakeChain(
        {KEYAPP_TREASURY.treasury_token_account: [record(KEYAPP_SIG)]},
        {KEYAPP_SIG: load(fixtures, KEYAPP)},
    )
    seen = await observe(chain, KEYAPP_TREASURY, references=[], known=nothing_known())
    assert seen.checked
    assert seen.attempted
    [payment] = seen.payments
    assert (payment.signature, payment.tokens) == (KEYAPP_SIG, 1000)
    facts = PaymentFacts(
        payment.signature, payment.tokens, (), (), credited=False, adjusted=False, where="t"
    )
    [finding] = payment_findings(facts)
    assert (finding.kind, finding.severity, finding.tokens) == (
        "unmatched_payment",
        "critical",
        1000,
    )
    assert finding.signatures == (KEYAPP_SIG,)


async def test_payment_found_by_an_intent_reference_names_the_intent(fixtures: Path) -> None:
    reference = "8fusVwhgo4oS1fGpZKeRaXrJXQk9auKnAgcj9A97wR3t"  # any key of the transaction
    chain = FakeChain({reference: [record(KEYAPP_SIG)]}, {KEYAPP_SIG: load(fixtures, KEYAPP)})
    seen = await observe(
        chain, KEYAPP_TREASURY, references=[("intent-1", reference)], known=nothing_known()
    )
    [payment] = seen.payments
    assert payment.reference_intents == ("intent-1",)
    assert reference in payment.account_keys
    assert ("signatures", KEYAPP_TREASURY.treasury_token_account) in chain.asked


async def test_known_ignored_and_failed_signatures_are_not_fetched(fixtures: Path) -> None:
    tx = load(fixtures, KEYAPP)
    chain = FakeChain(
        {
            KEYAPP_TREASURY.treasury_token_account: [
                record("known"),
                record("smoke"),
                record("failed", err={"InstructionError": [0, "x"]}),
                record(KEYAPP_SIG),
            ]
        },
        {KEYAPP_SIG: tx, "known": tx, "smoke": tx, "failed": tx},
    )
    seen = await observe(
        chain, KEYAPP_TREASURY, references=[], known=knows("known"), ignore={"smoke"}
    )
    fetched = [s for what, s in chain.asked if what == "transaction"]
    assert fetched == [KEYAPP_SIG]
    assert [p.signature for p in seen.payments] == [KEYAPP_SIG]


async def test_transfers_elsewhere_and_not_final_yet_are_no_payment(fixtures: Path) -> None:
    chain = FakeChain(
        {
            KEYAPP_TREASURY.treasury_token_account: [
                record("sol"),
                record("pending"),
                record("self"),
            ]
        },
        {
            "sol": load(fixtures, "keyapp_validGetSendSOLTransactionResponse_jsonParsed.json"),
            "self": load(fixtures, "metamask_jup_transferChecked_to_self_legacy.json"),
            "pending": None,
        },
    )
    seen = await observe(chain, KEYAPP_TREASURY, references=[], known=nothing_known())
    assert seen.checked
    assert seen.payments == ()
    assert seen.fetched == 2


@pytest.mark.parametrize("fail", ["signatures", "transaction"])
async def test_an_unreachable_node_is_recorded_not_raised(fixtures: Path, fail: str) -> None:
    chain = FakeChain(
        {KEYAPP_TREASURY.treasury_token_account: [record(KEYAPP_SIG)]},
        {KEYAPP_SIG: load(fixtures, KEYAPP)},
        fail=fail,
    )
    seen = await observe(chain, KEYAPP_TREASURY, references=[], known=nothing_known())
    assert (seen.attempted, seen.checked, seen.payments) == (True, False, ())
    assert seen.error is not None
    assert "RpcUnavailable" in seen.error


async def test_a_malformed_answer_leaves_the_chain_unchecked() -> None:
    chain = FakeChain(
        {KEYAPP_TREASURY.treasury_token_account: [record("bad")]}, {"bad": {"transaction": 1}}
    )
    seen = await observe(chain, KEYAPP_TREASURY, references=[], known=nothing_known())
    assert not seen.checked
    assert seen.error is not None
    assert "bad" in seen.error


async def test_more_unknown_signatures_than_the_limit_is_a_partial_check(fixtures: Path) -> None:
    tx = load(fixtures, KEYAPP)
    sigs = [f"s{i}" for i in range(5)]
    chain = FakeChain(
        {KEYAPP_TREASURY.treasury_token_account: [record(s) for s in sigs]},
        dict.fromkeys(sigs, tx),
    )
    seen = await observe(
        chain,
        KEYAPP_TREASURY,
        references=[],
        known=nothing_known(),
        limits=ChainLimits(transactions=2),
    )
    assert len(seen.payments) == 2
    assert not seen.checked
    assert seen.error is not None
    assert "only 2 fetched" in seen.error


def test_observation_summary_is_json() -> None:
    summary = ChainObservation(True, False, error="x").to_json()
    assert json.loads(json.dumps(summary)) == summary
