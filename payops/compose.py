"""The composition root: settings -> database -> Services -> the aiohttp application.

Nothing else in payops builds clients or reads settings; everything below receives what
it needs from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
from aiohttp import web

from api.app import create_app
from api.keys import OPS_RUNNER
from api.routes_ops import OpsRunner
from core import audit, db
from core.chain.accounts import check_accounts
from core.chain.rpc import RpcUnavailable, SolanaRpc
from core.chain.rpc_metrics import RpcCollector
from core.chain.solana_verifier import SolanaVerifier
from core.config import PaymentConfig, Settings
from core.embedded_db import embedded_database
from core.errors import ConfigError
from core.gate import GateReader
from core.purchases import CreditGroups, CreditGroupsCollector
from core.services import Services
from payops.urls import public_url

log = logging.getLogger("payops")

DEV_SECRET_FILE = "dev-jwt-secret"


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[str]:
    """The configured database, or an embedded one in the data directory."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with embedded_database(settings.data_dir) as dsn:
        yield dsn


async def check_schema(pool: asyncpg.Pool) -> None:
    current = await db.schema_version(pool)
    if current < db.latest_version():
        raise ConfigError(
            f"the database schema is at version {current}, this payops needs "
            f"{db.latest_version()}: run `payops migrate` first"
        )


@dataclass
class Running:
    services: Services
    rpc: SolanaRpc


@contextlib.asynccontextmanager
async def services(
    settings: Settings, dsn: str, *, check_chain: bool = True
) -> AsyncIterator[Running]:
    """Build the one `Services` object; close what it opened on exit.

    Fails (ConfigError) when the configured mint or treasury is wrong on chain, before the
    service accepts any request."""
    payment = settings.payment_config()
    pool = await db.create_pool(
        dsn, min_size=settings.db_pool_min_size, max_size=settings.db_pool_max_size
    )
    try:
        await check_schema(pool)
        rpc = SolanaRpc(
            settings.solana_rpc_url,
            commitment=settings.commitment,
            max_supported_transaction_version=settings.max_supported_transaction_version,
            timeout_seconds=settings.rpc_timeout_seconds,
            max_retries=settings.rpc_max_retries,
            max_concurrency=settings.rpc_max_concurrency,
            max_batch=settings.rpc_max_batch,
        )
        try:
            if check_chain:
                payment = await _payment_on_chain(settings, payment, rpc)
            svc = Services(
                settings=settings,
                payment=payment,
                pool=pool,
                verifier=SolanaVerifier(
                    rpc, grace=timedelta(seconds=settings.expiry_grace_seconds)
                ),
                gate=GateReader(pool),
                chain_health=rpc.health,
                chain=rpc,
                credits=CreditGroups(settings.credit_group_max),
            )
            svc.metrics.registry.register(RpcCollector(rpc))
            svc.metrics.registry.register(CreditGroupsCollector(svc.credits))
            yield Running(svc, rpc)
        finally:
            await rpc.close()
    finally:
        await pool.close()


async def _payment_on_chain(
    settings: Settings, payment: PaymentConfig, rpc: SolanaRpc
) -> PaymentConfig:
    try:
        checked, check = await check_accounts(
            rpc, payment, explicit_token_account=settings.treasury_token_account
        )
    except RpcUnavailable as exc:
        raise ConfigError(
            f"cannot read PAYOPS_TOKEN_MINT from PAYOPS_SOLANA_RPC_URL "
            f"({public_url(settings.solana_rpc_url)}): {exc}"
        ) from exc
    for note in check.notes:
        log.warning("payment configuration: %s", note)
    if not check.ok:
        raise ConfigError(
            "the payment configuration does not match the chain: " + "; ".join(check.problems)
        )
    return checked


async def _seal_audit_log(pool: asyncpg.Pool, interval_seconds: float) -> None:
    """Chain new audit rows every `interval_seconds` (PAYOPS_AUDIT_SEAL_INTERVAL_SECONDS, as
    the scheduler's audit_seal job), so the chain trails the log by about that much."""
    while True:
        try:
            await audit.seal(pool)
        except Exception as exc:  # whatever the database did, seal again next time
            log.warning("audit sealing failed, will retry: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(interval_seconds)


def service_app(running: Running) -> web.Application:
    """The whole HTTP service: the API, Slack (when configured) and background work."""
    svc = running.services
    app = create_app(svc)
    app[OPS_RUNNER] = _operator_runner(running)
    if svc.settings.slack_bot_token is not None or svc.settings.slack_signing_secret is not None:
        from bot.slack_app import add_slack

        add_slack(app, svc, running.rpc)

    async def background(app: web.Application) -> AsyncIterator[None]:
        # Without the scheduler (PAYOPS_SCHEDULER_ENABLED=false) this replica still seals
        # the audit log; sealing is serialized in the database, so replicas never clash.
        task = None
        if not svc.settings.scheduler_enabled:
            task = asyncio.create_task(
                _seal_audit_log(svc.pool, svc.settings.audit_seal_interval_seconds)
            )
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await audit.seal(svc.pool)

    app.cleanup_ctx.append(background)
    if svc.settings.scheduler_enabled:
        from bot.scheduler import scheduler_context

        # After `background`: cleanup runs in reverse, so the scheduler stops first and
        # the final seal chains whatever its last runs wrote.
        app.cleanup_ctx.append(scheduler_context(svc, running.rpc))
    return app


def _operator_runner(running: Running) -> OpsRunner:
    """The commands of `POST /v1/ops/{command}` (bot/ops.py), posting to Slack when a bot
    token is configured."""
    from bot.ops import operator_runner
    from bot.slack_app import web_client

    svc = running.services
    client = web_client(svc) if svc.settings.slack_bot_token is not None else None
    return operator_runner(svc, running.rpc, client)


def dev_jwt_secret(data_dir: Path) -> str:
    """A per-machine development secret for `payops up` and `payops token`."""
    path = data_dir / DEV_SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret
