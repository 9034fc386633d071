"""`payops preflight`'s chain checks, pure: the mint, the treasury wallet and its token
account as the node's jsonParsed JSON shows them."""

from __future__ import annotations

from typing import Any

from core.chain.accounts import judge_mint, judge_treasury
from core.chain.verdict import TOKEN_2022_PROGRAM
from core.config import PaymentConfig, Settings, associated_token_account
from payops.preflight_checks import Check, Status, program_name


def mint_checks(
    settings: Settings, payment: PaymentConfig, mint: dict[str, Any] | None
) -> list[Check]:
    """The mint exists, is a token mint, and its program and decimals are the configured ones."""
    g = "chain"
    program, decimals, problems, _ = judge_mint(payment, mint)
    if problems:
        skipped = "not checked: no mint"
        return [
            Check(
                g,
                "token_mint",
                Status.FAIL,
                problems[0],
                "check PAYOPS_TOKEN_MINT, and that PAYOPS_SOLANA_RPC_URL is the right cluster "
                "(a devnet mint does not exist on mainnet)",
            ),
            Check(g, "token_program", Status.SKIP, skipped),
            Check(g, "token_decimals", Status.SKIP, skipped),
        ]
    out = [
        Check(
            g,
            "token_mint",
            Status.OK,
            f"{payment.mint} is a mint of the {program_name(program)} program",
        )
    ]
    if program != settings.token_program:
        out.append(
            Check(
                g,
                "token_program",
                Status.FAIL,
                f"the mint belongs to {program_name(program)} ({program}); PAYOPS_TOKEN_PROGRAM is "
                f"{program_name(settings.token_program)}",
                f"set PAYOPS_TOKEN_PROGRAM={program}",
            )
        )
    else:
        out.append(Check(g, "token_program", Status.OK, f"{program_name(program)} ({program})"))
    if decimals is None:
        out.append(Check(g, "token_decimals", Status.FAIL, "the mint shows no decimals"))
    elif decimals != settings.token_decimals:
        out.append(
            Check(
                g,
                "token_decimals",
                Status.FAIL,
                f"the mint has {decimals} decimals; PAYOPS_TOKEN_DECIMALS is "
                f"{settings.token_decimals} (Solana Pay amounts would be off by "
                f"10^{abs(decimals - settings.token_decimals)})",
                f"set PAYOPS_TOKEN_DECIMALS={decimals}",
            )
        )
    else:
        out.append(Check(g, "token_decimals", Status.OK, f"{decimals}, as configured"))
    return out


def owner_check(payment: PaymentConfig, owner: dict[str, Any] | None) -> Check:
    """PAYOPS_TREASURY_OWNER must be a wallet, not a token account or a mint (a common slip)."""
    data = (owner or {}).get("data")
    parsed = data.get("parsed") if isinstance(data, dict) else None
    kind = parsed.get("type") if isinstance(parsed, dict) else None
    if kind == "account":
        info = parsed.get("info") if isinstance(parsed, dict) else None
        wallet = info.get("owner") if isinstance(info, dict) else None
        return Check(
            "chain",
            "treasury_owner",
            Status.FAIL,
            f"PAYOPS_TREASURY_OWNER {payment.treasury_owner} is a token account, not a wallet",
            f"set PAYOPS_TREASURY_OWNER={wallet} (the wallet that owns it) and, to keep this "
            f"token account, PAYOPS_TREASURY_TOKEN_ACCOUNT={payment.treasury_owner}",
        )
    if kind == "mint":
        return Check(
            "chain",
            "treasury_owner",
            Status.FAIL,
            f"PAYOPS_TREASURY_OWNER {payment.treasury_owner} is a mint, not a wallet",
            "set PAYOPS_TREASURY_OWNER to the treasury wallet's address",
        )
    state = "on chain" if owner is not None else "no account yet (a wallet needs none to be paid)"
    return Check("chain", "treasury_owner", Status.OK, f"wallet {payment.treasury_owner}, {state}")


def treasury_check(
    payment: PaymentConfig, account: dict[str, Any] | None, *, explicit: bool
) -> Check:
    """The treasury token account exists, holds the mint and belongs to the treasury wallet."""
    address = payment.treasury_token_account
    source = "PAYOPS_TREASURY_TOKEN_ACCOUNT" if explicit else "the treasury's associated account"
    if account is None:
        flag = (
            " --program-id " + payment.token_program
            if payment.token_program == TOKEN_2022_PROGRAM
            else ""
        )
        return Check(
            "chain",
            "treasury_token_account",
            Status.FAIL,
            f"{address} ({source}) does not exist",
            f"create it before the first payment: spl-token create-account {payment.mint} "
            f"--owner {payment.treasury_owner} --fee-payer <keypair>{flag}",
        )
    problems, _ = judge_treasury(payment, account)
    if problems:
        return Check(
            "chain",
            "treasury_token_account",
            Status.FAIL,
            "; ".join(problems),
            "PAYOPS_TREASURY_OWNER must be the wallet that owns a token account of "
            "PAYOPS_TOKEN_MINT (unset PAYOPS_TREASURY_TOKEN_ACCOUNT to use its associated one)",
        )
    info = account.get("data", {}).get("parsed", {}).get("info", {})
    balance = info.get("tokenAmount", {}).get("uiAmountString", "?")
    associated = associated_token_account(
        payment.treasury_owner, payment.mint, payment.token_program
    )
    if address != associated:
        return Check(
            "chain",
            "treasury_token_account",
            Status.WARN,
            f"{address} is not the treasury's associated token account ({associated}): "
            "wallets that follow the Solana Pay spec pay the associated one, and payops "
            "watches only this one",
            "unset PAYOPS_TREASURY_TOKEN_ACCOUNT to use the associated account, unless "
            "every payer is told to pay this one",
        )
    return Check(
        "chain",
        "treasury_token_account",
        Status.OK,
        f"{address} holds the mint, owned by the treasury (balance {balance})",
    )
