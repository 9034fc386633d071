"""Child processes for the end-to-end tests: started with their output in files (never
pipes, so a chatty process can never block on a full pipe nobody reads), polled with a bound,
stopped with a bound; a process that does not come up fails the test with its stderr's tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    pass

PROJECT_ROOT: Final = Path(__file__).resolve().parents[2]
START_SECONDS: Final = 20.0
STOP_SECONDS: Final = 20.0  # above the service's own 15 s shutdown timeout
POLL_SECONDS: Final = 0.02


class ProcessFailed(AssertionError):
    pass


@dataclass
class Proc:
    """A child process whose stdout and stderr go to files in its work directory."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, chars: int = 4000) -> str:
        text = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return f"--- {self.name} (pid {self.pid}) stderr, last {chars} chars ---\n{text[-chars:]}"

    def send(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    async def wait_exit(self, within: float = STOP_SECONDS) -> int:
        try:
            async with asyncio.timeout(within):
                while True:
                    code = self.popen.poll()
                    if code is not None:
                        return code
                    await asyncio.sleep(POLL_SECONDS)
        except TimeoutError:
            self.popen.kill()
            self.popen.wait(5)
            raise ProcessFailed(
                f"{self.name} did not exit within {within} s\n{self.tail()}"
            ) from None

    async def stop(self, within: float = STOP_SECONDS) -> int:
        """SIGTERM (after a SIGCONT, in case a test left it stopped); its exit code."""
        self.send(signal.SIGCONT)
        self.send(signal.SIGTERM)
        return await self.wait_exit(within)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, *, within: float = 5.0
) -> None:
    """Poll `condition` until it holds; fail naming `what` after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while True:
                if await condition():
                    return
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        raise AssertionError(f"not the case within {within} s: {what}") from None


def spawn(name: str, args: Sequence[str], workdir: Path, env: Mapping[str, str]) -> Proc:
    workdir.mkdir(parents=True, exist_ok=True)
    out, err = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        popen = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            list(args), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=workdir, env=env
        )
    return Proc(name, popen, out, err)


def child_env(**extra: str) -> dict[str, str]:
    """The environment without any PAYOPS_/SLACK_ setting of the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYOPS_", "SLACK_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


async def read_json_output(proc: Proc, *, within: float = START_SECONDS) -> dict[str, Any]:
    """The first complete JSON object the process prints (it may span several lines)."""
    decoder = json.JSONDecoder()
    try:
        async with asyncio.timeout(within):
            while True:
                text = proc.stdout.read_text(errors="replace")
                start = text.find("{")
                if start >= 0:
                    with contextlib.suppress(ValueError):
                        found, _ = decoder.raw_decode(text, start)
                        return dict(found)
                if proc.popen.poll() is not None:
                    raise ProcessFailed(
                        f"{proc.name} exited with {proc.popen.returncode}\n{proc.tail()}"
                    )
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        raise ProcessFailed(
            f"{proc.name} printed no JSON within {within} s\n{proc.tail()}"
        ) from None
