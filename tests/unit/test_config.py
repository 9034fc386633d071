"""Settings: a clear error naming the variable; secrets never echoed."""

from __future__ import annotations

import pytest

from core.config import associated_token_account, load_settings
from core.errors import ConfigError

GOOD_KEY = "3i476kTBBTy7pBGx4CXwJpJ6phuwLQgcwLTdHhU3c7ui"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("PAYOPS_", "SLACK_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir("/")  # no stray .env file


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PAYOPS_HTTP_PORT": "eighty"}, "PAYOPS_HTTP_PORT"),
        ({"PAYOPS_PRICE_PER_CREDIT": "0"}, "PAYOPS_PRICE_PER_CREDIT"),
        ({"PAYOPS_PRICE_PER_CREDIT": "1.5"}, "PAYOPS_PRICE_PER_CREDIT"),
        ({"PAYOPS_TOKEN_MINT": "not-a-key"}, "PAYOPS_TOKEN_MINT"),
        ({"PAYOPS_TREASURY_OWNER": "0OOO"}, "PAYOPS_TREASURY_OWNER"),
        ({"PAYOPS_COMMITMENT": "final"}, "PAYOPS_COMMITMENT"),
        ({"PAYOPS_SOLANA_RPC_URL": "ftp://x"}, "PAYOPS_SOLANA_RPC_URL"),
        ({"PAYOPS_TOKEN_PROGRAM": GOOD_KEY}, "PAYOPS_TOKEN_PROGRAM"),
    ],
)
def test_invalid_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_missing_payment_settings_are_named() -> None:
    settings = load_settings()
    with pytest.raises(ConfigError, match="PAYOPS_TOKEN_MINT"):
        settings.payment_config()
    with pytest.raises(ConfigError, match="PAYOPS_TREASURY_OWNER"):
        load_settings(token_mint=USDC).payment_config()


def test_secrets_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYOPS_JWT_SECRET", "s3cr3t-value-long-enough-for-hs256-use")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-token")
    monkeypatch.setenv("PAYOPS_HTTP_PORT", "-1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "s3cr3t" not in str(info.value)
    monkeypatch.setenv("PAYOPS_HTTP_PORT", "8080")
    settings = load_settings()
    assert "s3cr3t" not in repr(settings)
    assert "xoxb" not in repr(settings)
    assert settings.slack_bot_token is not None
    assert settings.slack_bot_token.get_secret_value() == "xoxb-secret-token"


def test_lists_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYOPS_SLACK_MANAGERS", "U1, U2,,S3")
    settings = load_settings()
    assert settings.slack_managers == ("U1", "U2", "S3")
    assert settings.commitment == "finalized"
    assert settings.database_url is None


def test_treasury_token_account_defaults_to_the_associated_account() -> None:
    payment = load_settings(token_mint=USDC, treasury_owner=GOOD_KEY).payment_config()
    # The keyapp fixture: this owner's USDC associated token account.
    assert payment.treasury_token_account == "H51DXRt3ubThhdhNeDMScfkbC5X4AWzYfHaZS3JKEfPh"
    assert (
        associated_token_account(GOOD_KEY, USDC, payment.token_program)
        == payment.treasury_token_account
    )


def test_trusted_proxies_are_cidrs_and_trusting_every_forwarded_for_is_refused() -> None:
    settings = load_settings(trusted_proxies="10.0.0.0/8, 192.168.1.7,fd00::/8")
    assert [str(n) for n in settings.trusted_proxies] == [
        "10.0.0.0/8",
        "192.168.1.7/32",
        "fd00::/8",
    ]
    assert load_settings().trusted_proxies == ()
    with pytest.raises(ConfigError, match="PAYOPS_TRUSTED_PROXIES"):
        load_settings(trusted_proxies="10.0.0.0/8,lb.internal")
    with pytest.raises(ConfigError, match="PAYOPS_TRUSTED_PROXIES to the load balancers"):
        load_settings(trust_forwarded_for=True)
