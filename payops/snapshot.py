"""`payops snapshot`: the runbook's "Take DB snapshot" (Operator Checklist, before deploy).

A snapshot is two files side by side:

    payops-snapshot-<database>-<UTC time>.dump           pg_dump custom format (-Fc)
    payops-snapshot-<database>-<UTC time>.manifest.json  when, schema version, the ledger
                                                          totals, the dump's size and sha256

The totals are read inside the very database snapshot that pg_dump dumps
(`pg_export_snapshot()` + `pg_dump --snapshot`), so they describe the dump exactly even while
the service keeps writing. `payops restore` (payops/restore.py) checks the sha256 and, after
restoring, recomputes the totals and compares them with these.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import asyncpg

from core import db
from payops.pgtools import SnapshotError, libpq_target, pg_tool, run_tool

FORMAT: Final = "payops-snapshot/1"
DUMP_SUFFIX: Final = ".dump"
MANIFEST_SUFFIX: Final = ".manifest.json"
INTENT_STATUSES: Final = ("PENDING", "CONFIRMED", "REJECTED", "EXPIRED")
_CHUNK: Final = 1 << 16


# --- ledger totals ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    """What a snapshot must reproduce: counts and sums over the ledger and around it."""

    schema_version: int
    ledger_transactions: int
    ledger_entries: int
    entries_sum: int
    sum_by_account_kind: dict[str, int]
    sum_by_system_account: dict[str, int]
    user_balances_sum: int
    users: int
    audit_rows: int
    intents_by_status: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> LedgerTotals:
        try:
            return cls(
                schema_version=int(data["schema_version"]),
                ledger_transactions=int(data["ledger_transactions"]),
                ledger_entries=int(data["ledger_entries"]),
                entries_sum=int(data["entries_sum"]),
                sum_by_account_kind=_int_map(data["sum_by_account_kind"]),
                sum_by_system_account=_int_map(data["sum_by_system_account"]),
                user_balances_sum=int(data["user_balances_sum"]),
                users=int(data["users"]),
                audit_rows=int(data["audit_rows"]),
                intents_by_status=_int_map(data["intents_by_status"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"the manifest's totals are malformed ({exc!r})") from None

    def lines(self) -> dict[str, int]:
        """Every total under a label fit for a table, in display order."""
        out = {
            "schema version": self.schema_version,
            "ledger transactions": self.ledger_transactions,
            "ledger entries": self.ledger_entries,
            "sum of all entries": self.entries_sum,
        }
        out |= {f"sum, {kind} accounts": v for kind, v in self.sum_by_account_kind.items()}
        out |= {f"sum, {name}": v for name, v in self.sum_by_system_account.items()}
        out |= {"user balances sum": self.user_balances_sum, "users": self.users}
        out |= {"audit rows": self.audit_rows}
        out |= {f"intents {s}": n for s, n in self.intents_by_status.items()}
        return out


def _int_map(value: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in dict(value).items()}


async def ledger_totals(conn: asyncpg.Connection) -> LedgerTotals:
    """The totals of a migrated payops database, read in the caller's transaction."""
    row = await conn.fetchrow(
        """SELECT
             (SELECT count(*) FROM ledger_transactions) AS transactions,
             (SELECT count(*) FROM ledger_entries) AS entries,
             (SELECT coalesce(sum(amount), 0) FROM ledger_entries) AS entries_sum,
             (SELECT coalesce(sum(balance), 0) FROM user_balances) AS balances_sum,
             (SELECT count(*) FROM accounts WHERE kind = 'user') AS users,
             (SELECT count(*) FROM audit_log) AS audit_rows"""
    )
    assert row is not None
    by_kind = {"user": 0, "system": 0}
    by_system: dict[str, int] = {}
    for r in await conn.fetch(
        """SELECT a.kind, a.name, coalesce(sum(e.amount), 0) AS total
           FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
           GROUP BY a.kind, a.name ORDER BY a.name"""
    ):
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0) + int(r["total"])
        if r["kind"] == "system":
            by_system[r["name"]] = int(r["total"])
    intents = dict.fromkeys(INTENT_STATUSES, 0)
    for r in await conn.fetch("SELECT status, count(*) AS n FROM purchase_intents GROUP BY 1"):
        intents[r["status"]] = int(r["n"])
    return LedgerTotals(
        schema_version=await db.schema_version(conn),
        ledger_transactions=int(row["transactions"]),
        ledger_entries=int(row["entries"]),
        entries_sum=int(row["entries_sum"]),
        sum_by_account_kind=by_kind,
        sum_by_system_account=by_system,
        user_balances_sum=int(row["balances_sum"]),
        users=int(row["users"]),
        audit_rows=int(row["audit_rows"]),
        intents_by_status=intents,
    )


@dataclass(frozen=True, slots=True)
class Difference:
    """One total, as the manifest has it and as the database has it now."""

    label: str
    expected: int | None
    actual: int | None

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


def compare(expected: LedgerTotals, actual: LedgerTotals) -> list[Difference]:
    """Every total side by side (labels of either), in display order."""
    want, got = expected.lines(), actual.lines()
    labels = list(want) + [label for label in got if label not in want]
    return [Difference(label, want.get(label), got.get(label)) for label in labels]


# --- the manifest ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manifest:
    """The JSON file next to a dump: enough to check the dump and what it must restore."""

    created_at: datetime
    database: str
    server_version: str
    pg_dump_version: str
    payops_version: str
    dump_file: str
    dump_bytes: int
    dump_sha256: str
    totals: LedgerTotals

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "database": self.database,
            "server_version": self.server_version,
            "pg_dump_version": self.pg_dump_version,
            "payops_version": self.payops_version,
            "schema_version": self.totals.schema_version,
            "dump": {"file": self.dump_file, "bytes": self.dump_bytes, "sha256": self.dump_sha256},
            "totals": self.totals.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SnapshotError(f"not a payops snapshot manifest (format {FORMAT} expected)")
        try:
            dump = data["dump"]
            return cls(
                created_at=datetime.fromisoformat(str(data["created_at"])),
                database=str(data["database"]),
                server_version=str(data["server_version"]),
                pg_dump_version=str(data["pg_dump_version"]),
                payops_version=str(data["payops_version"]),
                # Only a file name: a manifest cannot point outside its own folder.
                dump_file=Path(str(dump["file"])).name,
                dump_bytes=int(dump["bytes"]),
                dump_sha256=str(dump["sha256"]).lower(),
                totals=LedgerTotals.from_json(data["totals"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"the manifest is malformed ({exc!r})") from None


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex sha256, size in bytes) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _payops_version() -> str:
    try:
        return metadata.version("payops")
    except metadata.PackageNotFoundError:
        return "unknown"


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


# --- snapshot --------------------------------------------------------------------------------


async def take_snapshot(
    dsn: str, out_dir: Path, *, now: datetime, bin_dir: Path | None = None
) -> tuple[Path, Manifest]:
    """Dump the database into `out_dir` with its manifest; returns (manifest path, manifest)."""
    pg_dump = pg_tool("pg_dump", bin_dir)
    target = libpq_target(dsn)
    safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", target.database)
    stem = f"payops-snapshot-{safe_name}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    out_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before the dump)
    dump, manifest_path = out_dir / (stem + DUMP_SUFFIX), out_dir / (stem + MANIFEST_SUFFIX)
    if dump.exists() or manifest_path.exists():
        raise SnapshotError(f"{dump} already exists; wait a second or choose another --out")
    partial = dump.with_name(dump.name + ".partial")
    version_line = (await run_tool([str(pg_dump), "--version"], target, "pg_dump")).strip()
    try:
        conn = await db.connect(dsn)
        try:
            # One snapshot for the totals and the dump: pg_dump imports this transaction's.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                if await db.schema_version(conn) == 0:
                    raise SnapshotError(
                        f"database {target.database} has no payops schema: nothing to snapshot"
                    )
                exported = await conn.fetchval("SELECT pg_export_snapshot()")
                totals = await ledger_totals(conn)
                server_version = str(await conn.fetchval("SHOW server_version"))
                await run_tool(
                    [
                        str(pg_dump),
                        "--format=custom",
                        f"--snapshot={exported}",
                        "--lock-wait-timeout=60s",
                        f"--file={partial}",
                        f"--dbname={target.uri}",
                    ],
                    target,
                    "pg_dump",
                )
        finally:
            await conn.close()
        digest, size = await asyncio.to_thread(sha256_file, partial)
        partial.replace(dump)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    manifest = Manifest(
        created_at=now.astimezone(UTC),
        database=target.database,
        server_version=server_version,
        pg_dump_version=version_line,
        payops_version=_payops_version(),
        dump_file=dump.name,
        dump_bytes=size,
        dump_sha256=digest,
        totals=totals,
    )
    _write_atomically(manifest_path, json.dumps(manifest.to_json(), indent=2) + "\n")
    return manifest_path, manifest


def _size(n: int) -> str:
    value, unit = float(n), "bytes"
    for bigger in ("kB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def totals_summary(t: LedgerTotals) -> str:
    """One line about what a snapshot holds."""
    return (
        f"schema version {t.schema_version}; {t.ledger_transactions} ledger transactions, "
        f"{t.ledger_entries} entries (sum {t.entries_sum}); {t.users} users, balances sum "
        f"{t.user_balances_sum}; {t.audit_rows} audit rows"
    )


def render_snapshot(manifest_path: Path, m: Manifest) -> str:
    """What `payops snapshot` prints: where the files are and what they hold."""
    dump = manifest_path.with_name(m.dump_file)
    return "\n".join(
        [
            f"Snapshot of database {m.database} (PostgreSQL {m.server_version}) taken "
            f"{m.created_at:%Y-%m-%d %H:%M:%S} UTC",
            f"  dump      {dump} ({_size(m.dump_bytes)})",
            f"  sha256    {m.dump_sha256}",
            f"  manifest  {manifest_path}",
            f"  holds     {totals_summary(m.totals)}",
            f"Restore with: payops restore {manifest_path}",
        ]
    )


async def snapshot_command(
    dsn: str, out_dir: Path, *, bin_dir: Path | None = None, now: datetime | None = None
) -> int:
    """`payops snapshot`: take one and say where it is; SnapshotError when it cannot."""
    path, manifest = await take_snapshot(
        dsn, out_dir, now=now or datetime.now(UTC), bin_dir=bin_dir
    )
    print(render_snapshot(path, manifest), flush=True)
    return 0
