"""Each way a payment can be wrong, made with a real transaction on the local chain.

Every case pays (or fails to pay) the intent's reference on chain, waits until the
transaction is finalized, then verifies it through the real service and checks the HTTP
answer and the database: the intent's status, no ledger transaction, a zero balance, the
recorded attempt, and the ledger's invariants.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer
from spl.token import instructions as spl
from spl.token.models import AuthorityType, InitializeAccount3Params, SetAuthorityParams

from localnet.layouts import MINT_LEN, TOKEN_ACCOUNT_LEN
from localnet.tokens import (
    associated_token_address,
    create_associated_token_account_instruction,
    create_mint_instructions,
    mint_to_instruction,
    payment_instructions,
    transfer_checked_instruction,
)
from tests.e2e.facts import assert_credited_once, assert_not_credited, facts, new_user
from tests.e2e.harness import Chain, Service

Intent = dict[str, Any]
Payment = Callable[[Chain, Intent], Awaitable[str]]


def _keys(chain: Chain, intent: Intent) -> tuple[Pubkey, Pubkey, Pubkey, Pubkey]:
    """(payer, mint, token program, reference)."""
    return (
        Pubkey.from_string(chain.info.payer),
        Pubkey.from_string(intent["mint"]),
        Pubkey.from_string(intent["token_program"]),
        Pubkey.from_string(intent["reference"]),
    )


async def pay_correctly(chain: Chain, intent: Intent, **overrides: Any) -> str:
    overrides.setdefault("decimals", chain.info.decimals)
    signature = await chain.wallet.pay(intent, **overrides)
    await chain.finalized(signature)
    return signature


async def more_than_the_payer_holds(chain: Chain, intent: Intent) -> str:
    """A transfer that lands with an error: sent without preflight, it runs, fails on
    `insufficient funds`, is charged its fee and is stored with `meta.err` set."""
    payer, mint, program, reference = _keys(chain, intent)
    ixs = payment_instructions(
        payer,
        mint=mint,
        recipient_owner=Pubkey.from_string(intent["recipient"]),
        amount=chain.info.payer_token_balance + 1,
        decimals=chain.info.decimals,
        token_program=program,
        references=[reference],
    )
    signature = await chain.send(ixs, skip_preflight=True)
    status = await chain.finalized(signature, ok=False)
    assert status["err"] is not None, status
    return signature


async def another_mint(chain: Chain, intent: Intent) -> str:
    """A second mint (other decimals), created, funded and paid with real transactions."""
    payer, _, program, _ = _keys(chain, intent)
    treasury = Pubkey.from_string(intent["recipient"])
    other = Keypair()
    rent = int(await chain.call("getMinimumBalanceForRentExemption", [MINT_LEN]))
    ixs = [
        *create_mint_instructions(
            payer, other.pubkey(), decimals=9, mint_authority=payer, lamports=rent
        ),
        create_associated_token_account_instruction(payer, payer, other.pubkey(), program),
        create_associated_token_account_instruction(payer, treasury, other.pubkey(), program),
        mint_to_instruction(
            other.pubkey(),
            associated_token_address(payer, other.pubkey(), program),
            payer,
            10**12,
            9,
            program,
        ),
    ]
    await chain.finalized(await chain.send(ixs, [other]))
    return await pay_correctly(chain, intent, mint=str(other.pubkey()), decimals=9)


async def another_owner(chain: Chain, intent: Intent) -> str:
    stranger = str(Keypair().pubkey())
    return await pay_correctly(chain, intent, recipient=stranger, create_recipient_account=True)


async def another_token_account_of_the_treasury(chain: Chain, intent: Intent) -> str:
    """The right mint to a token account the treasury owns that is not its associated one."""
    payer, mint, program, reference = _keys(chain, intent)
    account = Keypair()
    rent = int(await chain.call("getMinimumBalanceForRentExemption", [TOKEN_ACCOUNT_LEN]))
    ixs = [
        create_account(
            CreateAccountParams(
                from_pubkey=payer,
                to_pubkey=account.pubkey(),
                lamports=rent,
                space=TOKEN_ACCOUNT_LEN,
                owner=program,
            )
        ),
        spl.initialize_account3(
            InitializeAccount3Params(
                program_id=program,
                account=account.pubkey(),
                mint=mint,
                owner=Pubkey.from_string(intent["recipient"]),
            )
        ),
        transfer_checked_instruction(
            associated_token_address(payer, mint, program),
            mint,
            account.pubkey(),
            payer,
            int(intent["amount"]),
            chain.info.decimals,
            program,
            [reference],
        ),
    ]
    signature = await chain.send(ixs, [account])
    await chain.finalized(signature)
    return signature


async def _set_owner(chain: Chain, account: Pubkey, owner: Keypair, new: Pubkey) -> None:
    ix = spl.set_authority(
        SetAuthorityParams(
            program_id=Pubkey.from_string(chain.info.token_program),
            account=account,
            authority=AuthorityType.ACCOUNT_OWNER,
            current_authority=owner.pubkey(),
            new_authority=new,
        )
    )
    await chain.finalized(await chain.send([ix], [owner]))


async def the_treasury_account_handed_to_someone_else(chain: Chain, intent: Intent) -> str:
    """The treasury's token account, reassigned (SPL Token's SetAuthority AccountOwner) to
    another wallet, receives the payment; then it is handed back, so that later payments
    to the shared chain work again."""
    account = Pubkey.from_string(intent["recipient_token_account"])
    treasury, stranger = chain.info.treasury_keypair(), Keypair()
    await _set_owner(chain, account, treasury, stranger.pubkey())
    try:
        return await pay_correctly(chain, intent)
    finally:
        await _set_owner(chain, account, stranger, treasury.pubkey())


async def less_than_the_price(chain: Chain, intent: Intent) -> str:
    return await pay_correctly(chain, intent, amount=int(intent["amount"]) - 1)


async def without_reference_or_memo(chain: Chain, intent: Intent) -> str:
    return await pay_correctly(chain, intent, with_reference=False, memo=None)


async def sol_to_the_treasury_wallet(chain: Chain, intent: Intent) -> str:
    """A system transfer carrying the reference as an extra read-only key, as Solana Pay
    marks a SOL payment: bound to the intent, but no token moves."""
    payer, _, _, reference = _keys(chain, intent)
    ix = transfer(
        TransferParams(
            from_pubkey=payer, to_pubkey=Pubkey.from_string(intent["recipient"]), lamports=10**7
        )
    )
    marked = Instruction(
        ix.program_id, ix.data, [*ix.accounts, AccountMeta(reference, False, False)]
    )
    signature = await chain.send([marked])
    await chain.finalized(signature)
    return signature


async def to_the_payer_itself(chain: Chain, intent: Intent) -> str:
    return await pay_correctly(chain, intent, recipient=chain.info.payer)


# (code, payment, whether the rejection closes the intent)
CASES: list[tuple[str, Payment, bool]] = [
    ("tx_failed", more_than_the_payer_holds, False),
    ("wrong_mint", another_mint, False),
    ("wrong_recipient", another_owner, False),
    ("paid_to_wallet_not_token_account", another_token_account_of_the_treasury, False),
    ("token_account_not_owned_by_treasury", the_treasury_account_handed_to_someone_else, False),
    ("underpaid", less_than_the_price, False),  # a top-up may still complete it
    ("unbound_payment", without_reference_or_memo, False),
    ("no_transfer", sol_to_the_treasury_wallet, False),
    ("no_transfer", to_the_payer_itself, False),
]


@pytest.mark.parametrize(
    ("code", "payment", "closes"), CASES, ids=[payment.__name__ for _, payment, _ in CASES]
)
async def test_verify_rejects_a_real_payment_that_does_not_pay_the_intent(
    chain: Chain, service: Service, code: str, payment: Payment, closes: bool
) -> None:
    user = new_user(code)
    intent = await service.create_intent(user, credits=4)
    signature = await payment(chain, intent)

    answer = await service.verify(user, intent, signature)

    assert answer.status == 422, answer
    assert answer.error_code == code, answer
    found = await assert_not_credited(service, intent, status="REJECTED" if closes else "PENDING")
    assert found.reject_code == (code if closes else None)
    assert found.attempts == [("rejected", code)]
    assert (await service.credits(user))["balance"] == 0

    # A rejection that does not close the intent leaves it payable; one that closes it
    # refuses even a correct payment afterwards.
    good = await pay_correctly(chain, intent, memo=intent["memo"])
    after = await service.verify(user, intent, good)
    if closes:
        assert after.status == 409, after
        assert after.error_code == "intent_rejected"
        await assert_not_credited(service, intent, status="REJECTED")
    else:
        assert after.status == 200, after
        await assert_credited_once(service, intent, good)


async def test_a_memo_with_the_intent_id_binds_a_payment_without_the_reference(
    chain: Chain, service: Service
) -> None:
    user = new_user("memo")
    intent = await service.create_intent(user, credits=2)
    signature = await pay_correctly(chain, intent, with_reference=False, memo=intent["memo"])

    answer = await service.verify(user, intent, signature)

    assert answer.status == 200, answer
    await assert_credited_once(service, intent, signature)


async def test_a_signature_that_paid_one_intent_is_refused_for_any_other(
    chain: Chain, service: Service
) -> None:
    owner, thief = new_user("owner"), new_user("thief")
    paid = await service.create_intent(owner, credits=6)
    signature = await pay_correctly(chain, paid)
    assert (await service.verify(owner, paid, signature)).status == 200

    stolen = await service.create_intent(thief, credits=6)
    answer = await service.verify(thief, stolen, signature)

    assert answer.status == 409, answer
    assert answer.error_code == "signature_already_used"
    found = await assert_not_credited(service, stolen)
    assert found.attempts == [("conflict", "signature_already_used")]

    # whoever asks: the payer's own second intent cannot reuse it either
    again = await service.create_intent(owner, credits=6)
    answer = await service.verify(owner, again, signature)
    assert answer.status == 409, answer
    assert answer.error_code == "signature_already_used"
    found = await facts(service.pool, again["id"])
    assert (found.status, found.purchases) == ("PENDING", 0)

    # and the confirmed intent refuses any other transaction
    second = await pay_correctly(chain, paid, memo="a second payment")
    answer = await service.verify(owner, paid, second)
    assert answer.status == 409, answer
    assert answer.error_code == "intent_already_confirmed"

    await assert_credited_once(service, paid, signature)
    assert (await service.credits(owner))["balance"] == 6
    assert (await service.credits(thief))["balance"] == 0


@pytest.mark.parametrize(
    ("signature", "code"),
    [
        ("not-a-signature", "invalid_signature"),
        (12345, "invalid_request"),
        ("1" * 88, "invalid_signature"),  # base58, but 88 bytes, not 64
        ("0OIl" * 22, "invalid_signature"),  # not base58
    ],
    ids=["too-short", "not-a-string", "88-bytes", "not-base58"],
)
async def test_a_malformed_signature_is_bad_input(
    service: Service, signature: object, code: str
) -> None:
    user = new_user("malformed")
    intent = await service.create_intent(user)

    path = f"/v1/purchase-intents/{intent['id']}/verify"
    answer = await service.request("POST", path, user=user, body={"signature": signature})

    assert answer.status == 400, answer
    assert answer.error_code == code
    found = await assert_not_credited(service, intent)
    assert found.attempts == []


async def test_a_signature_the_chain_never_saw_stays_pending(service: Service) -> None:
    user = new_user("unknown")
    intent = await service.create_intent(user)
    unknown = str(Signature(os.urandom(64)))

    answer = await service.verify(user, intent, unknown)

    assert answer.status == 202, answer
    assert answer.body["reason"] == "tx_not_found"
    assert int(answer.headers["Retry-After"]) > 0
    found = await assert_not_credited(service, intent)
    assert found.attempts == [("pending", "tx_not_found")]
