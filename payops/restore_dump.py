"""The restore itself: a target's payops objects replaced by a dump's, all or nothing.

psql gets `BEGIN`, a preamble (drop what a newer schema may have added), pg_restore's script
(`--clean --if-exists --no-owner`), and `COMMIT` only once pg_restore has finished cleanly. A
failure anywhere — a replica holding a lock for more than the lock timeout, a truncated dump,
a full disk — ends psql's session without `COMMIT`, so PostgreSQL rolls everything back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Final

from payops.pgtools import SnapshotError, Target, child_env, pg_tool, run_tool, tail

_CHUNK: Final = 1 << 16

# Runs first inside the restore transaction (`payops migrate` is kept out by the migration
# lock, held meanwhile by another session): the lock timeout turns "a replica still uses the
# tables" into a quick, clean failure. The loop drops every table, view, sequence and routine
# of the public schema that no extension owns, so what a newer migration added does not
# survive the restore of an older snapshot (pg_restore --clean drops only what the dump
# contains); extensions are left alone.
RESTORE_PREAMBLE: Final = """
SET client_min_messages = warning;
SET lock_timeout = '30s';
DO $payops_restore$
DECLARE
    stmt text;
BEGIN
    FOREACH stmt IN ARRAY coalesce((
        SELECT array_agg(s ORDER BY o) FROM (
            SELECT 1 AS o, format('DROP %s IF EXISTS %s CASCADE',
                       CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                      WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                                      ELSE 'TABLE' END,
                       c.oid::regclass) AS s
              FROM pg_class c
             WHERE c.relnamespace = 'public'::regnamespace
               AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                  AND d.objid = c.oid AND d.deptype = 'e')
            UNION ALL
            SELECT 2, format('DROP ROUTINE IF EXISTS %s CASCADE', p.oid::regprocedure)
              FROM pg_proc p
             WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                                  AND d.objid = p.oid AND d.deptype = 'e')
        ) todo), '{}')
    LOOP
        EXECUTE stmt;
    END LOOP;
END
$payops_restore$;
"""


async def restore_dump(target: Target, dump: Path, *, bin_dir: Path | None = None) -> None:
    """Replace the payops objects of `target` with those of `dump`, all or nothing."""
    pg_restore, psql = pg_tool("pg_restore", bin_dir), pg_tool("psql", bin_dir)
    # Reading the table of contents first also proves the dump is a readable archive.
    toc = await run_tool([str(pg_restore), "--list", str(dump)], target, "pg_restore --list")
    if re.search(r"^\d+;\s+\d+\s+\d+\s+(BLOB|LARGE OBJECT)\b", toc, re.MULTILINE):
        # pg_restore wraps large objects in its own BEGIN/COMMIT, which would break atomicity.
        raise SnapshotError("the dump holds large objects, which payops never writes")
    env = child_env(target)
    producer = await asyncio.create_subprocess_exec(
        str(pg_restore), "--clean", "--if-exists", "--no-owner", "--file=-", str(dump),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    consumer = await asyncio.create_subprocess_exec(
        str(psql), "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", f"--dbname={target.uri}",
        env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert producer.stderr is not None
    assert consumer.stderr is not None
    errors = asyncio.gather(producer.stderr.read(), consumer.stderr.read())
    try:
        committed = await _pump(producer, consumer)
        produced, consumed = await producer.wait(), await consumer.wait()
    finally:
        for proc in (producer, consumer):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        p_err, c_err = await errors
    if consumed != 0:
        raise SnapshotError(f"the restore was rolled back: psql: {tail(c_err)}")
    if produced != 0 or not committed:
        raise SnapshotError(f"the restore was rolled back: pg_restore: {tail(p_err)}")


async def _pump(producer: asyncio.subprocess.Process, consumer: asyncio.subprocess.Process) -> bool:
    """Feed psql `BEGIN`, the preamble and pg_restore's script, and `COMMIT` only when
    pg_restore exited 0: without it psql's session ends and PostgreSQL rolls all back."""
    assert producer.stdout is not None
    assert consumer.stdin is not None
    sink = consumer.stdin
    try:
        sink.write(b"BEGIN;\n" + RESTORE_PREAMBLE.encode())
        while chunk := await producer.stdout.read(_CHUNK):
            sink.write(chunk)
            await sink.drain()
        if await producer.wait() != 0:
            return False
        sink.write(b"\nCOMMIT;\n")
        await sink.drain()
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False  # psql stopped at an error; its stderr says which
    finally:
        sink.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await sink.wait_closed()
