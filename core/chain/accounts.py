"""Checking the configured mint and treasury against the chain (start-up and preflight).

The token program and decimals are read from the mint account itself, so a configuration
that names a Token-2022 mint as an SPL Token one (or the wrong decimals) cannot go unnoticed.
The treasury token account may not exist yet (the first payment can create it); when it
does exist it must hold the configured mint and belong to the treasury wallet.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from core.chain.verdict import TOKEN_2022_PROGRAM, TOKEN_PROGRAM
from core.config import PaymentConfig, associated_token_account


class AccountReader(Protocol):
    async def get_account_info_json_parsed(self, address: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class AccountCheck:
    """What the chain says about the payment configuration: problems stop the start."""

    token_program: str | None = None
    decimals: int | None = None
    treasury_account_exists: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _parsed(account: dict[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    """(owner program, parsed data) of a jsonParsed account, tolerating odd shapes."""
    if not isinstance(account, dict):
        return None, {}
    owner = account.get("owner")
    data = account.get("data")
    parsed = data.get("parsed") if isinstance(data, dict) else None
    return (owner if isinstance(owner, str) else None), (parsed if isinstance(parsed, dict) else {})


def judge_mint(
    payment: PaymentConfig, mint: dict[str, Any] | None
) -> tuple[str | None, int | None, list[str], list[str]]:
    """Pure: (token program, decimals, problems, notes) of the configured mint's account."""
    program, data = _parsed(mint)
    if mint is None:
        return None, None, [f"PAYOPS_TOKEN_MINT {payment.mint} does not exist on chain"], []
    if program not in (TOKEN_PROGRAM, TOKEN_2022_PROGRAM) or data.get("type") != "mint":
        return (
            None,
            None,
            [f"PAYOPS_TOKEN_MINT {payment.mint} is not a token mint (owner {program})"],
            [],
        )
    info = data.get("info")
    raw = info.get("decimals") if isinstance(info, dict) else None
    decimals = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    notes = []
    if program != payment.token_program:
        notes.append(f"the mint belongs to {program}; that program is used")
    if decimals is not None and decimals != payment.decimals:
        notes.append(f"the mint has {decimals} decimals; PAYOPS_TOKEN_DECIMALS is ignored")
    return program, decimals, [], notes


def judge_treasury(
    payment: PaymentConfig, treasury: dict[str, Any] | None
) -> tuple[list[str], list[str]]:
    """Pure: (problems, notes) of the treasury token account's jsonParsed account."""
    account = payment.treasury_token_account
    if treasury is None:
        return [], [
            f"treasury token account {account} does not exist yet; the first payment may create it"
        ]
    program, data = _parsed(treasury)
    info = data.get("info")
    if (
        data.get("type") != "account"
        or program != payment.token_program
        or not isinstance(info, dict)
    ):
        return [
            f"treasury token account {account} is not a {payment.token_program} token account"
        ], []
    problems = []
    if info.get("mint") != payment.mint:
        problems.append(
            f"treasury token account {account} holds mint {info.get('mint')}, not {payment.mint}"
        )
    if info.get("owner") != payment.treasury_owner:
        problems.append(
            f"treasury token account {account} belongs to {info.get('owner')}, "
            f"not to PAYOPS_TREASURY_OWNER {payment.treasury_owner}"
        )
    return problems, []


async def check_accounts(
    reader: AccountReader, payment: PaymentConfig, *, explicit_token_account: str | None
) -> tuple[PaymentConfig, AccountCheck]:
    """Read the mint, then the treasury token account of its program; raises RpcUnavailable.

    Returns the payment configuration corrected by the chain (token program, decimals, and
    the associated token account of that program unless one was configured explicitly)."""
    program, decimals, problems, notes = judge_mint(
        payment, await reader.get_account_info_json_parsed(payment.mint)
    )
    if program is not None:
        payment = replace(
            payment,
            token_program=program,
            decimals=payment.decimals if decimals is None else decimals,
            treasury_token_account=explicit_token_account
            or associated_token_account(payment.treasury_owner, payment.mint, program),
        )
    treasury = await reader.get_account_info_json_parsed(payment.treasury_token_account)
    t_problems, t_notes = judge_treasury(payment, treasury)
    check = AccountCheck(
        program, decimals, treasury is not None, problems + t_problems, notes + t_notes
    )
    return payment, check
