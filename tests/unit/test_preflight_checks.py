"""The pure parts of the deploy-day commands: preflight's checks, secret-free URLs, and how a
DSN is handed to the PostgreSQL client programs."""

from __future__ import annotations

from typing import Any

import pytest
from solders.keypair import Keypair

from core.ledger import LedgerHealth
from payops.pgtools import dsn_with_database, libpq_target
from payops.preflight_chain import owner_check
from payops.preflight_checks import (
    GATE_SWITCHES,
    SYSTEM_ACCOUNTS,
    Status,
    jwt_check,
    slack_people_check,
)
from payops.preflight_db import ledger_check, schema_check, seed_check
from payops.urls import public_url
from tests.support import make_settings


@pytest.mark.parametrize(
    ("applied", "latest", "status", "says"),
    [
        ([1, 2, 3], 3, Status.OK, "version 3 (the latest)"),
        ([], 3, Status.FAIL, "at version 0; this payops needs 3 (missing 1, 2, 3)"),
        ([1, 2], 3, Status.FAIL, "(missing 3)"),
        ([1, 3], 3, Status.FAIL, "(missing 2)"),
        ([1, 2, 3, 4], 3, Status.WARN, "newer than this payops (3)"),
    ],
)
def test_schema_check(applied: list[int], latest: int, status: Status, says: str) -> None:
    check = schema_check(applied, latest)
    assert check.status is status
    assert says in check.detail


@pytest.mark.parametrize(
    ("accounts", "switches", "missing"),
    [
        (SYSTEM_ACCOUNTS, GATE_SWITCHES, None),
        (SYSTEM_ACCOUNTS[1:], GATE_SWITCHES, SYSTEM_ACCOUNTS[0]),
        (SYSTEM_ACCOUNTS, ("verify",), "gate switch client_retries"),
        ((), (), "system:token_sales, system:spend, system:adjustments, gate switch verify"),
    ],
)
def test_seed_check(
    accounts: tuple[str, ...], switches: tuple[str, ...], missing: str | None
) -> None:
    check = seed_check(set(accounts), set(switches))
    assert (check.status is Status.OK) == (missing is None)
    if missing:
        assert missing in check.detail
        assert "payops migrate" in check.fix


@pytest.mark.parametrize(
    ("health", "ok"),
    [
        (LedgerHealth(0, 0, 0), True),
        (LedgerHealth(5, 1, 0), False),
        (LedgerHealth(0, 0, 2), False),
    ],
)
def test_ledger_check(health: LedgerHealth, ok: bool) -> None:
    assert (ledger_check(health).status is Status.OK) is ok


def _account(kind: str | None, info: dict[str, Any] | None = None) -> dict[str, Any]:
    parsed = {"type": kind, "info": info or {}} if kind else None
    return {"owner": "x", "data": {"parsed": parsed} if parsed else ["", "base64"]}


@pytest.mark.parametrize(
    ("account", "status", "says"),
    [
        (None, Status.OK, "no account yet"),
        (_account(None), Status.OK, "on chain"),
        (_account("account", {"owner": "WALLET"}), Status.FAIL, "is a token account"),
        (_account("mint"), Status.FAIL, "is a mint"),
    ],
)
def test_treasury_owner_must_be_a_wallet(
    account: dict[str, Any] | None, status: Status, says: str
) -> None:
    payment = make_settings().payment_config()
    check = owner_check(payment, account)
    assert check.status is status
    assert says in check.detail
    if "token account" in says:
        assert "PAYOPS_TREASURY_OWNER=WALLET" in check.fix


@pytest.mark.parametrize(
    ("managers", "status"),
    [("", Status.FAIL), ("U1", Status.WARN), ("U1,U2", Status.OK), ("S_MANAGERS", Status.OK)],
)
def test_slack_people(managers: str, status: Status) -> None:
    settings = make_settings(slack_oncall="U0", slack_managers=managers)
    assert slack_people_check(settings).status is status


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://mainnet.helius-rpc.com/?api-key=abc", "https://mainnet.helius-rpc.com/"),
        (
            "https://user:pw@rpc.example.com:8899/v1/key123?x=1#f",
            "https://rpc.example.com:8899/v1/key123",
        ),
        ("http://127.0.0.1:8899", "http://127.0.0.1:8899"),
    ],
)
def test_public_url_drops_credentials_and_query(url: str, shown: str) -> None:
    assert public_url(url) == shown


@pytest.mark.parametrize(
    ("dsn", "uri", "password", "database", "where"),
    [
        (
            "postgresql://payops:s3cret@db:5432/payops",
            "postgresql://payops@db:5432/payops",
            "s3cret",
            "payops",
            "db:5432",
        ),
        (
            "postgresql://payops:p%40ss@db/payops?sslmode=require",
            "postgresql://payops@db/payops?sslmode=require",
            "p@ss",
            "payops",
            "db",
        ),
        (
            "postgresql://postgres:@/payops_test?host=/run/pg",
            "postgresql://postgres@/payops_test?host=/run/pg",
            None,
            "payops_test",
            "/run/pg",
        ),
        (
            "postgres://u@h/d?password=qs&application_name=x",
            "postgres://u@h/d?application_name=x",
            "qs",
            "d",
            "h",
        ),
        ("postgresql://alice@h", "postgresql://alice@h", None, "alice", "h"),
    ],
)
def test_libpq_target_keeps_the_password_off_the_command_line(
    dsn: str, uri: str, password: str | None, database: str, where: str
) -> None:
    target = libpq_target(dsn)
    assert target.uri == uri
    assert target.env.get("PGPASSWORD") == password
    assert (target.database, target.where) == (database, where)
    assert target.with_database("other").uri.split("?")[0].endswith("/other")


def test_dsn_with_database_keeps_everything_else() -> None:
    dsn = "postgresql://u:pw@h:5432/a?sslmode=require"
    assert dsn_with_database(dsn, "b") == "postgresql://u:pw@h:5432/b?sslmode=require"


def test_settings_checks_never_show_a_secret() -> None:
    from payops.preflight_checks import settings_checks

    secret = "xoxb-" + str(Keypair().pubkey())
    checks = settings_checks(
        make_settings(
            database_url="postgresql://u:topsecretpw@db:5432/payops",
            slack_bot_token=secret,
            slack_signing_secret="signing-secret-value",
        )
    )
    text = " ".join(f"{c.detail} {c.fix}" for c in checks)
    for value in (secret, "topsecretpw", "signing-secret-value"):
        assert value not in text


def _treasury_payment(token_account: str | None) -> Any:
    from solders.keypair import Keypair

    from core.chain.verdict import TOKEN_PROGRAM
    from core.config import PaymentConfig, associated_token_account

    owner, mint = str(Keypair().pubkey()), str(Keypair().pubkey())
    return PaymentConfig(
        mint=mint,
        token_program=TOKEN_PROGRAM,
        decimals=6,
        treasury_owner=owner,
        treasury_token_account=token_account
        or associated_token_account(owner, mint, TOKEN_PROGRAM),
        price_per_credit=1,
        max_credits_per_intent=10,
        intent_ttl_seconds=900,
    )


def _token_account_of(payment: Any) -> dict[str, Any]:
    from core.chain.verdict import TOKEN_PROGRAM

    info = {"mint": payment.mint, "owner": payment.treasury_owner, "tokenAmount": {}}
    return {
        "owner": TOKEN_PROGRAM,
        "data": {"program": "spl-token", "parsed": {"type": "account", "info": info}},
    }


def test_a_treasury_account_other_than_the_associated_one_is_a_warning() -> None:
    from solders.keypair import Keypair

    from payops.preflight_chain import treasury_check

    other = _treasury_payment(str(Keypair().pubkey()))
    check = treasury_check(other, _token_account_of(other), explicit=True)
    assert check.status is Status.WARN
    assert "not the treasury's associated token account" in check.detail

    usual = _treasury_payment(None)
    assert treasury_check(usual, _token_account_of(usual), explicit=False).status is Status.OK


@pytest.mark.parametrize(
    ("issuer", "audience", "status", "named"),
    [
        ("https://auth.example", "payops", Status.OK, None),
        (None, "payops", Status.WARN, "PAYOPS_JWT_ISSUER not set"),
        ("https://auth.example", None, Status.WARN, "PAYOPS_JWT_AUDIENCE not set"),
        (None, None, Status.WARN, "PAYOPS_JWT_ISSUER and PAYOPS_JWT_AUDIENCE not set"),
    ],
)
def test_jwt_check_warns_without_issuer_or_audience(
    issuer: str | None, audience: str | None, status: Status, named: str | None
) -> None:
    check = jwt_check(make_settings(jwt_issuer=issuer, jwt_audience=audience))
    assert check.status is status
    if named:
        assert named in check.detail
        assert check.fix.startswith("set PAYOPS_JWT_")


def test_jwt_check_without_a_key_still_fails() -> None:
    check = jwt_check(make_settings(jwt_secret=None))
    assert check.status is Status.FAIL
