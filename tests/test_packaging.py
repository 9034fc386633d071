"""The package as it ships: the Dockerfile's structure, the pinned dependencies, and the wheel
installed into a fresh virtualenv exactly as the Dockerfile installs it — then `payops --help`,
`payops migrate`, `payops serve` (GET /healthz, and the image's own HEALTHCHECK command),
`payops preflight` and `payops snapshot` run from that virtualenv only.

No Docker engine is needed: the build stage's two `pip wheel` steps and the runtime stage's
`pip install` line (read from the Dockerfile itself) run here. The dependency wheels are built
once per requirements.lock into a cache folder (~/.cache/payops-tests, or
$PAYOPS_TEST_WHEELHOUSE), so a second run takes seconds; on a new machine the first run
downloads them from the package index, and skips, saying so, only when the index cannot be
reached.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from localnet.server import start_localnet
from tests.support import JWT_SECRET

ROOT: Final = Path(__file__).resolve().parents[1]
DOCKERFILE: Final = ROOT / "Dockerfile"
LOCK: Final = ROOT / "requirements.lock"
PACKAGES: Final = ("core", "api", "bot", "payops", "localnet")
PIP: Final = (sys.executable, "-m", "pip")
NETWORK_ERRORS: Final = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ConnectTimeout",
    "Max retries exceeded",
    "ProxyError",
)


# --- the Dockerfile, read ---------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str


def dockerfile_instructions(text: str) -> list[Instruction]:
    """The instructions, continuation lines joined and comments dropped, with their stage."""
    out: list[Instruction] = []
    stage = -1
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        logical += " " + line.removesuffix("\\").strip() if logical else line.removesuffix("\\")
        if line.endswith("\\"):
            continue
        keyword, _, args = logical.strip().partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        out.append(Instruction(stage, keyword.upper(), args.strip()))
        logical = ""
    return out


def runtime_pip_install(instructions: list[Instruction]) -> list[str]:
    """The final stage's `pip install ...` words, from `pip` on."""
    last = max(i.stage for i in instructions)
    for i in instructions:
        if i.stage == last and i.keyword == "RUN" and "pip install" in i.args:
            words = shlex.split(i.args)
            return words[words.index("pip") :]
    raise AssertionError("the runtime stage has no pip install")


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return dockerfile_instructions(DOCKERFILE.read_text())


def test_dockerfile_builds_in_one_stage_and_runs_in_a_slim_one(
    instructions: list[Instruction],
) -> None:
    froms = [i.args for i in instructions if i.keyword == "FROM"]
    assert len(froms) == 2
    assert froms[0].endswith("AS build")
    arg = next(i.args for i in instructions if i.keyword == "ARG")
    assert arg == "PYTHON_IMAGE=python:3.11-slim"
    assert froms[1].startswith("${PYTHON_IMAGE}")
    build = " ".join(i.args for i in instructions if i.stage == 0 and i.keyword == "RUN")
    assert "pip wheel --wheel-dir /wheels --requirement requirements.lock" in build
    assert "pip wheel --no-deps --wheel-dir /wheels ." in build
    copied = {i.args.split()[0] for i in instructions if i.stage == 0 and i.keyword == "COPY"}
    assert set(PACKAGES) <= copied, "every package of pyproject.toml is copied into the build"


def test_dockerfile_runs_as_a_user_without_privileges_with_a_healthcheck(
    instructions: list[Instruction],
) -> None:
    runtime = [i for i in instructions if i.stage == 1]
    users = [i.args for i in runtime if i.keyword == "USER"]
    assert users, "the runtime stage sets a USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    health = next(i.args for i in runtime if i.keyword == "HEALTHCHECK")
    assert "/healthz" in health
    assert "CMD [" in health, "exec form: no shell needed in the probe"
    assert next(i.args for i in runtime if i.keyword == "ENTRYPOINT") == '["payops"]'
    assert next(i.args for i in runtime if i.keyword == "CMD") == '["serve"]'
    assert next(i.args for i in runtime if i.keyword == "EXPOSE") == "8080"
    env = " ".join(i.args for i in runtime if i.keyword == "ENV")
    assert "PAYOPS_HTTP_HOST=0.0.0.0" in env
    pip = runtime_pip_install(instructions)
    assert pip[:2] == ["pip", "install"]
    assert "--no-index" in pip, "the runtime installs the build stage's wheels only"
    assert pip[pip.index("--constraint") + 1].endswith("requirements.lock")
    assert pip[-1] == "payops"


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: nothing enters the context unless named"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {*PACKAGES, "pyproject.toml", "README.md", "requirements.lock"}


# --- requirements.lock ------------------------------------------------------------------------


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock: {line!r} is not pinned with =="
        pins[canonicalize_name(name)] = version
    return pins


def test_every_dependency_is_pinned_within_its_range() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = locked()
    assert "payops" not in pins
    for spec in pyproject["project"]["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name]}, outside {req.specifier}"
        )


# --- the wheel, installed as the image installs it ---------------------------------------------


def _run(
    args: list[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    done = subprocess.run(  # noqa: S603 (our own arguments)
        args, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False
    )
    if done.returncode != 0:
        output = done.stdout + done.stderr
        if any(marker in output for marker in NETWORK_ERRORS):
            pytest.skip(f"the package index is unreachable: {output.strip()[-300:]}")
        raise AssertionError(f"{shlex.join(args)} exited {done.returncode}:\n{output[-3000:]}")
    return done.stdout


def dependency_wheels() -> Path:
    """Wheels of every pinned dependency, built once per requirements.lock and kept."""
    base = Path(
        os.environ.get("PAYOPS_TEST_WHEELHOUSE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "payops-tests"
    )
    key = hashlib.sha256(LOCK.read_bytes() + sys.version.encode()).hexdigest()[:16]
    ready = base / f"wheels-{key}"
    if (ready / ".complete").exists():
        return ready
    partial = base / f"wheels-{key}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    # The build stage's first step, as written in the Dockerfile.
    _run(
        [*PIP, "wheel", "--quiet", "--wheel-dir", str(partial), "--requirement", str(LOCK)],
        timeout=240,
    )
    (partial / ".complete").touch()
    try:
        partial.rename(ready)
    except OSError:  # a concurrent run got there first
        shutil.rmtree(partial, ignore_errors=True)
    return ready


@dataclass(frozen=True)
class Installed:
    venv: Path
    bin: Path
    workdir: Path

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment: no PAYOPS_* of ours, no PYTHONPATH, nothing of the checkout."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PAYOPS_", "SLACK_", "PYTHON", "VIRTUAL_ENV"))
        }
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env | extra


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("packaging")
    wheels = base / "wheels"
    shutil.copytree(dependency_wheels(), wheels)
    # The build stage's second step: the payops wheel.
    _run(
        [*PIP, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)],
        timeout=120,
    )
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=60)
    # The runtime stage's pip install line, read from the Dockerfile, paths made local.
    words = runtime_pip_install(dockerfile_instructions(DOCKERFILE.read_text()))
    local = {"/wheels": str(wheels), "/tmp/requirements.lock": str(LOCK)}  # noqa: S108
    pip_args = [local.get(w, w) for w in words[2:]]
    # Offline and without this machine's pip configuration, like the image's build.
    offline = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    offline["PIP_CONFIG_FILE"] = os.devnull
    _run(
        [*PIP, "--python", str(venv / "bin" / "python"), "install", "--quiet", *pip_args],
        timeout=240,
        env=offline,
    )
    workdir = base / "work"
    workdir.mkdir()
    return Installed(venv, venv / "bin", workdir)


@pytest.mark.timeout(420)  # the first run on a machine builds the dependency wheels
def test_the_installed_wheel_is_self_contained(installed: Installed) -> None:
    script = "import core.db, payops; print(payops.__file__); print(core.db.latest_version())"
    where, shipped = _run(
        [str(installed.bin / "python"), "-c", script],
        timeout=60,
        env=installed.env(),
        cwd=installed.workdir,
    ).split()
    assert where.startswith(str(installed.venv)), "imported from the checkout"
    assert int(shipped) >= 1, "the .sql migrations are in the wheel"
    frozen = _run(
        [*PIP, "--python", str(installed.bin / "python"), "freeze"],
        timeout=60,
    )
    pins = locked()
    for line in frozen.splitlines():
        name, _, version = line.partition("==")
        if canonicalize_name(name) != "payops":
            assert pins.get(canonicalize_name(name)) == version, f"{line} is not the locked one"


def test_payops_help_lists_every_command(installed: Installed) -> None:
    out = _run(
        [str(installed.bin / "payops"), "--help"],
        timeout=60,
        env=installed.env(),
        cwd=installed.workdir,
    )
    for command in ("serve", "migrate", "preflight", "snapshot", "restore", "ops", "up"):
        assert command in out


@pytest.fixture
async def chain() -> AsyncIterator[tuple[str, dict[str, str]]]:
    runner, info = await start_localnet("127.0.0.1", 0)
    settings = {
        "PAYOPS_SOLANA_RPC_URL": info.rpc_url,
        "PAYOPS_TOKEN_MINT": info.mint,
        "PAYOPS_TREASURY_OWNER": info.treasury_owner,
        "PAYOPS_JWT_SECRET": JWT_SECRET,
    }
    yield info.rpc_url, settings
    await runner.cleanup()


async def _exec(installed: Installed, env: Mapping[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        env=dict(env),
        cwd=installed.workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.timeout(120)
async def test_migrate_then_serve_answers_healthz_and_the_image_healthcheck(
    installed: Installed,
    empty_database_url: str,
    chain: tuple[str, dict[str, str]],
    instructions: list[Instruction],
) -> None:
    _, chain_settings = chain
    env = installed.env(
        PAYOPS_DATABASE_URL=empty_database_url,
        PAYOPS_HTTP_HOST="127.0.0.1",
        PAYOPS_HTTP_PORT="0",
        PAYOPS_LOG_LEVEL="WARNING",
        **chain_settings,
    )
    payops = str(installed.bin / "payops")
    code, out = await _exec(installed, env, payops, "migrate")
    assert code == 0, out
    migrated = json.loads(out.strip().splitlines()[-1])
    assert migrated["applied"][0] == 1
    assert migrated["schema_version"] == migrated["applied"][-1]

    port, probe = None, None
    server = await asyncio.create_subprocess_exec(
        payops,
        "serve",
        env=env,
        cwd=installed.workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert server.stdout is not None
        async with asyncio.timeout(30):
            while True:
                line = await server.stdout.readline()
                assert line, "payops serve exited before listening"
                if b'"listening"' in line:
                    address = json.loads(line)["addresses"][0]
                    break
        port = re.sub(r".*:(\d+)$", r"\1", address)
        # While it serves: the deploy-day commands from the same installation.
        (p_code, p_out), (s_code, s_out) = await asyncio.gather(
            _exec(installed, env, payops, "preflight", "--skip", "slack"),
            _exec(installed, env, payops, "snapshot", "--out", str(installed.workdir / "snaps")),
        )
        assert p_code == 0, p_out
        assert "ready to deploy." in p_out
        assert s_code == 0, s_out
        assert "sha256" in s_out
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{address}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["status"] == "ok"
            async with http.get(f"{address}/readyz") as response:
                assert response.status == 200, await response.text()
        probe = json.loads(
            next(i.args for i in instructions if i.keyword == "HEALTHCHECK").split("CMD", 1)[1]
        )
        assert probe[0] == "python"
        probe[0] = str(installed.bin / "python")
        code, out = await _exec(installed, env | {"PAYOPS_HTTP_PORT": port}, *probe)
        assert code == 0, f"the image's HEALTHCHECK fails against a healthy service: {out}"
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            stopped = await server.wait()
    assert stopped == 0
    assert port is not None
    assert probe is not None
    code, _ = await _exec(installed, env | {"PAYOPS_HTTP_PORT": port}, *probe)
    assert code != 0, "the HEALTHCHECK must fail once the service is gone"
