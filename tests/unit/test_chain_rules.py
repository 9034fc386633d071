"""decide / decide_raw: verification rules on the 12 real responses, synthetic ones, and fuzz."""

from __future__ import annotations

import base64
import contextlib
import copy
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.chain.encoding import MalformedTransaction
from core.chain.rules import BLOCK_TIME_SKEW, decide, decide_raw
from core.chain.transfers import MEMO_PROGRAM_V2, parse_transaction
from core.chain.verdict import (
    TOKEN_2022_PROGRAM,
    TOKEN_PROGRAM,
    Confirmed,
    PaymentExpectation,
    Pending,
    PendingReason,
    RejectCode,
    Rejected,
    Verdict,
)
from tests.fixtures import load_solana_fixture

FIXTURE_NAMES = sorted(
    [
        "cordialsys_bonk_transfer_unchecked_base64.json",
        "cordialsys_usdc_transferChecked_0.0002_base64.json",
        "cordialsys_v0_alt_inner_usdc_base64.json",
        "keyapp_validGetSendSOLTransactionResponse_jsonParsed.json",
        "keyapp_validGetSendSPLTransactionResponse_jsonParsed.json",
        "metamask_devnet_usdc_transfer.json",
        "metamask_failed_swap_custom6001_v0_alt.json",
        "metamask_failed_swap_v0_alt_token2022_err.json",
        "metamask_jup_transferChecked_to_self_legacy.json",
        "metamask_jupiter_swap_token2022_inner_v0_alt.json",
        "metamask_jupiter_swap_usdc_jup_v0_alt_inner.json",
        "metamask_token2022_transfer_unchecked_create_ata.json",
    ]
)
BASE64_NAMES = [name for name in FIXTURE_NAMES if name.endswith("_base64.json")]

USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
DEVNET_USDC = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU"
BONK = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263"
USDT = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB"
WSOL = "So11111111111111111111111111111111111111112"
JUP = "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN"
HELP = "HeLp6NuQkmYB4pYWo2zYs22mESHXPQYzXbB8n4V98jwC"
NOT_IN_ANY_TX = "8Hx5fAqoqhqZQ8zTGH9aKBoUELFbtasrWjnsfTZqV7yJ"

GRACE = timedelta(minutes=10)


@cache
def load_raw(name: str) -> Any:
    """A fixture as stored (envelope or bare result); fails when the file is missing."""
    return load_solana_fixture(name)


def block_time_of(name: str) -> datetime:
    raw = load_raw(name)
    return datetime.fromtimestamp(raw.get("result", raw)["blockTime"], tz=UTC)


# -- decisions on the real responses -------------------------------------------------------------


@dataclass(frozen=True)
class FixtureCase:
    """An intent checked against a fixture; times are offsets from the fixture's block time."""

    fixture: str
    owner: str
    account: str
    mint: str
    amount: int
    reference: str
    program: str = TOKEN_PROGRAM
    intent_id: str = "pi_fixture"
    created: timedelta = timedelta(hours=-1)
    expires: timedelta = timedelta(hours=1)
    now: timedelta = timedelta(minutes=1)

    def expectation(self) -> PaymentExpectation:
        paid_at = block_time_of(self.fixture)
        return PaymentExpectation(
            intent_id=self.intent_id,
            amount=self.amount,
            mint=self.mint,
            token_program=self.program,
            treasury_owner=self.owner,
            treasury_token_account=self.account,
            reference=self.reference,
            created_at=paid_at + self.created,
            expires_at=paid_at + self.expires,
        )


KEYAPP = FixtureCase(
    fixture="keyapp_validGetSendSPLTransactionResponse_jsonParsed.json",
    owner="3i476kTBBTy7pBGx4CXwJpJ6phuwLQgcwLTdHhU3c7ui",
    account="H51DXRt3ubThhdhNeDMScfkbC5X4AWzYfHaZS3JKEfPh",
    mint=USDC,
    amount=1000,
    reference="SysvarRent111111111111111111111111111111111",  # one of its static keys
)
KEYAPP_TIME = datetime.fromtimestamp(1679899845, tz=UTC)
KEYAPP_SENDER = "8fusVwhgo4oS1fGpZKeRaXrJXQk9auKnAgcj9A97wR3t"
V0_ALT = FixtureCase(
    fixture="cordialsys_v0_alt_inner_usdc_base64.json",
    owner="3CznQLcJWpyNKrYyq7qCvZsHn19csgB8g5wvisx4us47",
    account="917TbE5DbzFzzGimezHfqBJWAsy4SL3UU5BzJNcVhXJ",
    mint=USDC,
    amount=4608152451,
    reference="BuuP1rJXnVs5GHSPoUxLqeQzV4nBXQ7RFAJ7j4rt6jEk",  # a loaded readonly key
)
TOKEN_2022 = FixtureCase(
    fixture="metamask_token2022_transfer_unchecked_create_ata.json",
    owner="BYh4CfuGDvFMKaZp3RPmkw9y6qg3sWukA2TiGJDeLKZi",
    account="5k4KRS1HVR5DaQhPzY3P9mRBw1k3TK7fug23utRcqgk1",
    mint=HELP,
    amount=10_000_000,
    reference="EMmTjuHsYCYX7vgPcQ2QVbNwYAwcvGoSMCEaHKc19DdE",
    program=TOKEN_2022_PROGRAM,
)
SWAP_2022 = FixtureCase(
    fixture="metamask_jupiter_swap_token2022_inner_v0_alt.json",
    owner="ExcBWu8fGPdJiaF1b1z3iEef38sjQJks8xvj6M85pPY6",
    account="2w6WUGXVeUPeGpJTUSNu4btbpMkFtmjrQgpKi149it7K",
    mint=USDT,
    amount=4239,
    reference="CAMMCzo5YL8w4VFF8KVHrK22GGUsp5VTaW7grrKgrWqK",
)
SPLIT_USDC = FixtureCase(
    fixture="metamask_jupiter_swap_usdc_jup_v0_alt_inner.json",
    owner="9yj3zvLS3fDMqi1F8zhkaWfq8TZpZWHe6cz1Sgt7djXf",
    account="J8gt2jBUi6DW6gdUdm1fkP9oGN4xXwPdQbCZkkN78R3Z",
    mint=USDC,
    amount=9350,
    reference="ZERor4xhbUycZ6gb9ntrhqscUcZmAbQDjEAtCf4hbZY",
)
SELF_OWNED_ACCOUNT = "8cjeuVV3KQ9k8RqW1JUyCfey2TDAhuo7f4hPDMeGfxv"  # a token account owning itself


def confirmed(
    case: FixtureCase,
    received: int,
    payer: str,
    *,
    overpaid: bool = False,
    late: bool = False,
) -> Confirmed:
    raw = load_raw(case.fixture)
    return Confirmed(
        received=received,
        payer=payer,
        slot=raw.get("result", raw)["slot"],
        block_time=block_time_of(case.fixture),
        overpaid=overpaid,
        late=late,
    )


BONK_TRANSFER = FixtureCase(
    fixture="cordialsys_bonk_transfer_unchecked_base64.json",
    owner="GtxgnRiSfBzahR9xb7hvYbWq3Uzez7hpCz2BJbCLxKdq",
    account="DiQuYy9JmNnDRxUaRMAazcQ7yqVep6CrZbcbP2yBpuXY",
    mint=BONK,
    amount=3170652014400000,
    reference="SysvarRecentB1ockHashes11111111111111111111",
)
NO_PROGRAM_ID = FixtureCase(
    fixture="cordialsys_usdc_transferChecked_0.0002_base64.json",
    owner="91t4uSdtBiftqsB24W2fRXFCXjUyc6xY3WMGFedAaTHh",
    account="6Yg9GttAiHjbHMoiomBuGBDULP7HxQyez45dEiR9CJqw",
    mint=DEVNET_USDC,
    amount=200000,
    reference="TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
)
DEVNET = FixtureCase(
    fixture="metamask_devnet_usdc_transfer.json",
    owner="BXT1K8kzYXWMi6ihg7m9UqiHW4iJbJ69zumELHE9oBLe",
    account="644PJ6UW8e4gQpjKdBVd4MCYasWjSECKjqd2qzdeAJY6",
    mint=DEVNET_USDC,
    amount=10000,
    reference="G23tQHsbQuh3yqUBoyXDn3TwqEbbbUHAHEeUSvJaVRtA",
)

Want = RejectCode | Confirmed
# (id, case, wanted): `wanted` is a thunk so fixtures load only inside a running test.
FIXTURE_DECISIONS: list[tuple[str, FixtureCase, Any]] = [
    ("keyapp pays 1000", KEYAPP, lambda: confirmed(KEYAPP, 1000, KEYAPP_SENDER)),
    ("keyapp underpays 1001", replace(KEYAPP, amount=1001), lambda: RejectCode.UNDERPAID),
    (
        "keyapp overpays 999",
        replace(KEYAPP, amount=999),
        lambda: confirmed(KEYAPP, 1000, KEYAPP_SENDER, overpaid=True),
    ),
    ("keyapp other mint", replace(KEYAPP, mint=BONK), lambda: RejectCode.WRONG_MINT),
    (
        "keyapp other token program",
        replace(KEYAPP, program=TOKEN_2022_PROGRAM),
        lambda: RejectCode.WRONG_TOKEN_PROGRAM,
    ),
    (
        "keyapp account of another owner",
        replace(KEYAPP, owner=NOT_IN_ANY_TX),
        lambda: RejectCode.TOKEN_ACCOUNT_NOT_OWNED,
    ),
    (
        "keyapp into another treasury account",
        replace(KEYAPP, account=NOT_IN_ANY_TX),
        lambda: RejectCode.PAID_TO_WALLET,
    ),
    (
        "keyapp unbound",
        replace(KEYAPP, reference=NOT_IN_ANY_TX),
        lambda: RejectCode.UNBOUND_PAYMENT,
    ),
    (
        "keyapp bound by its memo",
        replace(KEYAPP, reference=NOT_IN_ANY_TX, intent_id="transfer"),
        lambda: confirmed(KEYAPP, 1000, KEYAPP_SENDER),
    ),
    (
        "keyapp memo without the intent id",
        replace(KEYAPP, reference=NOT_IN_ANY_TX, intent_id="pi_other"),
        lambda: RejectCode.UNBOUND_PAYMENT,
    ),
    (
        "keyapp paid beyond the clock skew before the intent",
        replace(KEYAPP, created=BLOCK_TIME_SKEW + timedelta(seconds=1)),
        lambda: RejectCode.BEFORE_INTENT,
    ),
    (
        "keyapp block time a few seconds before creation is clock skew",
        replace(KEYAPP, created=timedelta(seconds=2)),
        lambda: confirmed(KEYAPP, 1000, KEYAPP_SENDER),
    ),
    (
        "keyapp paid the second the intent was created",
        replace(KEYAPP, created=timedelta(0)),
        lambda: confirmed(KEYAPP, 1000, KEYAPP_SENDER),
    ),
    (
        "keyapp late within grace",
        replace(KEYAPP, expires=timedelta(minutes=-5)),
        lambda: confirmed(KEYAPP, 1000, KEYAPP_SENDER, late=True),
    ),
    (
        "keyapp late at the end of grace",
        replace(KEYAPP, expires=-GRACE),
        lambda: confirmed(KEYAPP, 1000, KEYAPP_SENDER, late=True),
    ),
    (
        "keyapp after grace",
        replace(KEYAPP, expires=-GRACE - timedelta(seconds=1)),
        lambda: RejectCode.EXPIRED,
    ),
    (
        "keyapp paid exactly at expiry",
        replace(KEYAPP, expires=timedelta(0)),
        lambda: confirmed(KEYAPP, 1000, KEYAPP_SENDER),
    ),
    (
        "sol transfer",
        replace(
            KEYAPP,
            fixture="keyapp_validGetSendSOLTransactionResponse_jsonParsed.json",
            reference="2b7iQq3PbWwWTotRSDFNXT9DauU418aCHK4jcAzETUem",
        ),
        lambda: RejectCode.NO_TRANSFER,
    ),
    (
        "failed swap",
        replace(
            KEYAPP,
            fixture="metamask_failed_swap_custom6001_v0_alt.json",
            owner="9az5xpAV8KJ2Q2Jb1ZvBpvfUa5Cj4dZirbgvfPF5XsB8",
            account="5AZA8P8dN5VMvkBeqbP5rJx2pWBr5cUo4FRYXY8LMh5i",
            mint="9m3nh7YDoF1WSYpNxCjKVU8D1MrXsWRic4HqRaTdcTYB",
            reference="9az5xpAV8KJ2Q2Jb1ZvBpvfUa5Cj4dZirbgvfPF5XsB8",
        ),
        lambda: RejectCode.TX_FAILED,
    ),
    (
        "failed token-2022 swap, even unbound",
        replace(
            KEYAPP,
            fixture="metamask_failed_swap_v0_alt_token2022_err.json",
            reference=NOT_IN_ANY_TX,
        ),
        lambda: RejectCode.TX_FAILED,
    ),
    (
        "transfer to self",
        replace(
            KEYAPP,
            fixture="metamask_jup_transferChecked_to_self_legacy.json",
            owner="DtMUkCoeyzs35B6EpQQxPyyog6TRwXxV1W1Acp8nWBNa",
            account="BWqMUT5533X8M4DM3AQvFeAQd451urcVQu3zi6uVxWtT",
            mint=JUP,
            reference="DtMUkCoeyzs35B6EpQQxPyyog6TRwXxV1W1Acp8nWBNa",
        ),
        lambda: RejectCode.NO_TRANSFER,
    ),
    (
        "v0 usdc by cpi, reference in a lookup table",
        V0_ALT,
        lambda: confirmed(V0_ALT, 4608152451, "41fkvu8LhJDqkF325GTz6HuQRvZmCXVtYoYWPZeVCdux"),
    ),
    (
        "token-2022 transfer",
        TOKEN_2022,
        lambda: confirmed(TOKEN_2022, 10_000_000, "EMmTjuHsYCYX7vgPcQ2QVbNwYAwcvGoSMCEaHKc19DdE"),
    ),
    (
        "token-2022 transfer, expecting token",
        replace(TOKEN_2022, program=TOKEN_PROGRAM),
        lambda: RejectCode.WRONG_TOKEN_PROGRAM,
    ),
    (
        "bonk plain transfer",
        BONK_TRANSFER,
        lambda: confirmed(
            BONK_TRANSFER, 3170652014400000, "AC5RDfQFmDS1deWZos921JfqscXdByf8BKHs5ACWjtW2"
        ),
    ),
    (
        "old response without programId",
        NO_PROGRAM_ID,
        lambda: confirmed(NO_PROGRAM_ID, 200000, "Hzn3n914JaSpnxo5mBbmuCDmGL6mxWN9Ac2HzEXFSGtb"),
    ),
    (
        "devnet usdc, version 0 json",
        DEVNET,
        lambda: confirmed(DEVNET, 10000, "BLw3RweJmfbTapJRgnPRvd962YDjFYAnVGd1p5hmZ5tP"),
    ),
    (
        "devnet usdc, unbound",
        replace(DEVNET, reference=NOT_IN_ANY_TX),
        lambda: RejectCode.UNBOUND_PAYMENT,
    ),
    (
        "swap pays usdt by cpi",
        SWAP_2022,
        lambda: confirmed(SWAP_2022, 4239, "4RyuSgGdYeE7Qd4eKsuauTevWRreSfGScYqaygMEJXSq"),
    ),
    (
        "swap: treasury expects wsol, gets usdt",
        replace(SWAP_2022, account="7CoLodcm9h4EAFKpcPbT34yk3MkpeWjsBqXVidfbrfQ7", mint=WSOL),
        lambda: RejectCode.WRONG_MINT,
    ),
    (
        "usdc split, one destination",
        SPLIT_USDC,
        lambda: confirmed(SPLIT_USDC, 9350, "DtMUkCoeyzs35B6EpQQxPyyog6TRwXxV1W1Acp8nWBNa"),
    ),
    ("usdc split, one short", replace(SPLIT_USDC, amount=9351), lambda: RejectCode.UNDERPAID),
    (
        "usdc split to a wallet address used as token account",
        replace(SPLIT_USDC, owner=SELF_OWNED_ACCOUNT, account=NOT_IN_ANY_TX),
        lambda: RejectCode.PAID_TO_WALLET,
    ),
    (
        "usdc split, treasury not among recipients",
        replace(SPLIT_USDC, owner=NOT_IN_ANY_TX, account=NOT_IN_ANY_TX),
        lambda: RejectCode.WRONG_RECIPIENT,
    ),
    (
        "usdc split, account owned by someone else",
        replace(SPLIT_USDC, owner=NOT_IN_ANY_TX),
        lambda: RejectCode.TOKEN_ACCOUNT_NOT_OWNED,
    ),
]


def check(verdict: Verdict, wanted: Want) -> None:
    if isinstance(wanted, RejectCode):
        assert isinstance(verdict, Rejected), verdict
        assert verdict.code is wanted, verdict.message
        assert verdict.message
    else:
        assert verdict == wanted


def test_the_decision_table_covers_every_fixture() -> None:
    assert {case.fixture for _, case, _ in FIXTURE_DECISIONS} == set(FIXTURE_NAMES)


@pytest.mark.parametrize(
    ("case", "wanted"),
    [pytest.param(case, wanted, id=case_id) for case_id, case, wanted in FIXTURE_DECISIONS],
)
def test_decide_on_real_responses(case: FixtureCase, wanted: Any) -> None:
    now = block_time_of(case.fixture) + case.now
    verdict = decide_raw(load_raw(case.fixture), case.expectation(), now, GRACE)

    check(verdict, wanted())


def test_confirmed_block_time_is_aware_utc() -> None:
    verdict = decide_raw(load_raw(KEYAPP.fixture), KEYAPP.expectation(), KEYAPP_TIME, GRACE)

    assert isinstance(verdict, Confirmed)
    assert verdict.block_time == KEYAPP_TIME
    assert verdict.block_time is not None
    assert verdict.block_time.utcoffset() == timedelta(0)


def test_keyapp_memo_text_is_transfer() -> None:
    assert parse_transaction(load_raw(KEYAPP.fixture)).memos == ("transfer",)


# -- synthetic transactions for rules the fixtures do not show -----------------------------------

TREASURY = "treasury-wallet"
TREASURY_ATA = "treasury-usdc-ata"
BUYER = "buyer-wallet"
BUYER_ATA = "buyer-usdc-ata"
REFERENCE = "reference-key"
FEE_PAYER = "fee-payer"
T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Bal:
    """A token account's balance before and after (None: no entry, e.g. created or closed)."""

    account: str
    owner: str
    pre: int | None
    post: int | None
    mint: str = USDC
    program: str | None = TOKEN_PROGRAM
    decimals: int = 6


@dataclass(frozen=True)
class Tx:
    """A synthetic jsonParsed getTransaction result."""

    balances: tuple[Bal, ...] = ()
    keys: tuple[str, ...] = (REFERENCE,)
    memos: tuple[str, ...] = ()
    inner_memos: tuple[str, ...] = ()
    err: object = None
    block_time: int | None = int(T0.timestamp())
    extra_meta: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        keys = list(dict.fromkeys([FEE_PAYER, *self.keys, *(b.account for b in self.balances)]))
        index = {key: i for i, key in enumerate(keys)}

        def entry(bal: Bal, amount: int) -> dict[str, Any]:
            raw = {
                "accountIndex": index[bal.account],
                "mint": bal.mint,
                "owner": bal.owner,
                "uiTokenAmount": {
                    "amount": str(amount),
                    "decimals": bal.decimals,
                    "uiAmount": amount / 10**bal.decimals,  # present but never used
                },
            }
            return raw if bal.program is None else {**raw, "programId": bal.program}

        def memo(text: str) -> dict[str, Any]:
            return {"parsed": text, "program": "spl-memo", "programId": MEMO_PROGRAM_V2}

        return {
            "slot": 4242,
            "blockTime": self.block_time,
            "meta": {
                "err": self.err,
                "innerInstructions": [
                    {"index": 0, "instructions": [memo(text) for text in self.inner_memos]}
                ],
                "preTokenBalances": [entry(b, b.pre) for b in self.balances if b.pre is not None],
                "postTokenBalances": [
                    entry(b, b.post) for b in self.balances if b.post is not None
                ],
                **self.extra_meta,
            },
            "transaction": {
                "signatures": ["synthetic-signature"],
                "message": {
                    "accountKeys": [
                        {"pubkey": key, "signer": key == FEE_PAYER, "source": "transaction"}
                        for key in keys
                    ],
                    "instructions": [memo(text) for text in self.memos],
                },
            },
        }


def expect(**overrides: Any) -> PaymentExpectation:
    base = PaymentExpectation(
        intent_id="pi_123",
        amount=1000,
        mint=USDC,
        token_program=TOKEN_PROGRAM,
        treasury_owner=TREASURY,
        treasury_token_account=TREASURY_ATA,
        reference=REFERENCE,
        created_at=T0 - timedelta(hours=1),
        expires_at=T0 + timedelta(hours=1),
    )
    return replace(base, **overrides)


PAY_1000 = (Bal(BUYER_ATA, BUYER, 5000, 4000), Bal(TREASURY_ATA, TREASURY, 0, 1000))


def ok(received: int = 1000, payer: str = BUYER, **flags: Any) -> Confirmed:
    return Confirmed(received=received, payer=payer, slot=4242, block_time=T0, **flags)


SYNTHETIC: list[tuple[str, Tx, PaymentExpectation, Want]] = [
    ("plain payment", Tx(PAY_1000), expect(), ok()),
    (
        "into a new token account (no pre entry)",
        Tx((Bal(BUYER_ATA, BUYER, 1000, 0), Bal(TREASURY_ATA, TREASURY, None, 1000))),
        expect(),
        ok(),
    ),
    (
        "two transfers from two payers add up; the larger names the payer",
        Tx(
            (
                Bal("a-ata", "payer-a", 400, 0),
                Bal("b-ata", "payer-b", 600, 0),
                Bal(TREASURY_ATA, TREASURY, 50, 1050),
            )
        ),
        expect(),
        ok(payer="payer-b"),
    ),
    (
        "token-2022 transfer fee withheld: what arrives counts",
        Tx(
            (
                Bal(BUYER_ATA, BUYER, 1000, 0, program=TOKEN_2022_PROGRAM),
                Bal(TREASURY_ATA, TREASURY, 0, 990, program=TOKEN_2022_PROGRAM),
            )
        ),
        expect(token_program=TOKEN_2022_PROGRAM),
        RejectCode.UNDERPAID,
    ),
    (
        "minted straight to the treasury: payer falls back to the fee payer",
        Tx((Bal(TREASURY_ATA, TREASURY, 0, 1000),)),
        expect(),
        ok(payer=FEE_PAYER),
    ),
    (
        "a spend of another mint does not name the payer",
        Tx((*PAY_1000, Bal("other-ata", "whale", 10**9, 0, mint=BONK))),
        expect(),
        ok(),
    ),
    (
        "failed, whatever the balances say",
        Tx(PAY_1000, err={"InstructionError": [0, "Custom"]}),
        expect(),
        RejectCode.TX_FAILED,
    ),
    (
        "failed with an empty error object",
        Tx(PAY_1000, err={}),
        expect(),
        RejectCode.TX_FAILED,
    ),
    ("unbound", Tx(PAY_1000, keys=()), expect(), RejectCode.UNBOUND_PAYMENT),
    (
        "bound by a memo made by cpi",
        Tx(PAY_1000, keys=(), inner_memos=("order pi_123",)),
        expect(),
        ok(),
    ),
    (
        "an empty intent id binds nothing",
        Tx(PAY_1000, keys=(), memos=("anything",)),
        expect(intent_id=""),
        RejectCode.UNBOUND_PAYMENT,
    ),
    (
        "unbound is checked before the amount",
        Tx((Bal(TREASURY_ATA, TREASURY, 0, 1),), keys=()),
        expect(),
        RejectCode.UNBOUND_PAYMENT,
    ),
    (
        "before the intent is checked before the amount",
        Tx((Bal(TREASURY_ATA, TREASURY, 0, 1),)),
        expect(created_at=T0 + BLOCK_TIME_SKEW + timedelta(seconds=1)),
        RejectCode.BEFORE_INTENT,
    ),
    (
        "underpaid is reported before expiry",
        Tx((Bal(TREASURY_ATA, TREASURY, 0, 1),)),
        expect(expires_at=T0 - timedelta(days=1)),
        RejectCode.UNDERPAID,
    ),
    (
        "unknown block time never rejects on time",
        Tx(PAY_1000, block_time=None),
        expect(created_at=T0 + timedelta(days=1), expires_at=T0 + timedelta(days=2)),
        Confirmed(received=1000, payer=BUYER, slot=4242, block_time=None),
    ),
    (
        "treasury wallet address used as a token account",
        Tx((Bal(BUYER_ATA, BUYER, 1000, 0), Bal(TREASURY, TREASURY, 0, 1000))),
        expect(),
        RejectCode.PAID_TO_WALLET,
    ),
    (
        "another token account of the treasury",
        Tx((Bal(BUYER_ATA, BUYER, 1000, 0), Bal("treasury-spare-ata", TREASURY, 0, 1000))),
        expect(),
        RejectCode.PAID_TO_WALLET,
    ),
    (
        "another mint into another treasury account",
        Tx((Bal(BUYER_ATA, BUYER, 9, 0, mint=BONK), Bal("bonk-ata", TREASURY, 0, 9, mint=BONK))),
        expect(),
        RejectCode.WRONG_MINT,
    ),
    (
        "another mint on the treasury account itself, with more decimals",
        Tx((Bal(TREASURY_ATA, TREASURY, 0, 10**12, mint=BONK, decimals=9),)),
        expect(),
        RejectCode.WRONG_MINT,
    ),
    (
        "treasury token account changed owner in the transaction",
        Tx(
            (
                Bal(TREASURY_ATA, TREASURY, 0, None),
                Bal(TREASURY_ATA, "attacker", None, 1000),
            )
        ),
        expect(),
        RejectCode.TOKEN_ACCOUNT_NOT_OWNED,
    ),
    (
        "treasury pays out instead",
        Tx((Bal(TREASURY_ATA, TREASURY, 1000, 0), Bal(BUYER_ATA, BUYER, 0, 1000))),
        expect(),
        RejectCode.WRONG_RECIPIENT,
    ),
    ("no token balances at all", Tx(), expect(), RejectCode.NO_TRANSFER),
    (
        "one base unit short",
        Tx((Bal(BUYER_ATA, BUYER, 5000, 4001), Bal(TREASURY_ATA, TREASURY, 0, 999))),
        expect(),
        RejectCode.UNDERPAID,
    ),
    (
        "the exact amount is enough",
        Tx((Bal(BUYER_ATA, BUYER, 5000, 4000), Bal(TREASURY_ATA, TREASURY, 7, 1007))),
        expect(),
        ok(),
    ),
    (
        "the right mint under the wrong token program",
        Tx(
            (
                Bal(BUYER_ATA, BUYER, 1000, 0, program=TOKEN_2022_PROGRAM),
                Bal(TREASURY_ATA, TREASURY, 0, 1000, program=TOKEN_2022_PROGRAM),
            )
        ),
        expect(),
        RejectCode.WRONG_TOKEN_PROGRAM,
    ),
    (
        "a token-2022 intent paid through the classic token program",
        Tx(PAY_1000),
        expect(token_program=TOKEN_2022_PROGRAM),
        RejectCode.WRONG_TOKEN_PROGRAM,
    ),
    (
        "treasury moves to itself: nets to zero",
        Tx((Bal(TREASURY_ATA, TREASURY, 1000, 1000),)),
        expect(),
        RejectCode.NO_TRANSFER,
    ),
    (
        "response without programId is accepted for either program",
        Tx(tuple(replace(b, program=None) for b in PAY_1000)),
        expect(token_program=TOKEN_2022_PROGRAM),
        ok(),
    ),
    (
        "amount above 2**53 stays exact",
        Tx(
            (
                Bal(BUYER_ATA, BUYER, 2**63, 2**63 - (2**53 + 1)),
                Bal(TREASURY_ATA, TREASURY, 0, 2**53 + 1),
            )
        ),
        expect(amount=2**53 + 1),
        ok(received=2**53 + 1),
    ),
]


@pytest.mark.parametrize(
    ("tx", "expected", "wanted"),
    [pytest.param(tx, expected, wanted, id=case_id) for case_id, tx, expected, wanted in SYNTHETIC],
)
def test_decide_on_synthetic_transactions(
    tx: Tx, expected: PaymentExpectation, wanted: Want
) -> None:
    check(decide_raw(tx.json(), expected, T0, GRACE), wanted)


@pytest.mark.parametrize(
    ("now", "late"),
    [(T0 + timedelta(hours=1), False), (T0 + timedelta(hours=1, seconds=1), True)],
)
def test_unknown_block_time_is_late_once_now_is_past_expiry(now: datetime, late: bool) -> None:
    # The payment exists at `now`, so it is surely on time while now <= expires_at; after that
    # it cannot be shown on time, so reconciliation gets to look at it.
    verdict = decide_raw(Tx(PAY_1000, block_time=None).json(), expect(), now, GRACE)

    assert isinstance(verdict, Confirmed)
    assert verdict.late is late


def test_decide_takes_a_parsed_transaction() -> None:
    tx = parse_transaction(Tx(PAY_1000).json())

    assert decide(tx, expect(), T0, GRACE) == ok()


@pytest.mark.parametrize(
    ("response", "wanted"),
    [
        (None, Pending(PendingReason.NOT_FOUND)),
        ({"jsonrpc": "2.0", "result": None, "id": 1}, Pending(PendingReason.NOT_FOUND)),
    ],
)
def test_decide_raw_waits_when_the_transaction_is_not_found(
    response: dict[str, Any] | None, wanted: Pending
) -> None:
    assert decide_raw(response, expect(), T0, GRACE) == wanted


def test_decide_raw_waits_on_an_rpc_error_envelope() -> None:
    envelope = {"jsonrpc": "2.0", "error": {"code": -32005, "message": "busy"}, "id": 1}

    verdict = decide_raw(envelope, expect(), T0, GRACE)

    assert isinstance(verdict, Pending)
    assert verdict.reason is PendingReason.RPC_UNAVAILABLE
    assert "busy" in verdict.detail


def test_decide_raw_rejects_a_malformed_response() -> None:
    broken = Tx(PAY_1000).json()
    broken["meta"]["postTokenBalances"][0]["uiTokenAmount"]["amount"] = "1e3"

    verdict = decide_raw(broken, expect(), T0, GRACE)

    assert isinstance(verdict, Rejected)
    assert verdict.code is RejectCode.MALFORMED_TX
    assert "not a raw u64 amount" in verdict.message


def test_decide_raw_rejects_a_token_account_listed_twice() -> None:
    # The treasury's token account again at a new index, with its balance there and no pre
    # balance: counted per index, the whole balance would look received.
    broken = Tx(PAY_1000).json()
    keys = broken["transaction"]["message"]["accountKeys"]
    post = broken["meta"]["postTokenBalances"]
    entry = copy.deepcopy(post[0])
    keys.append(copy.deepcopy(keys[entry["accountIndex"]]))
    entry["accountIndex"] = len(keys) - 1
    post.append(entry)

    verdict = decide_raw(broken, expect(), T0, GRACE)

    assert isinstance(verdict, Rejected)
    assert verdict.code is RejectCode.MALFORMED_TX
    assert "listed again" in verdict.message


def test_decide_raw_rejects_an_envelope_with_neither_result_nor_error() -> None:
    verdict = decide_raw({"jsonrpc": "2.0", "id": 1}, expect(), T0, GRACE)

    assert isinstance(verdict, Rejected)
    assert verdict.code is RejectCode.MALFORMED_TX


def test_decide_raw_accepts_an_envelope() -> None:
    envelope = {"jsonrpc": "2.0", "result": Tx(PAY_1000).json(), "id": 1}

    assert decide_raw(envelope, expect(), T0, GRACE) == ok()


# -- fuzz: mutated real responses never make decide_raw raise ------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
MUTATIONS = ("drop", "replace", "truncate", "retype", "corrupt")
FUZZ = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# The first table case of each fixture: an intent the unmutated response pays (or nearly), so
# mutations reach the amount rules instead of stopping at the binding.
FUZZ_CASES = {case.fixture: case for _, case, _ in reversed(FIXTURE_DECISIONS)}


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path from the root to a value inside `node`."""
    found: list[tuple[Any, ...]] = []
    children = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in children:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


def corrupt(value: Any, data: st.DataObject) -> Any:
    """A plausible corruption: bytes flipped inside base64, characters changed, numbers shifted."""
    if isinstance(value, str):
        try:
            wire = bytearray(base64.b64decode(value, validate=True))
        except ValueError:
            wire = bytearray()
        if wire:
            at = data.draw(st.integers(0, len(wire) - 1))
            wire[at] = data.draw(st.integers(0, 255))
            return base64.b64encode(bytes(wire[: data.draw(st.integers(0, len(wire)))])).decode()
        at = data.draw(st.integers(0, len(value)))
        return (
            value[:at] + data.draw(st.sampled_from(["!", "0", "=", "-", "", "é"])) + value[at + 1 :]
        )
    if isinstance(value, int) and not isinstance(value, bool):
        return value + data.draw(st.sampled_from([-(2**64), -1, 1, 2**64]))
    return data.draw(JSON_VALUES)


def retype(value: Any) -> Any:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return {str(i): item for i, item in enumerate(value)}
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, str):
        return len(value)
    return 0


def mutate(doc: Any, data: st.DataObject) -> Any:
    for _ in range(data.draw(st.integers(1, 4))):
        where = paths(doc)
        if not where:
            break
        path = data.draw(st.sampled_from(where))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key, value = path[-1], parent[path[-1]]
        operation = data.draw(st.sampled_from(MUTATIONS))
        if operation == "drop":
            del parent[key]
        elif operation == "replace":
            parent[key] = data.draw(JSON_VALUES)
        elif operation == "truncate" and isinstance(value, list | str):
            parent[key] = value[: data.draw(st.integers(0, max(len(value) - 1, 0)))]
        elif operation == "retype":
            parent[key] = retype(value)
        else:
            parent[key] = corrupt(value, data)
    return doc


def assert_never_raises(doc: Any, fixture: str) -> None:
    with contextlib.suppress(MalformedTransaction):
        parse_transaction(doc)
    case = FUZZ_CASES[fixture]
    now = block_time_of(fixture) + case.now
    verdict = decide_raw(doc, case.expectation(), now, GRACE)
    assert isinstance(verdict, Confirmed | Pending | Rejected)


@FUZZ
@given(name=st.sampled_from(FIXTURE_NAMES), data=st.data())
def test_decide_raw_never_raises_on_mutated_real_responses(name: str, data: st.DataObject) -> None:
    assert_never_raises(mutate(copy.deepcopy(load_raw(name)), data), name)


@FUZZ
@given(name=st.sampled_from(BASE64_NAMES), data=st.data())
def test_decide_raw_never_raises_on_corrupted_wire_bytes(name: str, data: st.DataObject) -> None:
    doc = copy.deepcopy(load_raw(name))
    wire = bytearray(base64.b64decode(doc["transaction"][0]))
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(wire) - 1))
        wire[at] = data.draw(st.integers(0, 255))
    doc["transaction"][0] = base64.b64encode(
        bytes(wire[: data.draw(st.integers(0, len(wire)))])
    ).decode()

    assert_never_raises(doc, name)


@FUZZ
@given(doc=JSON_VALUES)
def test_decide_raw_never_confirms_arbitrary_json(doc: Any) -> None:
    verdict = decide_raw(doc, expect(), T0, GRACE)

    # Random JSON never pays anyone: it may wait (nothing found) or be refused, never credit.
    assert isinstance(verdict, Pending | Rejected)
