"""`payops snapshot` and `payops restore` on a real PostgreSQL: the round trip gives back the
same ledger totals, a restore is all or nothing, and a changed dump or a missing confirmation
is refused before anything is touched."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from core import audit, db, ledger
from core.ledger import LedgerKind, adjustment_postings
from payops import cli, restore
from payops.pgtools import SnapshotError, dsn_with_database, libpq_target
from payops.restore import open_snapshot, restore_command
from payops.snapshot import LedgerTotals, Manifest, ledger_totals, sha256_file, take_snapshot
from tests.e2e.procs import wait_until
from tests.support import (
    ScriptedVerifier,
    api_client,
    bearer,
    build_services,
    service_bearer,
    signature,
)

pytestmark = pytest.mark.timeout(90)

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


async def do_business(database_url: str) -> None:
    """Purchases verified through the real API, a pending intent and a debit."""
    pool = await db.create_pool(database_url, min_size=1, max_size=4)
    try:
        async with api_client(build_services(pool, ScriptedVerifier())) as client:
            for user, credits in (("alice", 5), ("bob", 7), ("alice", 3)):
                created = await client.post(
                    "/v1/purchase-intents", json={"credits": credits}, headers=bearer(user)
                )
                intent = await created.json()
                verified = await client.post(
                    f"/v1/purchase-intents/{intent['id']}/verify",
                    json={"signature": signature()},
                    headers=bearer(user),
                )
                assert verified.status == 200, await verified.text()
            pending = await client.post(
                "/v1/purchase-intents", json={"credits": 2}, headers=bearer("carol")
            )
            assert pending.status == 201
            debit = await client.post(
                "/v1/credits/debits",
                json={"user_id": "alice", "credits": 4, "reason": "render"},
                headers={**service_bearer(), "Idempotency-Key": "order-1"},
            )
            assert debit.status == 201, await debit.text()
        await audit.seal(pool)
    finally:
        await pool.close()


def audited(totals: LedgerTotals) -> LedgerTotals:
    """The totals after a restore: the snapshot's, plus the audit rows of the restore and of
    the verify gate it leaves closed."""
    return replace(totals, audit_rows=totals.audit_rows + 2)


async def totals_of(dsn: str) -> LedgerTotals:
    conn = await db.connect(dsn)
    try:
        return await ledger_totals(conn)
    finally:
        await conn.close()


async def execute(dsn: str, *statements: str) -> None:
    conn = await db.connect(dsn)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


async def damage(dsn: str) -> None:
    """What happens after the snapshot: more business, and a newer release's migration."""
    conn = await db.connect(dsn)
    try:
        async with conn.transaction():
            await ledger.post(
                conn,
                kind=LedgerKind.ADJUSTMENT,
                postings=adjustment_postings("bob", 1000),
                created_by="a bad release",
            )
        await conn.execute("CREATE TABLE from_a_newer_release (id int)")
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, 'newer')",
            db.latest_version() + 1,
        )
    finally:
        await conn.close()


@pytest.fixture
async def snapshot(database_url: str, tmp_path: Path) -> tuple[Path, Manifest]:
    await do_business(database_url)
    return await take_snapshot(database_url, tmp_path / "snapshots", now=NOW)


@pytest.fixture
async def new_database(pg_admin_dsn: str) -> AsyncIterator[str]:
    name = "payops_restored_copy"
    yield name
    conn = await asyncpg.connect(pg_admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_the_manifest_holds_the_ledger_totals_and_the_dump_hash(
    database_url: str, snapshot: tuple[Path, Manifest]
) -> None:
    path, manifest = snapshot
    t = manifest.totals
    assert t == await totals_of(database_url)
    assert t.schema_version == db.latest_version()
    assert (t.ledger_transactions, t.ledger_entries, t.entries_sum) == (4, 8, 0)
    assert t.user_balances_sum == 5 + 7 + 3 - 4
    assert t.sum_by_account_kind == {"user": 11, "system": -11}
    assert t.sum_by_system_account["system:token_sales"] == -15
    assert t.sum_by_system_account["system:spend"] == 4
    assert t.users == 2
    assert t.audit_rows > 0
    assert t.intents_by_status == {"PENDING": 1, "CONFIRMED": 3, "REJECTED": 0, "EXPIRED": 0}
    on_disk = json.loads(path.read_text())
    assert on_disk["schema_version"] == t.schema_version
    assert on_disk["created_at"] == "2025-06-01T12:00:00Z"
    assert (
        path.name
        == f"payops-snapshot-{libpq_target(database_url).database}-20250601T120000Z.manifest.json"
    )
    assert open_snapshot(path).manifest == manifest  # the sha256 matches


async def test_restore_brings_back_the_totals_and_drops_what_came_later(
    database_url: str, snapshot: tuple[Path, Manifest], capsys: pytest.CaptureFixture[str]
) -> None:
    path, manifest = snapshot
    await damage(database_url)
    assert (await totals_of(database_url)) != manifest.totals

    dump = path.with_name(manifest.dump_file)
    assert await restore_command(database_url, dump, yes=True, operator="U_OPS") == 0
    out = capsys.readouterr().out
    assert "RESTORED: every total matches the snapshot." in out
    assert "✗" not in out

    assert await totals_of(database_url) == audited(manifest.totals)
    conn = await db.connect(database_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('from_a_newer_release')") is None
        assert await db.schema_version(conn) == db.latest_version()
        assert (await ledger.health(conn)).ok
        assert await ledger.balance(conn, "bob") == 7
        restored = await conn.fetchrow(
            "SELECT actor, source, after FROM audit_log WHERE action = 'database.restored'"
        )
        assert restored is not None
        assert (restored["actor"], restored["source"]) == ("U_OPS", "cli")
        assert restored["after"]["sha256"] == manifest.dump_sha256
        await audit.seal(conn)
        assert (await audit.verify_chain(conn)).ok
    finally:
        await conn.close()
    # The restored database is one payops runs on: migrating it again changes nothing.
    assert (await db.migrate(database_url)).applied == []


async def test_a_dump_changed_after_the_snapshot_is_refused_untouched(
    database_url: str, snapshot: tuple[Path, Manifest]
) -> None:
    path, manifest = snapshot
    await damage(database_url)
    before = await totals_of(database_url)
    dump = path.with_name(manifest.dump_file)
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="does not match its manifest"):
        await restore_command(database_url, path, yes=True, operator="U_OPS")
    assert await totals_of(database_url) == before


async def test_restore_without_confirmation_changes_nothing(
    database_url: str, snapshot: tuple[Path, Manifest], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = snapshot
    await damage(database_url)
    before = await totals_of(database_url)
    name = libpq_target(database_url).database
    prompts: list[str] = []

    def answer(text: str) -> str:
        prompts.append(text)
        return "payops"  # not this database's name

    def no_answer(text: str) -> str:
        raise EOFError

    assert await restore_command(database_url, path, yes=False, operator="U", ask=answer) == 1
    assert await restore_command(database_url, path, yes=False, operator="U", ask=no_answer) == 1
    assert f"Type the database name ({name})" in prompts[0]
    assert "Not confirmed: nothing was changed." in capsys.readouterr().err
    assert await totals_of(database_url) == before

    assert (
        await restore_command(database_url, path, yes=False, operator="U", ask=lambda _: name) == 0
    )


async def test_a_failed_restore_rolls_back_entirely(
    database_url: str, snapshot: tuple[Path, Manifest]
) -> None:
    """A dump whose data is corrupt (with a manifest forged to match) fails half way, after
    the old tables were dropped in the same transaction: nothing may change."""
    path, manifest = snapshot
    await damage(database_url)
    before = await totals_of(database_url)
    dump = path.with_name(manifest.dump_file)
    data = bytearray(dump.read_bytes())
    for i in range(len(data) - 300, len(data)):  # table data comes last, after the TOC
        data[i] ^= 0x5A
    dump.write_bytes(bytes(data))
    forged = json.loads(path.read_text())
    forged["dump"]["sha256"], forged["dump"]["bytes"] = sha256_file(dump)
    path.write_text(json.dumps(forged))
    with pytest.raises(SnapshotError, match=r"the restore was rolled back: (pg_restore|psql): "):
        await restore_command(database_url, path, yes=True, operator="U_OPS")
    # Nothing changed but the verify gate, closed (and audited) before the restore began.
    assert await totals_of(database_url) == replace(before, audit_rows=before.audit_rows + 1)
    conn = await db.connect(database_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('from_a_newer_release')") is not None
    finally:
        await conn.close()


async def test_totals_that_differ_from_the_manifest_exit_non_zero(
    database_url: str, snapshot: tuple[Path, Manifest], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = snapshot
    edited = json.loads(path.read_text())
    edited["totals"]["user_balances_sum"] += 1  # the dump is intact; the expectation is not
    path.write_text(json.dumps(edited))
    assert await restore_command(database_url, path, yes=True, operator="U_OPS") == 1
    out = capsys.readouterr().out
    assert "MISMATCH: 1 total(s) differ" in out
    assert [line for line in out.splitlines() if line.endswith("✗")] == [
        next(line for line in out.splitlines() if "user balances sum" in line)
    ]


async def test_restore_into_a_new_database_leaves_the_configured_one_alone(
    database_url: str,
    snapshot: tuple[Path, Manifest],
    new_database: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, manifest = snapshot
    await damage(database_url)
    before = await totals_of(database_url)
    code = await restore_command(
        database_url, path, yes=False, operator="U_OPS", new_database=new_database
    )
    assert code == 0
    assert f"point PAYOPS_DATABASE_URL at database {new_database}" in capsys.readouterr().out
    assert await totals_of(dsn_with_database(database_url, new_database)) == audited(
        manifest.totals
    )
    assert await totals_of(database_url) == before
    with pytest.raises(SnapshotError, match="already exists"):
        await restore_command(
            database_url, path, yes=True, operator="U_OPS", new_database=new_database
        )


async def test_a_snapshot_taken_while_writes_go_on_matches_its_dump(
    database_url: str, tmp_path: Path, new_database: str
) -> None:
    """The totals are read in the dump's own database snapshot, not a moment later."""
    await do_business(database_url)
    stop = asyncio.Event()

    async def keep_writing() -> int:
        written = 0
        conn = await db.connect(database_url)
        try:
            while not stop.is_set() and written < 2000:
                async with conn.transaction():
                    await ledger.post(
                        conn,
                        kind=LedgerKind.ADJUSTMENT,
                        postings=adjustment_postings(f"user{written % 7}", 1),
                        created_by="load",
                    )
                written += 1
        finally:
            await conn.close()
        return written

    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(0.2)
    try:
        path, manifest = await take_snapshot(database_url, tmp_path, now=NOW)
    finally:
        stop.set()
        written = await writer
    assert written > 0
    assert manifest.totals != await totals_of(database_url)  # writes went on after it
    assert (
        await restore_command(database_url, path, yes=True, operator="U", new_database=new_database)
        == 0
    )
    assert await totals_of(dsn_with_database(database_url, new_database)) == audited(
        manifest.totals
    )


async def test_the_cli_snapshots_and_restores(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await do_business(database_url)
    monkeypatch.setenv("PAYOPS_DATABASE_URL", database_url)
    monkeypatch.setenv("PAYOPS_LOG_LEVEL", "WARNING")
    out_dir = tmp_path / "snaps"
    assert await asyncio.to_thread(cli.main, ["snapshot", "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "Snapshot of database" in printed
    (manifest_path,) = out_dir.glob("*.manifest.json")
    assert f"Restore with: payops restore {manifest_path}" in printed
    await damage(database_url)

    monkeypatch.setattr("sys.stdin", io.StringIO("no\n"))
    assert await asyncio.to_thread(cli.main, ["restore", str(manifest_path)]) == 1
    assert "Not confirmed" in capsys.readouterr().err

    code = await asyncio.to_thread(
        cli.main, ["restore", str(manifest_path), "--yes", "--as", "U_CLI"]
    )
    assert code == 0
    assert "RESTORED" in capsys.readouterr().out

    manifest_path.with_name(manifest_path.name.replace(".manifest.json", ".dump")).write_bytes(
        b"PGDMP not really"
    )
    assert await asyncio.to_thread(cli.main, ["restore", str(manifest_path), "--yes"]) == 1
    assert "does not match its manifest" in capsys.readouterr().err


async def test_an_unmigrated_database_is_not_snapshotted(
    empty_database_url: str, tmp_path: Path
) -> None:
    with pytest.raises(SnapshotError, match="no payops schema"):
        await take_snapshot(empty_database_url, tmp_path, now=NOW)
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240


def test_a_manifest_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.manifest.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(SnapshotError, match="not a payops snapshot manifest"):
        open_snapshot(path)
    with pytest.raises(SnapshotError, match="is missing"):
        open_snapshot(tmp_path / "y.dump")
    with pytest.raises(SnapshotError, match=r"expected a \.dump or \.manifest\.json"):
        open_snapshot(tmp_path / "z.txt")


async def test_a_restore_in_place_under_a_connected_client_is_refused_unless_forced(
    database_url: str, snapshot: tuple[Path, Manifest], capsys: pytest.CaptureFixture[str]
) -> None:
    path, manifest = snapshot
    await damage(database_url)
    before = await totals_of(database_url)
    service = await db.connect(database_url)  # a running service's connection
    try:
        assert await restore_command(database_url, path, yes=True, operator="U_OPS") == 2
        err = capsys.readouterr().err
        assert "1 other client(s) are connected" in err
        assert "--force" in err
        assert await totals_of(database_url) == before  # nothing changed, gate included

        assert (
            await restore_command(database_url, path, yes=True, operator="U_OPS", force=True) == 0
        )
    finally:
        await service.close()
    assert await totals_of(database_url) == audited(manifest.totals)
    conn = await db.connect(database_url)
    try:
        verify = await conn.fetchrow(
            "SELECT is_open, reason, changed_by FROM gate_switches WHERE name = 'verify'"
        )
    finally:
        await conn.close()
    assert verify is not None
    assert verify["is_open"] is False
    assert verify["reason"].startswith("restored from snapshot")
    assert verify["changed_by"] == "U_OPS"


async def test_a_restore_waits_for_a_running_migration_without_blocking_its_index_build(
    database_url: str, snapshot: tuple[Path, Manifest]
) -> None:
    """A `payops migrate` holds the migration lock and builds an index CONCURRENTLY, which
    waits for every open transaction: the restore waits for the lock outside any transaction
    (and before it closes the gate), so the build finishes, and the restore runs once the
    migration lets go."""
    path, manifest = snapshot
    await damage(database_url)
    before = await totals_of(database_url)
    migration = await db.connect(database_url)
    try:
        await migration.execute("SELECT pg_advisory_lock($1)", db.MIGRATE_LOCK_KEY)
        restoring = asyncio.create_task(
            restore_command(database_url, path, yes=True, operator="U_OPS", force=True)
        )

        async def restore_polls_the_lock() -> bool:
            return bool(
                await migration.fetchval(
                    """SELECT count(*) FROM pg_stat_activity
                       WHERE datname = current_database() AND pid <> pg_backend_pid()
                         AND query LIKE '%pg_try_advisory_lock%'"""
                )
            )

        await wait_until(restore_polls_the_lock, "the restore polling the lock", within=20)
        async with asyncio.timeout(20):
            await migration.execute(
                "CREATE INDEX CONCURRENTLY migration_probe ON ledger_entries (transaction_id)"
            )
        assert not restoring.done()
        assert await totals_of(database_url) == before  # nothing yet, the gate included
        await migration.execute("SELECT pg_advisory_unlock($1)", db.MIGRATE_LOCK_KEY)
        assert await restoring == 0
    finally:
        await migration.close()
    assert await totals_of(database_url) == audited(manifest.totals)


async def test_a_restore_gives_up_on_a_migration_that_holds_the_lock_and_changes_nothing(
    database_url: str, snapshot: tuple[Path, Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = snapshot
    await damage(database_url)
    before = await totals_of(database_url)
    monkeypatch.setattr(restore, "MIGRATE_LOCK_WAIT_SECONDS", 0.5)
    migration = await db.connect(database_url)
    try:
        await migration.execute("SELECT pg_advisory_lock($1)", db.MIGRATE_LOCK_KEY)
        with pytest.raises(SnapshotError, match=r"held the migration lock for more than 0.5s"):
            await restore_command(database_url, path, yes=True, operator="U_OPS", force=True)
    finally:
        await migration.close()
    assert await totals_of(database_url) == before  # the gate too: it was never closed
