"""`payops restore`: the runbook's "Restore DB snapshot if mismatch cannot be safely repaired
forward" (Rollback Safety, step 3).

1. The dump's sha256 and size are checked against its manifest before anything else: a
   dump that changed after it was taken is refused.
2. Unless --yes, the operator types the target database's name to confirm.
3. The migration lock is taken first, by a session of its own (`db.migrate_lock`): a
   `payops migrate` still running makes the restore wait for it, at most
   `MIGRATE_LOCK_WAIT_SECONDS`, and then stop with nothing changed.
4. The restore replaces every payops object of the target in ONE transaction
   (`payops.restore_dump`): psql gets `BEGIN`, a preamble (drop what a newer schema may have
   added), pg_restore's script (`--clean --if-exists --no-owner`), and `COMMIT` only once
   pg_restore has finished cleanly. A failure anywhere — a replica holding a lock for more
   than the lock timeout, a truncated dump, a full disk — rolls everything back.
5. The ledger totals are recomputed and compared with the manifest; any difference, or a
   broken ledger invariant, exits non-zero. The restore itself is then audited.

`--new-database NAME` restores into a new database on the same server instead, leaving the
configured one untouched (no confirmation needed): compare, then point
PAYOPS_DATABASE_URL at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncpg

from core import audit, db, gate, ledger
from core.audit import Actor
from core.gate import SwitchName
from core.ledger import LedgerHealth
from payops.pgtools import SnapshotError, dsn_with_database, libpq_target
from payops.restore_dump import restore_dump
from payops.snapshot import (
    DUMP_SUFFIX,
    MANIFEST_SUFFIX,
    Difference,
    Manifest,
    compare,
    ledger_totals,
    sha256_file,
    totals_summary,
)

MIGRATE_LOCK_WAIT_SECONDS: Final = 30.0  # for a `payops migrate` to finish before restoring


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot on disk whose dump matches its manifest."""

    dump: Path
    manifest_path: Path
    manifest: Manifest


def open_snapshot(path: Path) -> Snapshot:
    """The snapshot at `path` (its .dump or its .manifest.json), its sha256 checked.

    Raises SnapshotError when a file is missing, the manifest is malformed, or the dump is
    not byte for byte the one the manifest describes."""
    if path.name.endswith(MANIFEST_SUFFIX):
        manifest_path = path
    elif path.name.endswith(DUMP_SUFFIX):
        manifest_path = path.with_name(path.name.removesuffix(DUMP_SUFFIX) + MANIFEST_SUFFIX)
    else:
        raise SnapshotError(f"{path}: expected a {DUMP_SUFFIX} or {MANIFEST_SUFFIX} file")
    try:
        manifest = Manifest.from_json(json.loads(manifest_path.read_text()))
    except FileNotFoundError:
        raise SnapshotError(f"{manifest_path} is missing: no manifest, no restore") from None
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{manifest_path} is not JSON: {exc}") from None
    dump = manifest_path.with_name(manifest.dump_file)
    if not dump.is_file():
        raise SnapshotError(f"{dump} is missing")
    digest, size = sha256_file(dump)
    if digest != manifest.dump_sha256 or size != manifest.dump_bytes:
        raise SnapshotError(
            f"{dump} does not match its manifest (sha256 {digest}, {size} bytes; the manifest "
            f"says {manifest.dump_sha256}, {manifest.dump_bytes} bytes): it changed after the "
            "snapshot was taken — refusing to restore it"
        )
    return Snapshot(dump, manifest_path, manifest)


async def create_database(dsn: str, name: str) -> None:
    """CREATE DATABASE `name` on the server of `dsn`; refuses an existing one."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise SnapshotError("a new database's name is lower-case letters, digits and _")
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            raise SnapshotError(f"database {name} already exists: choose a new name")
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


# --- the command -----------------------------------------------------------------------------


def render_comparison(diffs: list[Difference], health: LedgerHealth) -> str:
    """The totals side by side (✓/✗), the ledger's invariants, and the verdict."""
    width = max(len(d.label) for d in diffs)
    lines = [f"{'Ledger totals'.ljust(width + 2)}{'snapshot':>12}{'restored':>12}"]
    for d in diffs:
        mark = "✓" if d.ok else "✗"
        want = "-" if d.expected is None else str(d.expected)
        got = "-" if d.actual is None else str(d.actual)
        lines.append(f"  {d.label.ljust(width)}{want:>12}{got:>12}  {mark}")
    if health.ok:
        lines.append("Ledger invariants: ✓ entries sum to 0, transactions balance, balances match")
    else:
        lines.append(
            f"Ledger invariants: ✗ entries sum to {health.total}, "
            f"{health.unbalanced_transactions} unbalanced transaction(s), "
            f"{health.balance_mismatches} cached balance(s) off"
        )
    bad = [d for d in diffs if not d.ok]
    if bad or not health.ok:
        lines.append(
            f"MISMATCH: {len(bad)} total(s) differ from the snapshot"
            + ("" if health.ok else " and the ledger breaks its invariants")
            + " — keep the payment flow closed (docs/OPERATIONS.md, Rollback Safety)."
        )
    else:
        lines.append("RESTORED: every total matches the snapshot.")
    return "\n".join(lines)


async def _schema_version_or_none(dsn: str) -> int | None:
    try:
        conn = await db.connect(dsn)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        return await db.schema_version(conn)
    finally:
        await conn.close()


async def restore_command(
    dsn: str,
    snapshot_path: Path,
    *,
    yes: bool,
    operator: str,
    new_database: str | None = None,
    bin_dir: Path | None = None,
    ask: Callable[[str], str] = input,
    force: bool = False,
) -> int:
    """`payops restore`: check, confirm, restore, compare. 0 only when every total matches;
    2 when other clients are connected to the database restored in place (unless `force`)."""
    snap = await asyncio.to_thread(open_snapshot, snapshot_path)
    m = snap.manifest
    print(f"Snapshot  {snap.dump}")
    print(f"  taken   {m.created_at:%Y-%m-%d %H:%M:%S} UTC from database {m.database}")
    print(f"  sha256  {m.dump_sha256} (matches the manifest)")
    print(f"  holds   {totals_summary(m.totals)}")
    target = libpq_target(dsn)
    actor = Actor(operator, "cli")
    if new_database is not None:
        await create_database(dsn, new_database)
        dsn, target = dsn_with_database(dsn, new_database), target.with_database(new_database)
        print(f"Target    new database {new_database} on {target.where}")
    else:
        refusal = await _in_place_refusal(dsn, target.database, target.where, force=force)
        if refusal is not None:
            print(refusal, file=sys.stderr)
            return 2
        if not yes and not await _confirmed(target.database, ask):
            print("Not confirmed: nothing was changed.", file=sys.stderr)
            return 1
    async with _migrations_kept_out(dsn):
        if new_database is None:
            await _close_gate(dsn, actor, "database restore in progress")
        print("Restoring...", flush=True)
        await restore_dump(target, snap.dump, bin_dir=bin_dir)
    ok, schema = await _compare_after(dsn, snap, actor)
    if schema < db.latest_version():
        print(
            f"Next: this payops needs schema version {db.latest_version()}; run `payops "
            "migrate` before it serves (not needed to run the image that took the snapshot)."
        )
    if new_database is not None:
        print(f"Next: point PAYOPS_DATABASE_URL at database {new_database} to use it.")
    return 0 if ok else 1


@contextlib.asynccontextmanager
async def _migrations_kept_out(dsn: str) -> AsyncIterator[None]:
    """The migration lock for the restore's length, or SnapshotError (nothing changed) when a
    `payops migrate` keeps it for more than `MIGRATE_LOCK_WAIT_SECONDS`."""
    try:
        async with db.migrate_lock(dsn, within=MIGRATE_LOCK_WAIT_SECONDS):
            yield
    except TimeoutError:
        raise SnapshotError(
            f"payops migrate (or another restore) held the migration lock for more than "
            f"{MIGRATE_LOCK_WAIT_SECONDS:g}s: nothing was changed; restore when it has finished"
        ) from None


async def _in_place_refusal(dsn: str, database: str, where: str, *, force: bool) -> str | None:
    """Why an in-place restore must not start now, or None. Prints what it found."""
    current = await _schema_version_or_none(dsn)
    now = "unreachable" if current is None else f"schema version {current}"
    print(f"Target    database {database} on {where} ({now})")
    print("This REPLACES every payops table, function and row in it with the snapshot's.")
    others = await _other_clients(dsn)
    if others and not force:
        return (
            f"payops restore: {len(others)} other client(s) are connected to database "
            f"{database} (pids {', '.join(map(str, others[:5]))}): stop the service first, "
            "or pass --force to restore under them"
        )
    if others:
        print(f"--force: restoring with {len(others)} other client(s) connected")
    return None


async def _confirmed(database: str, ask: Callable[[str], str]) -> bool:
    prompt = f"Type the database name ({database}) to restore, anything else to stop: "
    try:
        answer = await asyncio.to_thread(ask, prompt)
    except EOFError:
        answer = ""
    return answer.strip() == database


async def _other_clients(dsn: str) -> list[int]:
    """The backend pids of other sessions on the database (none when it is unreachable)."""
    try:
        conn = await db.connect(dsn)
    except (OSError, asyncpg.PostgresError):
        return []
    try:
        rows = await conn.fetch(
            """SELECT pid FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()
                 AND backend_type = 'client backend' ORDER BY pid"""
        )
        return [r["pid"] for r in rows]
    finally:
        await conn.close()


async def _close_gate(dsn: str, actor: Actor, reason: str) -> None:
    """Close the verify gate (audited), best effort: the database may be too broken to."""
    try:
        conn = await db.connect(dsn)
    except (OSError, asyncpg.PostgresError):
        return
    try:
        await gate.set_switch(conn, SwitchName.VERIFY, is_open=False, reason=reason, actor=actor)
        print(f"Verify gate closed: {reason}")
    except asyncpg.PostgresError as exc:
        print(f"(could not close the verify gate: {exc})")
    finally:
        await conn.close()


async def _compare_after(dsn: str, snap: Snapshot, actor: Actor) -> tuple[bool, int]:
    """The restored totals against the manifest, printed and audited, and the restored
    schema version; the gate left closed until someone reconciles and smoke-tests (the
    runbook's Rollback Safety)."""
    m = snap.manifest
    conn = await db.connect(dsn)
    try:
        totals = await ledger_totals(conn)
        health = await ledger.health(conn)
        diffs = compare(m.totals, totals)
        ok = health.ok and all(d.ok for d in diffs)
        # After the comparison, so the audit row of the restore is not counted in it.
        await audit.record(
            conn,
            actor,
            action="database.restored",
            subject=f"snapshot:{m.dump_sha256[:16]}",
            after={"dump": snap.dump.name, "sha256": m.dump_sha256, "totals_match": ok},
        )
    finally:
        await conn.close()
    print(render_comparison(diffs, health))
    await _close_gate(
        dsn,
        actor,
        f"restored from snapshot {m.dump_sha256[:16]}: reconcile and smoke-test before reopening",
    )
    return ok, totals.schema_version
