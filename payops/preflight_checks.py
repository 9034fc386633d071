"""The pure checks of `payops preflight`: each takes what was read (settings, accounts as the
node's jsonParsed JSON, migration versions, rows) and returns checklist lines. No I/O here,
so they are tested with tables of cases; payops/preflight.py does the reading.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from core.chain.accounts import judge_mint, judge_treasury
from core.chain.verdict import TOKEN_2022_PROGRAM, TOKEN_PROGRAM
from core.config import PaymentConfig, Settings, associated_token_account
from core.errors import ConfigError
from core.gate import GateState, SwitchName
from core.ledger import LedgerHealth

# Re-exported: tests/unit/test_preflight_checks.py imports it from here.

SYSTEM_ACCOUNTS: Final = ("system:token_sales", "system:spend", "system:adjustments")
GATE_SWITCHES: Final = tuple(s.value for s in SwitchName)
PROGRAM_NAMES: Final = {TOKEN_PROGRAM: "SPL Token", TOKEN_2022_PROGRAM: "Token-2022"}


class Status(enum.StrEnum):
    """How a check ended: only FAIL stops a deploy."""

    OK = "ok"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


MARKS: Final = {Status.OK: "✓", Status.FAIL: "✗", Status.WARN: "!", Status.SKIP: "-"}


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the checklist. `name` is stable (for --json and scripts)."""

    group: str
    name: str
    status: Status
    detail: str
    fix: str = ""


def _program(program: str | None) -> str:
    return PROGRAM_NAMES.get(program or "", program or "unknown program")


# --- settings (pure) -------------------------------------------------------------------------


def settings_checks(settings: Settings, *, slack: bool = True) -> list[Check]:
    """What `payops serve` needs: a real database, the payment settings, JWT and Slack."""
    g = "settings"
    out = []
    if settings.database_url is None:
        out.append(
            Check(
                g,
                "database_url",
                Status.FAIL,
                f"unset: payops would start an embedded PostgreSQL in {settings.data_dir} "
                "(a laptop's setup, never production's)",
                "set PAYOPS_DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME",
            )
        )
    else:
        where = urlsplit(settings.database_url.get_secret_value())
        host = where.hostname or "a unix socket"
        name = where.path.lstrip("/") or "(the user's)"
        out.append(Check(g, "database_url", Status.OK, f"set: database {name} on {host}"))
    try:
        p = settings.payment_config()
        out.append(
            Check(
                g,
                "payment_settings",
                Status.OK,
                f"mint {p.mint}, treasury {p.treasury_owner}, "
                f"{p.price_per_credit} base units per credit",
            )
        )
    except ConfigError as exc:
        out.append(
            Check(g, "payment_settings", Status.FAIL, exc.message, "see docs/CONFIGURATION.md")
        )
    out.append(jwt_check(settings))
    if slack:
        out += slack_checks(settings)
    else:
        out.append(Check(g, "slack", Status.SKIP, "not checked (--skip slack)"))
    return out


def jwt_check(settings: Settings) -> Check:
    """HS256 secret or a parseable RS256 public key; the iss/aud checks in force.

    Without an issuer and an audience, a token minted for another service with the same key
    would be accepted here: a warning, since preflight checks a production deploy.
    """
    check = _jwt_key_check(settings)
    unset = [
        name
        for name, value in (
            ("PAYOPS_JWT_ISSUER", settings.jwt_issuer),
            ("PAYOPS_JWT_AUDIENCE", settings.jwt_audience),
        )
        if not value
    ]
    if check.status is not Status.OK or not unset:
        return check
    return Check(
        "settings",
        "jwt",
        Status.WARN,
        f"{check.detail}; {' and '.join(unset)} not set: a token for another service signed "
        "with the same key would be accepted",
        f"set {' and '.join(unset)} to the identity provider's issuer and payops' audience",
    )


def _jwt_key_check(settings: Settings) -> Check:
    claims = (
        f"iss {settings.jwt_issuer or 'not checked'}, aud {settings.jwt_audience or 'not checked'}"
    )
    if settings.jwt_public_key:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            key = load_pem_public_key(settings.jwt_public_key.encode())
        except ValueError:
            return Check(
                "settings",
                "jwt",
                Status.FAIL,
                "PAYOPS_JWT_PUBLIC_KEY is not a PEM public key",
                "paste the identity provider's public key, BEGIN/END PUBLIC KEY lines included",
            )
        bits = getattr(key, "key_size", None)
        detail = f"RS256, public key {type(key).__name__}" + (f" {bits} bits" if bits else "")
        if settings.jwt_secret is not None:
            return Check(
                "settings",
                "jwt",
                Status.WARN,
                f"{detail}; PAYOPS_JWT_SECRET is also set and ignored",
                "unset PAYOPS_JWT_SECRET to avoid confusion",
            )
        return Check("settings", "jwt", Status.OK, f"{detail}; {claims}")
    if settings.jwt_secret is not None:
        return Check("settings", "jwt", Status.OK, f"HS256, PAYOPS_JWT_SECRET set; {claims}")
    return Check(
        "settings",
        "jwt",
        Status.FAIL,
        "neither PAYOPS_JWT_SECRET nor PAYOPS_JWT_PUBLIC_KEY is set: `payops serve` refuses "
        "to start",
        "set PAYOPS_JWT_SECRET (32+ random bytes: python -c 'import secrets; "
        "print(secrets.token_urlsafe(48))') or PAYOPS_JWT_PUBLIC_KEY (RS256)",
    )


def slack_checks(settings: Settings) -> list[Check]:
    """Credentials (HTTP or Socket Mode), the two channels, the on-call and manager ids."""
    g = "settings"
    bot, signing, app = (
        settings.slack_bot_token,
        settings.slack_signing_secret,
        settings.slack_app_token,
    )
    problems = []
    if bot is None:
        problems.append("SLACK_BOT_TOKEN is unset")
    elif not bot.get_secret_value().startswith("xoxb-"):
        problems.append("SLACK_BOT_TOKEN is not a bot token (xoxb-...)")
    if signing is None:
        problems.append("SLACK_SIGNING_SECRET is unset")
    if app is not None and not app.get_secret_value().startswith("xapp-"):
        problems.append("SLACK_APP_TOKEN is not an app-level token (xapp-...)")
    mode = "Socket Mode (SLACK_APP_TOKEN)" if app is not None else "HTTP mode (/slack/events)"
    out = [
        Check(
            g,
            "slack_credentials",
            Status.FAIL,
            "; ".join(problems) + " — the runbook commands would only work on the CLI",
            "set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET from the Slack app "
            "(docs/OPERATIONS.md, Slack app setup)",
        )
        if problems
        else Check(g, "slack_credentials", Status.OK, f"bot token and signing secret set; {mode}")
    ]
    missing = [
        name
        for name, value in (
            ("PAYOPS_SLACK_ALERTS_CHANNEL", settings.slack_alerts_channel),
            ("PAYOPS_SLACK_APPROVALS_CHANNEL", settings.slack_approvals_channel),
        )
        if not value
    ]
    out.append(
        Check(
            g,
            "slack_channels",
            Status.FAIL,
            f"{' and '.join(missing)} unset: gate changes, drift alerts or approval requests "
            "would go nowhere",
            "set them to channel ids (C...) the bot was invited to",
        )
        if missing
        else Check(
            g,
            "slack_channels",
            Status.OK,
            f"alerts {settings.slack_alerts_channel}, approvals {settings.slack_approvals_channel}",
        )
    )
    out.append(slack_people_check(settings))
    return out


def slack_people_check(settings: Settings) -> Check:
    """Somebody may run the commands, and two managers can approve large adjustments."""
    oncall, managers = settings.slack_oncall, settings.slack_managers
    if not oncall or not managers:
        unset = " and ".join(
            n
            for n, v in (("PAYOPS_SLACK_ONCALL", oncall), ("PAYOPS_SLACK_MANAGERS", managers))
            if not v
        )
        return Check(
            "settings",
            "slack_people",
            Status.FAIL,
            f"{unset} empty: nobody may run the commands or approve adjustments",
            "set comma-separated Slack user ids (U...) or user-group ids (S...)",
        )
    detail = f"{len(oncall)} on-call id(s), {len(managers)} manager id(s)"
    if len(managers) < 2 and not any(m.startswith("S") for m in managers):
        return Check(
            "settings",
            "slack_people",
            Status.WARN,
            f"{detail}: adjustments above {settings.adjust_two_approvals_above} credits need "
            "two distinct managers",
            "add a second manager or a user group to PAYOPS_SLACK_MANAGERS",
        )
    return Check("settings", "slack_people", Status.OK, detail)


# --- chain (pure) ----------------------------------------------------------------------------


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
            f"{payment.mint} is a mint of the {_program(program)} program",
        )
    ]
    if program != settings.token_program:
        out.append(
            Check(
                g,
                "token_program",
                Status.FAIL,
                f"the mint belongs to {_program(program)} ({program}); PAYOPS_TOKEN_PROGRAM is "
                f"{_program(settings.token_program)}",
                f"set PAYOPS_TOKEN_PROGRAM={program}",
            )
        )
    else:
        out.append(Check(g, "token_program", Status.OK, f"{_program(program)} ({program})"))
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


# --- database (pure) -------------------------------------------------------------------------


def schema_check(applied: Collection[int], latest: int) -> Check:
    """Every migration of this payops applied; a newer schema is a warning (a rollback)."""
    current = max(applied, default=0)
    missing = sorted(set(range(1, latest + 1)) - set(applied))
    if missing:
        return Check(
            "database",
            "schema",
            Status.FAIL,
            f"at version {current}; this payops needs {latest} (missing "
            f"{', '.join(map(str, missing))})",
            "run `payops migrate` (docker run ... IMAGE migrate) before the new version serves",
        )
    if current > latest:
        return Check(
            "database",
            "schema",
            Status.WARN,
            f"at version {current}, newer than this payops ({latest}): fine for a rollback of "
            "one release (docs/MIGRATIONS.md), otherwise deploy the newer image",
            "check that this is the image you mean to deploy",
        )
    return Check("database", "schema", Status.OK, f"version {current} (the latest)")


def seed_check(system_accounts: Collection[str], switches: Collection[str]) -> Check:
    """The seed's system accounts and gate switches exist."""
    missing = [a for a in SYSTEM_ACCOUNTS if a not in system_accounts]
    missing += [f"gate switch {s}" for s in GATE_SWITCHES if s not in switches]
    if missing:
        return Check(
            "database",
            "seed",
            Status.FAIL,
            f"missing: {', '.join(missing)}",
            "run `payops migrate` (it applies the seed, idempotently)",
        )
    return Check(
        "database",
        "seed",
        Status.OK,
        f"system accounts {', '.join(SYSTEM_ACCOUNTS)}; gate switches {', '.join(GATE_SWITCHES)}",
    )


def ledger_check(health: LedgerHealth) -> Check:
    """The ledger's invariants hold (core/ledger_db.health)."""
    if health.ok:
        return Check(
            "database",
            "ledger",
            Status.OK,
            "entries sum to 0, every transaction balances, cached balances match their entries",
        )
    return Check(
        "database",
        "ledger",
        Status.FAIL,
        f"entries sum to {health.total}; {health.unbalanced_transactions} unbalanced "
        f"transaction(s); {health.balance_mismatches} cached balance(s) off",
        "do not deploy on a broken ledger: `/pay-recon`, `/pay-triage`, then repair "
        "(docs/OPERATIONS.md, Reconciliation)",
    )


def gate_check(state: GateState) -> Check:
    """A closed switch is worth a warning, not a failure: it may be closed on purpose."""
    closed = [s for s in (state.verify, state.client_retries) if not s.is_open]
    if not closed:
        return Check("database", "gate", Status.OK, "verify open, client_retries open")
    detail = "; ".join(f"{s.name.value} CLOSED by {s.changed_by}: {s.reason}" for s in closed)
    return Check(
        "database",
        "gate",
        Status.WARN,
        detail,
        "intended during an incident; otherwise `/pay-smoke` then `/pay-gate open` "
        "(and `/pay-gate resume-retries`) after the deploy",
    )
