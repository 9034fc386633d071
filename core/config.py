"""Configuration: one `Settings`, built once at start-up and passed down.

Every value comes from the environment (`PAYOPS_` prefix; Slack's own names for its
secrets) or a `.env` file. Nothing here is read at import time. `load_settings()` turns
pydantic's validation error into a `ConfigError` that names the offending variable, so a
bad deployment fails at start with a message an operator can act on — and never echoes a
secret value.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError
from solders.pubkey import Pubkey

from core.chain.verdict import TOKEN_2022_PROGRAM, TOKEN_PROGRAM
from core.errors import ConfigError

U64_MAX = 2**64 - 1

Commitment = Literal["processed", "confirmed", "finalized"]


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("payops"))


def _pubkey_or_none(value: str | None, name: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        Pubkey.from_string(value)
    except ValueError as exc:
        raise ValueError(f"{name} is not a valid base58 Solana public key") from exc
    return value


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """Every setting payops reads. Field `x` is the environment variable `PAYOPS_X`."""

    model_config = SettingsConfigDict(
        env_prefix="PAYOPS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # Database: unset means "start an embedded PostgreSQL in data_dir".
    database_url: SecretStr | None = None
    data_dir: Path = Field(default_factory=_default_data_dir)
    db_pool_min_size: int = Field(default=2, ge=1, le=100)
    db_pool_max_size: int = Field(default=20, ge=1, le=500)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=16 * 1024, ge=256, le=1024 * 1024)
    # Rate limits on the public API (per replica; 0 turns one off)
    rate_limit_per_ip_per_second: float = Field(default=50.0, ge=0, le=100_000)
    rate_limit_per_ip_burst: int = Field(default=100, ge=1, le=1_000_000)
    rate_limit_per_user_per_second: float = Field(default=10.0, ge=0, le=100_000)
    rate_limit_per_user_burst: int = Field(default=30, ge=1, le=1_000_000)
    # The load balancers whose X-Forwarded-For is believed (comma-separated CIDRs); none: the
    # client address is the connection's peer.
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = ()
    trust_forwarded_for: bool = False  # replaced by trusted_proxies; refused when true
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # `payops serve`'s event loop: uvloop takes about a third less CPU per request
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    # Solana
    solana_rpc_url: str = "http://127.0.0.1:8899"
    commitment: Commitment = "finalized"
    max_supported_transaction_version: int = Field(default=0, ge=0, le=0)
    rpc_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    rpc_max_retries: int = Field(default=3, ge=0, le=10)
    rpc_max_concurrency: int = Field(default=32, ge=1, le=1024)
    # Calls made at the same moment (one turn of the event loop) leave as one JSON-RPC batch
    # of at most this many; 1 sends each call on its own (a provider without batches).
    rpc_max_batch: int = Field(default=10, ge=1, le=1000)
    # Purchase credits in flight together are committed together, at most this many in one
    # transaction (core/purchases/grouped.py); 1 commits each credit on its own.
    credit_group_max: int = Field(default=32, ge=1, le=32)
    token_mint: str | None = None
    token_program: str = TOKEN_PROGRAM
    token_decimals: int = Field(default=6, ge=0, le=18)
    treasury_owner: str | None = None
    treasury_token_account: str | None = None  # default: the owner's associated token account

    # Pricing and time limits (token base units; seconds)
    price_per_credit: int = Field(default=10_000, gt=0, le=U64_MAX)
    max_credits_per_intent: int = Field(default=1_000_000, gt=0, le=10**12)
    # What a wallet shows the payer (Solana Pay `label` and `message`; `{credits}` is replaced)
    solana_pay_label: str | None = Field(default="payops", max_length=100)
    solana_pay_message: str | None = Field(default="{credits} credits", max_length=200)
    intent_ttl_seconds: int = Field(default=900, ge=30, le=7 * 86400)
    pending_sla_seconds: int = Field(default=3600, ge=60, le=30 * 86400)
    expiry_grace_seconds: int = Field(default=600, ge=0, le=86400)

    # Adjustments: above this many credits (either way) two distinct managers must approve
    adjust_two_approvals_above: int = Field(default=1000, ge=0, le=10**12)
    adjust_ttl_seconds: int = Field(default=86400, ge=60, le=30 * 86400)

    # Scheduled jobs (bot/scheduler.py): every replica runs the scheduler; each tick of each
    # job runs on one of them. Intervals in seconds, ticks aligned to multiples of them.
    scheduler_enabled: bool = True
    reconcile_interval_seconds: float = Field(default=300.0, ge=0.2, le=86400)
    reconcile_full_every_seconds: int = Field(default=86400, ge=60, le=30 * 86400)
    recovery_interval_seconds: float = Field(default=60.0, ge=0.2, le=86400)
    recovery_batch_size: int = Field(default=100, ge=1, le=10_000)
    recovery_min_age_seconds: int = Field(default=60, ge=0, le=86400)
    expire_interval_seconds: float = Field(default=60.0, ge=0.2, le=86400)
    audit_seal_interval_seconds: float = Field(default=2.0, ge=0.2, le=3600)
    summary_interval_seconds: float = Field(default=86400.0, ge=0.2, le=7 * 86400)
    housekeeping_interval_seconds: float = Field(default=3600.0, ge=0.2, le=86400)
    job_runs_retention_days: int = Field(default=7, ge=1, le=3650)
    # The treasury watcher (core/watch): one replica at a time follows the treasury token
    # account's history and credits what it finds.
    watch_enabled: bool = True
    watch_interval_seconds: float = Field(default=1.0, ge=0.05, le=3600)
    # /readyz reports the watcher as behind when its last complete read is older than this
    watch_stale_seconds: int = Field(default=30, ge=1, le=86400)
    # The intent event streams (GET /v1/purchase-intents/{id}/events): a stream ends this
    # long after it began (the client reconnects), and says `: keep-alive` this often.
    events_max_seconds: float = Field(default=300.0, gt=0, le=86400)
    events_keepalive_seconds: float = Field(default=15.0, gt=0, le=3600)
    # A finding still open this long after its alert is posted once more, to the managers.
    alert_escalate_after_seconds: int = Field(default=3600, ge=0, le=30 * 86400)

    # Smoke test: a known-valid payment to the treasury, kept for /pay-smoke (never credited)
    smoke_signature: str | None = None
    smoke_reference: str | None = None
    smoke_amount: int | None = Field(default=None, gt=0, le=U64_MAX)

    # Auth: HS256 with jwt_secret, or RS256 with jwt_public_key (PEM).
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # Longest lifetime (exp - iat) accepted, for users and for service tokens (scope
    # credits:debit); a token without iat is refused. 0 accepts any lifetime and no iat.
    jwt_max_lifetime_seconds: int = Field(default=86400, ge=0, le=366 * 86400)
    jwt_service_max_lifetime_seconds: int = Field(default=86400, ge=0, le=366 * 86400)

    # Webhooks (core/webhooks): signed events for other services, from a transactional outbox
    webhook_url: Annotated[tuple[str, ...], NoDecode] = ()  # one or more, comma-separated
    webhook_secret: SecretStr | None = None
    webhook_interval_seconds: float = Field(default=1.0, ge=0.05, le=3600)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    webhook_retry_seconds: int = Field(default=86400, ge=60, le=30 * 86400)
    webhook_backoff_base_seconds: float = Field(default=1.0, gt=0, le=3600)
    webhook_backoff_cap_seconds: float = Field(default=600.0, gt=0, le=86400)

    # Incidents: the timeline follower reads the audit log this often (one replica at a
    # time); opening an incident may create its own channel #inc-<n>-<slug>.
    incident_feed_interval_seconds: float = Field(default=2.0, ge=0.05, le=3600)
    incident_channels: bool = False
    # The Slack App Home is refreshed on changes for those who opened it this recently.
    home_recent_seconds: int = Field(default=3600, ge=60, le=7 * 86400)

    # Slack
    slack_api_url: str = "https://slack.com/api/"
    slack_alerts_channel: str | None = None
    slack_approvals_channel: str | None = None
    slack_oncall: Annotated[tuple[str, ...], NoDecode] = ()
    slack_managers: Annotated[tuple[str, ...], NoDecode] = ()
    slack_bot_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SLACK_BOT_TOKEN", "PAYOPS_SLACK_BOT_TOKEN")
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SLACK_SIGNING_SECRET", "PAYOPS_SLACK_SIGNING_SECRET"),
    )
    slack_app_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SLACK_APP_TOKEN", "PAYOPS_SLACK_APP_TOKEN")
    )

    _split_lists = field_validator("slack_oncall", "slack_managers", "webhook_url", mode="before")(
        _csv
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        networks = []
        for part in _csv(value):
            try:
                networks.append(ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"{part!r} is not an address or a CIDR (10.0.0.0/8)") from None
        return tuple(networks)

    @field_validator("trust_forwarded_for")
    @classmethod
    def _refuse_trust_all(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "trusting every X-Forwarded-For lets a client choose its own address: set "
                "PAYOPS_TRUSTED_PROXIES to the load balancers' CIDRs instead"
            )
        return value

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} must be an http:// or https:// URL")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 16:
            raise ValueError("must be at least 16 bytes")
        return value

    @field_validator("token_mint", "treasury_owner", "treasury_token_account", "smoke_reference")
    @classmethod
    def _check_pubkey(cls, value: str | None, info: Any) -> str | None:
        return _pubkey_or_none(value, f"PAYOPS_{info.field_name.upper()}")

    @field_validator("jwt_secret")
    @classmethod
    def _check_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes (HS256 needs a 256-bit key)")
        return value

    @field_validator("token_program")
    @classmethod
    def _check_token_program(cls, value: str) -> str:
        if value not in (TOKEN_PROGRAM, TOKEN_2022_PROGRAM):
            raise ValueError(f"must be the SPL Token ({TOKEN_PROGRAM}) or Token-2022 program")
        return value

    @field_validator("solana_rpc_url", "slack_api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    def payment_config(self) -> PaymentConfig:
        """The treasury and mint, or a `ConfigError` naming what is missing."""
        if self.token_mint is None:
            raise ConfigError("PAYOPS_TOKEN_MINT is not set: the SPL token mint users pay with")
        if self.treasury_owner is None:
            raise ConfigError("PAYOPS_TREASURY_OWNER is not set: the wallet that receives payments")
        token_account = self.treasury_token_account or associated_token_account(
            self.treasury_owner, self.token_mint, self.token_program
        )
        return PaymentConfig(
            mint=self.token_mint,
            token_program=self.token_program,
            decimals=self.token_decimals,
            treasury_owner=self.treasury_owner,
            treasury_token_account=token_account,
            price_per_credit=self.price_per_credit,
            max_credits_per_intent=self.max_credits_per_intent,
            intent_ttl_seconds=self.intent_ttl_seconds,
            pay_label=self.solana_pay_label or None,
            pay_message=self.solana_pay_message or None,
        )


@dataclass(frozen=True, slots=True)
class PaymentConfig:
    """The payment side of the settings, checked and complete."""

    mint: str
    token_program: str
    decimals: int
    treasury_owner: str
    treasury_token_account: str
    price_per_credit: int
    max_credits_per_intent: int
    intent_ttl_seconds: int
    pay_label: str | None = None
    pay_message: str | None = None


def associated_token_account(owner: str, mint: str, token_program: str) -> str:
    """The associated token account of `owner` for `mint` under `token_program`."""
    from spl.token.instructions import get_associated_token_address

    return str(
        get_associated_token_address(
            Pubkey.from_string(owner), Pubkey.from_string(mint), Pubkey.from_string(token_program)
        )
    )


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment, or raise `ConfigError` naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or "settings"
            name = field if field.isupper() else f"PAYOPS_{field.upper()}"
            # err["msg"] never contains the input value; err["input"] might be a secret.
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
