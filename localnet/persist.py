"""Keeping a local chain across restarts: its accounts, landed transactions and clock, saved
to one file and loaded back, so `payops up` comes back with the same mint, treasury, balances
and transaction history its database refers to.

The file is a pickle written by this module (atomically: a temporary file renamed over the
old one). It is development state in the user's own data directory, read only from there,
like PostgreSQL's files beside it. solders' error values do not pickle by themselves, so they
are reduced to their class and their parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pickle
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from solders.transaction_status import (
    InstructionErrorFieldless,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
)

from localnet.chain import LocalChain

FORMAT: Final = 1
SAVE_EVERY_SECONDS: Final = 0.5


def _by_name(value: Any) -> tuple[Any, tuple[Any, str]]:
    return getattr, (type(value), str(value).rsplit(".", 1)[-1])


def _instruction_error(value: TransactionErrorInstructionError) -> tuple[Any, tuple[Any, ...]]:
    return TransactionErrorInstructionError, (value.index, value.err)


class _Pickler(pickle.Pickler):
    dispatch_table: Final = {  # type: ignore[misc]
        TransactionErrorFieldless: _by_name,
        InstructionErrorFieldless: _by_name,
        TransactionErrorInstructionError: _instruction_error,
    }


def chain_state(chain: LocalChain) -> dict[str, Any]:
    """What a chain needs to come back as it was (programs come with LiteSVM itself)."""
    accounts = {}
    for address in chain.touched_addresses:
        account = chain.get_account(address)
        if account is not None and not account.executable:
            accounts[address] = account
    return {
        "format": FORMAT,
        "accounts": accounts,
        "records": sorted(chain.records(), key=lambda record: record.sequence),
        "seen": chain.seen_signatures(),
        "clock": chain.clock,
        "faucet": chain.faucet,
        "genesis_hash": chain.genesis_hash,
    }


def save_chain(chain: LocalChain, path: Path, meta: dict[str, Any]) -> None:
    """Write `chain` and `meta` (what the caller seeded it with) to `path`, atomically."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump({**chain_state(chain), "meta": meta})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(buffer.getvalue())
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


class ChainStateUnreadable(Exception):
    """The saved chain cannot be loaded (another payops version, or a damaged file)."""


def load_chain(path: Path) -> tuple[LocalChain, dict[str, Any]] | None:
    """The chain saved at `path` and its `meta`, or None when nothing was saved there."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as saved:
            # Our own file in the user's data directory (see the module docstring).
            state = pickle.load(saved)  # noqa: S301
    except Exception as exc:
        raise ChainStateUnreadable(f"{path} cannot be read: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ChainStateUnreadable(f"{path} was written by another version of payops")
    chain = LocalChain.restored(
        clock=state["clock"],
        faucet=state["faucet"],
        genesis_hash=state["genesis_hash"],
        accounts=state["accounts"],
        records=state["records"],
        seen=state["seen"],
    )
    return chain, dict(state["meta"])


@contextlib.asynccontextmanager
async def saved_while_running(
    chain: LocalChain, path: Path, meta: dict[str, Any]
) -> AsyncIterator[None]:
    """Save `chain` to `path` now, whenever it changes (checked twice a second), and on exit."""
    save_chain(chain, path, meta)
    saved = chain.version

    async def keep_saving() -> None:
        nonlocal saved
        while True:
            await asyncio.sleep(SAVE_EVERY_SECONDS)
            if chain.version != saved:
                saved = chain.version
                save_chain(chain, path, meta)

    task = asyncio.create_task(keep_saving())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        save_chain(chain, path, meta)
