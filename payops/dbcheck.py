"""Reaching `PAYOPS_DATABASE_URL` before a command starts: a database that is down, unknown,
refuses the credentials, or a URL that does not parse is one `ConfigError` line, not a
traceback from the middle of the command."""

from __future__ import annotations

import asyncpg

from core.config import Settings
from core.errors import ConfigError
from payops.urls import public_url

CONNECT_TIMEOUT_SECONDS = 10.0


async def check_database(settings: Settings) -> None:
    """Connect once to the configured database (nothing to do for the embedded one)."""
    if settings.database_url is None:
        return
    dsn = settings.database_url.get_secret_value()
    try:
        shown = public_url(dsn)
    except ValueError:
        shown = "(unparseable)"
    try:
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_SECONDS)
    except (ValueError, asyncpg.ClientConfigurationError) as exc:
        raise ConfigError(
            f"PAYOPS_DATABASE_URL is malformed ({exc}): expected "
            "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
        ) from exc
    except (OSError, TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ConfigError(
            f"cannot reach the database at PAYOPS_DATABASE_URL ({shown}): {reason}; "
            "is PostgreSQL running there?"
        ) from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ConfigError(
            f"the database at PAYOPS_DATABASE_URL ({shown}) refused the connection: {exc}"
        ) from exc
    await conn.close()
