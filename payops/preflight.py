"""`payops preflight`: the runbook's "Before deploy" checklist, checked rather than ticked.

    Confirm production token mint and treasury wallet are correct   -> the chain checks
    Confirm DB migration and seed are included in rollout sequence  -> the database checks
    (and what `payops serve` needs to start: JWT and Slack settings) -> the settings checks

Each check ends as one line: ✓ ok, ✗ fail (with what is wrong and how to fix it), ! a
warning worth reading, - skipped. The exit code is 0 only when nothing failed. The checks
that decide are pure functions over what was read (tested with tables of cases); `preflight()`
does the reading. Nothing here writes anywhere, and no secret is ever printed: settings are
reported as set/unset, URLs without credentials or query strings.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg

from core import db, gate, ledger
from core.chain.accounts import judge_mint
from core.chain.rpc import RpcUnavailable, SolanaRpc
from core.config import PaymentConfig, Settings, associated_token_account
from core.errors import ConfigError
from payops import compose
from payops.preflight_chain import mint_checks, owner_check, treasury_check
from payops.preflight_checks import MARKS, Check, Status, settings_checks
from payops.preflight_db import gate_check, ledger_check, schema_check, seed_check
from payops.urls import public_url

SKIPPABLE: Final = ("chain", "database", "slack")
CONNECT_TIMEOUT_SECONDS: Final = 15.0


@dataclass(frozen=True, slots=True)
class Report:
    """The checklist: every check in order, and whether the deploy may go ahead."""

    checked_at: datetime
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.status is not Status.FAIL for c in self.checks)

    def by_name(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked_at": self.checked_at.isoformat().replace("+00:00", "Z"),
            "checks": [
                {"group": c.group, "name": c.name, "status": c.status.value}
                | {"detail": c.detail, "fix": c.fix or None}
                for c in self.checks
            ],
        }

    def render(self) -> str:
        lines = [f"payops preflight — {self.checked_at:%Y-%m-%d %H:%M:%S} UTC"]
        width = max((len(c.name) for c in self.checks), default=0)
        group = None
        for c in self.checks:
            if c.group != group:
                group = c.group
                lines += ["", group.capitalize()]
            label = c.name.replace("_", " ").ljust(width)
            lines.append(f"  {MARKS[c.status]} {label}  {c.detail}")
            if c.fix and c.status in (Status.FAIL, Status.WARN):
                lines.append(f"      fix: {c.fix}")
        counts = {s: sum(c.status is s for c in self.checks) for s in Status}
        verdict = "ready to deploy." if self.ok else "NOT ready to deploy."
        lines += [
            "",
            f"{len(self.checks)} checks: {counts[Status.OK]} passed, {counts[Status.FAIL]} "
            f"failed, {counts[Status.WARN]} warnings, {counts[Status.SKIP]} skipped — {verdict}",
        ]
        return "\n".join(lines)


# --- reading ---------------------------------------------------------------------------------


async def chain_checks(settings: Settings, payment: PaymentConfig) -> list[Check]:
    """Read the mint, the treasury wallet and its token account from the configured RPC."""
    g = "chain"
    rpc = SolanaRpc(
        settings.solana_rpc_url,
        commitment=settings.commitment,
        timeout_seconds=settings.rpc_timeout_seconds,
        max_retries=settings.rpc_max_retries,
        max_concurrency=4,
        max_batch=min(settings.rpc_max_batch, BATCH_PROBE),
    )
    url = public_url(settings.solana_rpc_url)
    async with rpc:
        try:
            slot = await rpc.get_slot()
            out = [Check(g, "rpc", Status.OK, f"{url} answers (slot {slot}, {rpc.commitment})")]
            if settings.rpc_max_batch > 1:
                out.append(await batch_check(settings, rpc))
            mint = await rpc.get_account_info_json_parsed(payment.mint)
            out += mint_checks(settings, payment, mint)
            program, _, problems, _ = judge_mint(payment, mint)
            if not problems and program is not None:
                # The treasury account is the one of the mint's real program, as at start-up.
                payment = replace(
                    payment,
                    token_program=program,
                    treasury_token_account=settings.treasury_token_account
                    or associated_token_account(payment.treasury_owner, payment.mint, program),
                )
            owner = await rpc.get_account_info_json_parsed(payment.treasury_owner)
            treasury = await rpc.get_account_info_json_parsed(payment.treasury_token_account)
        except RpcUnavailable as exc:
            return [
                Check(
                    g,
                    "rpc",
                    Status.FAIL,
                    f"{url} gave no answer: {exc.reason}",
                    "check PAYOPS_SOLANA_RPC_URL and the provider's status",
                ),
                *(
                    Check(g, name, Status.SKIP, "not checked: no RPC")
                    for name in ("token_mint", "treasury_token_account")
                ),
            ]
    out.append(owner_check(payment, owner))
    out.append(
        treasury_check(payment, treasury, explicit=settings.treasury_token_account is not None)
    )
    return out


BATCH_PROBE = 100  # calls in the batch that asks whether the node takes batches, at most


async def batch_check(settings: Settings, rpc: SolanaRpc) -> Check:
    """Whether the node takes a JSON-RPC batch of `PAYOPS_RPC_MAX_BATCH` calls (up to 100)."""
    size = min(settings.rpc_max_batch, BATCH_PROBE)
    await asyncio.gather(*(rpc.get_slot() for _ in range(size)))
    if rpc.stats.batches_refused:
        return Check(
            "chain",
            "rpc_batches",
            Status.WARN,
            f"the node refused a JSON-RPC batch of {size} calls: each call will go on its own",
            "set PAYOPS_RPC_MAX_BATCH=1 (or lower it to what the provider's plan allows)",
        )
    return Check("chain", "rpc_batches", Status.OK, f"the node takes batches of {size} calls")


async def database_checks(dsn: str) -> list[Check]:
    """Connect, then read the applied migrations, the seed, the ledger health and the gate."""
    g = "database"
    try:
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return [
            Check(
                g,
                "connection",
                Status.FAIL,
                f"cannot connect: {type(exc).__name__}: {exc}",
                "check PAYOPS_DATABASE_URL and that the database accepts connections from here",
            ),
            *(
                Check(g, name, Status.SKIP, "not checked: no connection")
                for name in ("schema", "seed")
            ),
        ]
    try:
        version = await conn.fetchval("SHOW server_version")
        out = [Check(g, "connection", Status.OK, f"PostgreSQL {version}")]
        applied: list[int] = []
        if await db.schema_version(conn) > 0:
            applied = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        out.append(schema_check(applied, db.latest_version()))
        if not applied:
            out.append(seed_check((), ()))
            return out
        accounts = await conn.fetch("SELECT name FROM accounts WHERE kind = 'system'")
        switches = await conn.fetch("SELECT name FROM gate_switches")
        seed = seed_check({r[0] for r in accounts}, {r[0] for r in switches})
        out.append(seed)
        out.append(ledger_check(await ledger.health(conn)))
        if seed.status is Status.OK:
            out.append(gate_check(await gate.read(conn)))
        return out
    finally:
        await conn.close()


async def preflight(settings: Settings, *, skip: Collection[str] = ()) -> Report:
    """Run every check (but the skipped groups) against the configured chain and database."""
    checks = settings_checks(settings, slack="slack" not in skip)
    try:
        payment: PaymentConfig | None = settings.payment_config()
    except ConfigError:
        payment = None
    if "chain" in skip:
        checks.append(Check("chain", "chain", Status.SKIP, "not checked (--skip chain)"))
    elif payment is None:
        checks.append(
            Check("chain", "chain", Status.FAIL, "not checked: the payment settings are missing")
        )
    else:
        checks += await chain_checks(settings, payment)
    if "database" in skip:
        checks.append(Check("database", "database", Status.SKIP, "not checked (--skip database)"))
    else:
        async with compose.database(settings) as dsn:
            checks += await database_checks(dsn)
    return Report(datetime.now(UTC), tuple(checks))


async def preflight_command(
    loaded: Settings | ConfigError, *, as_json: bool, skip: Collection[str] = ()
) -> int:
    """`payops preflight`: print the checklist (or JSON); 0 only if nothing failed.

    `loaded` is the settings, or the error that loading them raised: an invalid setting is
    a failed check like any other, not a crash."""
    if isinstance(loaded, ConfigError):
        report = Report(
            datetime.now(UTC),
            (Check("settings", "settings", Status.FAIL, loaded.message, "docs/CONFIGURATION.md"),),
        )
    else:
        report = await preflight(loaded, skip=skip)
    print(json.dumps(report.to_json(), indent=2) if as_json else report.render(), flush=True)
    return 0 if report.ok else 1
