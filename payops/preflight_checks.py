"""The pure checks of `payops preflight`: each takes what was read (settings, accounts as the
node's jsonParsed JSON, migration versions, rows) and returns checklist lines. No I/O here,
so they are tested with tables of cases; payops/preflight.py does the reading.

Here: the checklist's records and the settings; the chain's checks are in
`preflight_chain`, the database's in `preflight_db`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from core.chain.verdict import TOKEN_2022_PROGRAM, TOKEN_PROGRAM
from core.config import Settings
from core.errors import ConfigError
from core.gate import SwitchName

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


def program_name(program: str | None) -> str:
    """A token program by the name people know it by."""
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
