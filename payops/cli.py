"""The `payops` command line.

payops up        everything on embedded defaults: PostgreSQL, the local chain, the service
payops serve     the service (HTTP API) against the configured database and RPC
payops migrate   apply migrations and the seed (idempotent)
payops token     print a development JWT for a user (or --operator, for `payops ops`)
payops localnet  serve a local Solana chain
payops demo      a whole purchase on the local chain, end to end
payops ops       the runbook commands (bot/ops.py: triage, gate, rollback-check, smoke, adjust,
                 recon, incident, webhooks, home), sent to the service with an operator token;
                 --break-glass when it is down
payops audit verify   check the audit log's hash chain
payops preflight  the deploy-day checks: mint and treasury on chain, schema and seed, settings
payops snapshot   pg_dump the database, with a manifest of its ledger totals
payops restore    restore a snapshot (sha256 checked, confirmed), then compare the totals
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import timedelta

from api.auth import DEBIT_SCOPE, max_lifetime, mint_token
from api.routes_ops import OPERATOR_SCOPE
from core import audit, db
from core.config import Settings, load_settings
from core.errors import ConfigError
from core.logs import configure
from payops import compose
from payops.cli_args import ops_options, parser
from payops.dbcheck import check_database
from payops.pgtools import SnapshotError
from payops.serving import run_loop, run_workers, serve_app, shared_port


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "ops":
        ops_options(args)
    debug = bool(getattr(args, "debug", False))
    try:
        return _run(args)
    except ConfigError as exc:
        if debug:
            traceback.print_exc()
        print(f"payops {args.command}: {exc.message}", file=sys.stderr)
        return 2
    except SnapshotError as exc:
        if debug:
            traceback.print_exc()
        print(f"payops {args.command}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    verbose = bool(getattr(args, "verbose", False))
    if args.command == "localnet":
        from localnet.server import run

        configure("INFO" if verbose else "WARNING", human=True)
        return run(args, prog="payops localnet")
    if args.command == "preflight":
        from payops.preflight import preflight_command
        from payops.up import with_stack_settings

        configure("INFO" if verbose else "WARNING", human=True)
        try:
            loaded: Settings | ConfigError = with_stack_settings(load_settings())
        except ConfigError as exc:
            loaded = exc
        return asyncio.run(preflight_command(loaded, as_json=args.json, skip=args.skip))
    settings = load_settings()
    if args.command == "serve":
        # A service: JSON lines for the log pipeline, at the configured level.
        configure(settings.log_level)
        return _serve_workers(settings, args.workers)
    # Commands run by hand print their answer; logs only say what went wrong.
    configure("INFO" if verbose else "WARNING", human=True)
    if args.command == "token":
        return _token(settings, args)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "up":
        from payops.up import up

        return asyncio.run(up(settings, args))
    if args.command == "demo":
        from payops.demo import DemoFailed, demo

        try:
            return asyncio.run(demo(settings, own_stack=args.own_stack, user=args.user))
        except DemoFailed as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
    if args.command == "ops":
        return _ops(settings, args)
    if args.command == "audit":
        return asyncio.run(_audit_verify(settings))
    if args.command in ("snapshot", "restore"):
        return asyncio.run(_snapshot_or_restore(settings, args))
    raise AssertionError(f"unhandled command {args.command}")


def _ops(settings: Settings, args: argparse.Namespace) -> int:
    command, words = args.ops_command, list(args.ops_args)
    if args.break_glass is not None:
        from payops.ops_cli import run_break_glass
        from payops.up import with_stack_settings

        settings = with_stack_settings(settings)
        asyncio.run(check_database(settings))
        return asyncio.run(
            run_break_glass(settings, args.operator, args.break_glass, command, words)
        )
    from payops import ops_remote

    token = ops_remote.read_token(args.token_file, os.environ.get("PAYOPS_OPERATOR_TOKEN"))
    ops_remote.check_claimed(args.operator, token)
    url = ops_remote.service_url(
        args.service_url, os.environ.get("PAYOPS_SERVICE_URL"), settings.data_dir
    )
    return asyncio.run(ops_remote.run_remote(ops_remote.Target(url, token), command, words))


def _token(settings: Settings, args: argparse.Namespace) -> int:
    if (args.user is None) == (args.operator is None):
        raise ConfigError("name one: payops token <user> or payops token --operator <id>")
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value()
    elif settings.jwt_public_key:
        raise ConfigError(
            "the service verifies RS256 tokens (PAYOPS_JWT_PUBLIC_KEY): mint them with your "
            "identity provider, payops cannot"
        )
    else:
        if not (settings.data_dir / compose.DEV_SECRET_FILE).exists():
            print(
                f"payops token: warning: {settings.data_dir} had no development secret, so "
                "one was made: this token will not verify against a stack already running "
                "with another data dir (set PAYOPS_DATA_DIR to the one `payops up` printed)",
                file=sys.stderr,
            )
        secret = compose.dev_jwt_secret(settings.data_dir)
    ttl = timedelta(hours=args.ttl_hours)
    longest = max_lifetime(settings, service=args.service)
    if longest and ttl.total_seconds() > longest:
        which = "SERVICE_" if args.service else ""
        raise ConfigError(
            f"the service refuses tokens living over {longest} s "
            f"(PAYOPS_JWT_{which}MAX_LIFETIME_SECONDS): lower --ttl-hours"
        )
    print(
        mint_token(
            secret,
            args.operator or args.user,
            ttl=ttl,
            scopes=(OPERATOR_SCOPE,) if args.operator else (DEBIT_SCOPE,) if args.service else (),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    )
    return 0


async def _migrate(settings: Settings) -> int:
    await check_database(settings)
    async with compose.database(settings) as dsn:
        result = await db.migrate(dsn)
    print(json.dumps({"applied": result.applied, "schema_version": result.current}))
    return 0


async def _audit_verify(settings: Settings) -> int:
    await check_database(settings)
    async with compose.database(settings) as dsn:
        conn = await db.connect(dsn)
        try:
            await audit.seal(conn)
            report = await audit.verify_chain(conn)
        finally:
            await conn.close()
    print(
        json.dumps(
            {
                "rows": report.rows,
                "sealed": report.sealed,
                "unsealed": report.unsealed,
                "ok": report.ok,
                "problems": report.problems,
            }
        )
    )
    return 0 if report.ok else 1


async def _snapshot_or_restore(settings: Settings, args: argparse.Namespace) -> int:
    from payops.restore import restore_command
    from payops.snapshot import snapshot_command

    async with compose.database(settings) as dsn:
        if args.command == "snapshot":
            return await snapshot_command(dsn, args.out, bin_dir=args.pg_bin_dir)
        return await restore_command(
            dsn,
            args.snapshot,
            yes=args.yes,
            operator=args.operator,
            new_database=args.new_database,
            bin_dir=args.pg_bin_dir,
            force=args.force,
        )


def _serve_workers(settings: Settings, workers: int) -> int:
    """One process, or `workers` forked ones sharing the port (payops/serving.py)."""
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if workers == 1:
        return run_loop(_serve(settings), settings.event_loop)
    if settings.database_url is None:
        raise ConfigError(
            "payops serve --workers needs PAYOPS_DATABASE_URL: the embedded database serves "
            "one process"
        )
    _check_serve_settings(settings)
    port, holder = shared_port(settings.http_host, settings.http_port)
    shared = settings.model_copy(update={"http_port": port})
    try:
        return run_workers(workers, lambda n: run_loop(_serve(shared, worker=n), shared.event_loop))
    finally:
        if holder is not None:
            holder.close()


def _check_serve_settings(settings: Settings) -> None:
    if settings.jwt_secret is None and not settings.jwt_public_key:
        raise ConfigError("set PAYOPS_JWT_SECRET (HS256) or PAYOPS_JWT_PUBLIC_KEY (RS256)")
    settings.payment_config()  # fail before starting anything when the treasury is unset


async def _serve(settings: Settings, *, worker: int | None = None) -> int:
    _check_serve_settings(settings)
    await check_database(settings)
    async with compose.database(settings) as dsn, compose.services(settings, dsn) as running:
        await serve_app(
            compose.service_app(running), settings.http_host, settings.http_port, worker=worker
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
