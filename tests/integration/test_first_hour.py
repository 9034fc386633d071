"""The first hour with payops, through the real `payops` binary: `payops up` and its restarts,
one `up` per data dir, and expected failures as one line with exit status 2."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Final

import pytest

from payops.up import local_operator
from tests.support import MINT, TREASURY

PAYOPS: Final = str(Path(sys.executable).with_name("payops"))
UP_TIMEOUT: Final = 90.0


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYOPS_", "SLACK_"))}
    return {**env, **extra}


def payops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own binary and arguments)
        [PAYOPS, *args], env=env or _env(), capture_output=True, text=True, timeout=60
    )


def assert_one_line_failure(
    done: subprocess.CompletedProcess[str], *words: str, progress: bool = False
) -> None:
    """Exit 2, one line on stderr naming `words`; nothing on stdout unless `progress`."""
    assert done.returncode == 2, done
    assert progress or done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0]


@contextmanager
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


class Up:
    def __init__(self, proc: asyncio.subprocess.Process, output: str) -> None:
        self.proc = proc
        self.output = output


@asynccontextmanager
async def running_up(data_dir: Path, *extra: str) -> AsyncIterator[Up]:
    proc = await asyncio.create_subprocess_exec(
        PAYOPS,
        "up",
        "--data-dir",
        str(data_dir),
        "--port",
        "0",
        "--chain-port",
        "0",
        *extra,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(UP_TIMEOUT):
            while not lines or lines[-1] != "Stop with Ctrl-C.":
                line = await proc.stdout.readline()
                if not line:
                    assert proc.stderr is not None
                    pytest.fail(f"payops up ended: {(await proc.stderr.read()).decode()}")
                lines.append(line.decode().rstrip("\n"))
        # Read what it writes from now on, so that a full pipe can never hold it up.
        assert proc.stderr is not None
        rest = asyncio.gather(proc.stdout.read(), proc.stderr.read())
        yield Up(proc, "\n".join(lines))
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(60):
                    await proc.wait()
            except TimeoutError:
                state = Path(f"/proc/{proc.pid}/status")
                alive = state.read_text().splitlines()[:3] if state.exists() else "exited"  # noqa: ASYNC240 (diagnosis after a failure)
                proc.kill()
                out, err = await rest
                pytest.fail(
                    f"payops up did not stop within 60 s of SIGINT ({alive}):\n"
                    f"{out.decode()[-2000:]}\n{err.decode()[-4000:]}"
                )


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A folder for data dirs. Not under pytest's tmp_path: pytest prunes old base dirs, which
    would pull a data directory from under a PostgreSQL started by a concurrent session."""
    base = Path(tempfile.mkdtemp(prefix="payops-first-hour-"))
    base.chmod(0o755)  # the server runs as its own system user when tests run as root
    yield base
    shutil.rmtree(base, ignore_errors=True)


def mint_of(up: Up) -> str:
    line = next(line for line in up.output.splitlines() if line.startswith("  local chain"))
    return line.split("mint ")[1].split(",")[0]


async def test_up_prints_next_steps_that_work_in_a_fresh_shell(data_root: Path) -> None:
    async with running_up(data_root / "data") as up:
        assert "initialising PostgreSQL" in up.output
        token_line = next(line for line in up.output.splitlines() if "token alice" in line)
        command = token_line.split("$(", 1)[1].rsplit(")", 1)[0]
        # A fresh shell: nothing of this one's environment or PATH.
        done = await asyncio.to_thread(  # noqa: S604 (the command payops printed)
            subprocess.run,
            command,
            shell=True,
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.count(".") == 2  # a JWT
        assert done.stderr == ""


async def test_a_second_up_on_the_same_data_dir_refuses_and_leaves_the_first_alone(
    data_root: Path,
) -> None:
    data_dir = data_root / "data"
    async with running_up(data_dir) as first:
        stack = json.loads((data_dir / "up.json").read_text())

        second = await asyncio.to_thread(
            payops, "up", "--data-dir", str(data_dir), "--port", "0", "--chain-port", "0"
        )

        assert_one_line_failure(second, "in use", f"pid {first.proc.pid}", stack["service_url"])
        assert json.loads((data_dir / "up.json").read_text()) == stack


async def test_the_local_chain_and_its_payments_survive_a_restart_and_reset_forgets_them(
    data_root: Path,
) -> None:
    data_dir = data_root / "data"
    async with running_up(data_dir) as first:
        mint = mint_of(first)
        demo = await asyncio.to_thread(payops, "demo", env=_env(PAYOPS_DATA_DIR=str(data_dir)))
        assert demo.returncode == 0, demo.stderr
        signature = demo.stdout.split('"signature": "')[1].split('"')[0]

    async with running_up(data_dir) as again:
        assert "restoring the local chain" in again.output
        assert mint_of(again) == mint
        token = await asyncio.to_thread(
            payops, "token", "--operator", local_operator(), env=_env(PAYOPS_DATA_DIR=str(data_dir))
        )
        assert token.returncode == 0, token.stderr
        triage = await asyncio.to_thread(
            payops,
            "ops",
            "triage",
            signature,
            env=_env(PAYOPS_DATA_DIR=str(data_dir), PAYOPS_OPERATOR_TOKEN=token.stdout.strip()),
        )
        assert triage.returncode == 0, triage.stderr
        assert "found finalized" in triage.stdout
        assert triage.stderr == ""

    async with running_up(data_dir, "--reset") as fresh:
        assert "seeding a new local chain" in fresh.output
        assert "initialising PostgreSQL" in fresh.output
        assert mint_of(fresh) != mint


def test_up_with_its_port_taken_is_one_line(data_root: Path) -> None:
    with taken_port() as port:
        done = payops("up", "--data-dir", str(data_root), "--port", "0", "--chain-port", str(port))
    assert_one_line_failure(done, f"127.0.0.1:{port}", "--chain-port", progress=True)


def test_localnet_with_its_port_taken_is_one_line() -> None:
    with taken_port() as port:
        done = payops("localnet", "--port", str(port), "--token-2022", "--transfer-fee-bps", "50")
    assert_one_line_failure(done, f"127.0.0.1:{port}", "--port")


def test_localnet_help_lists_its_options() -> None:
    done = payops("localnet", "--help")
    assert done.returncode == 0
    for option in ("--host", "--port", "--token-2022", "--transfer-fee-bps"):
        assert option in done.stdout


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql://payops@127.0.0.1:1/payops", ("cannot reach", "127.0.0.1:1")),
        ("not a url", ("malformed",)),
    ],
)
def test_migrate_against_a_bad_database_url_is_one_line(url: str, words: tuple[str, ...]) -> None:
    done = payops("migrate", env=_env(PAYOPS_DATABASE_URL=url))
    assert_one_line_failure(done, "PAYOPS_DATABASE_URL", *words)


def test_debug_shows_the_traceback() -> None:
    done = payops("migrate", "--debug", env=_env(PAYOPS_DATABASE_URL="not a url"))
    assert done.returncode == 2
    assert "Traceback" in done.stderr


def test_ops_takes_as_after_the_command_and_prints_only_its_answer(database_url: str) -> None:
    env = _env(
        PAYOPS_DATABASE_URL=database_url,
        PAYOPS_SLACK_ONCALL="U_ONCALL",
        PAYOPS_TOKEN_MINT=MINT,
        PAYOPS_TREASURY_OWNER=TREASURY,
        PAYOPS_SOLANA_RPC_URL="http://127.0.0.1:9",
    )
    assert payops("migrate", env=env).returncode == 0

    # With no service to ask (break-glass), straight to the database.
    done = payops(
        "ops", "--break-glass", "service down", "triage", "--as", "U_ONCALL", "alice", env=env
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Triage of user alice")
    assert done.stderr == ""


def test_token_from_a_data_dir_without_a_secret_says_so(data_root: Path) -> None:
    done = payops("token", "alice", env=_env(PAYOPS_DATA_DIR=str(data_root)))

    assert done.returncode == 0
    assert "no development secret" in done.stderr
    again = payops("token", "alice", env=_env(PAYOPS_DATA_DIR=str(data_root)))
    assert again.stderr == ""
