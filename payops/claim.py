"""One `payops up` per data directory: an exclusive lock on `<data_dir>/up.lock`, held for
as long as the stack runs and released by the kernel however the process ends.

The lock file also says who holds it (pid, ports, and the URLs once serving), so a second
`payops up` on the same directory can name the running one instead of fighting over its
PostgreSQL, its chain or its `up.json`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from core.errors import ConfigError

LOCK_FILE: Final = "up.lock"


class Claim:
    def __init__(self, fd: int, facts: dict[str, Any]) -> None:
        self._fd = fd
        self._facts = facts

    def write(self, **facts: Any) -> None:
        self._facts.update(facts)
        data = json.dumps(self._facts).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def running(self, service_url: str, chain_url: str) -> None:
        self.write(service_url=service_url, chain_url=chain_url)


def _holder(fd: int) -> str:
    try:
        facts = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        facts = {}
    if not isinstance(facts, dict) or "pid" not in facts:
        return "another `payops up`"
    service = facts.get("service_url") or f"port {facts.get('port')}"
    chain = facts.get("chain_url") or f"port {facts.get('chain_port')}"
    return f"`payops up` pid {facts['pid']} (service {service}, chain {chain})"


@contextlib.contextmanager
def claim_data_dir(data_dir: Path, *, port: int, chain_port: int) -> Iterator[Claim]:
    """Hold `data_dir` for this process; a `ConfigError` naming the holder if another has it."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{data_dir} is in use by {_holder(fd)}: stop that one first, or give this "
                "one another --data-dir"
            ) from None
        claim = Claim(fd, {})
        claim.write(pid=os.getpid(), port=port, chain_port=chain_port)
        yield claim
    finally:
        os.close(fd)  # releases the lock
