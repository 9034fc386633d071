"""The command examples of README.md and docs/*.md, run for real.

Every fenced block of the documentation is either an example this file runs against one
local stack (`payops up` on free ports in a temporary data dir), comparing the output the
docs show with what the command printed, or listed in `NOT_RUN` with the reason. A new block
that is neither fails `test_every_documented_example_is_run_or_listed`.

An example is a block whose first line is a command (`payops ...`, `$ payops ...`, or a Slack
command `/pay-...`, run as its `payops ops` twin) followed by its output, or a block of output
under an HTML comment naming its command: `<!-- output of: payops ops recon -->`.

The comparison is of the output's shape: the same lines in the same order once the values
that legitimately vary are masked (ids, keys, signatures, hashes, numbers of any kind —
amounts, times, versions, sizes, ports — and absolute paths). In the docs, `...` (or `…`)
inside a line stands for any text and a line of its own for any lines.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

from payops import cli

ROOT: Final = Path(__file__).resolve().parents[2]
PAYOPS: Final = str(Path(sys.executable).with_name("payops"))
UP_TIMEOUT: Final = 90.0
ONCALL: Final = "U01ONCALL"  # the on-call id the docs' examples show
SKIPPED_LANGUAGES: Final = frozenset({"python", "json", "yaml", "sql"})
MARKER: Final = re.compile(r"<!--\s*output of:\s*(.+?)\s*-->")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    """A fenced block: where it is, its language tag, its lines (de-indented) and the
    command an `output of:` comment above it names."""

    doc: str
    line: int
    language: str
    lines: tuple[str, ...]
    marked_command: str | None

    @property
    def key(self) -> tuple[str, str]:
        first = next((line.strip() for line in self.lines if line.strip()), "")
        return (self.doc, first)

    @property
    def command(self) -> str | None:
        """The command this block shows the output of, if it is an example."""
        if self.marked_command is not None:
            return self.marked_command
        first = self.key[1]
        if first.startswith(("payops ", "$ payops ", "/pay-")):
            return first.removeprefix("$ ")
        return None

    @property
    def output(self) -> list[str]:
        """The output shown: the block, or what follows its command line (blank lines around
        it left out)."""
        lines = list(self.lines)
        if self.marked_command is None:
            lines = lines[1:]
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        return lines


def fenced_blocks(path: Path) -> list[Block]:
    doc = str(path.relative_to(ROOT))
    blocks: list[Block] = []
    text = path.read_text().splitlines()
    i = 0
    while i < len(text):
        opening = re.match(r"^(\s*)```(\S*)", text[i])
        if opening is None:
            i += 1
            continue
        indent, language = len(opening.group(1)), opening.group(2)
        before = [line for line in text[max(0, i - 3) : i] if line.strip()]
        marked = MARKER.search(before[-1]) if before else None
        j = i + 1
        while j < len(text) and not re.match(r"^\s*```\s*$", text[j]):
            j += 1
        body = tuple(line[indent:] if line[:indent].isspace() else line for line in text[i + 1 : j])
        blocks.append(Block(doc, i + 1, language, body, marked.group(1) if marked else None))
        i = j + 1
    return blocks


def all_blocks() -> list[Block]:
    return [
        b
        for path in documents()
        for b in fenced_blocks(path)
        if b.language not in SKIPPED_LANGUAGES
    ]


# --- what runs here -------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """How to run one documented example on the test's stack.

    `args` replaces words of the documented command (a path the docs name, say) with values
    of the run, formatted with `Context`; `stdin` is typed in, and echoed after `echo_after`
    in the output as a terminal shows it; `doc_masks` are literal texts of the docs standing
    for a varying value; `shape` turns an output into what is compared."""

    args: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None
    echo_after: str | None = None
    doc_masks: tuple[str, ...] = ()
    exit_code: int = 0
    shape: Callable[[list[str]], list[str]] | None = None


def preflight_checks(lines: list[str]) -> list[str]:
    """Preflight's shape: its sections, the checks by name in order, the summary. What each
    check finds depends on the configuration, which is production's in the docs."""
    kept = []
    for line in lines:
        check = re.match(r"^(\s+)[✓✗!-]\s+(\S+(?: \S+)*?)(?:\s{2,}|$)", line)
        if check:
            kept.append(f"{check.group(1)}? {check.group(2)}")
        elif not line.strip().startswith("fix:"):
            kept.append(line)
    return kept


# In the order they run: each leaves the state the next one's documented output shows.
RUN: Final[dict[tuple[str, str], Run]] = {
    ("docs/OPERATIONS.md", "payops preflight — 2026-11-26 18:23:36 UTC"): Run(
        exit_code=1, shape=preflight_checks
    ),
    ("docs/OPERATIONS.md", "payops snapshot --out /snapshots"): Run(
        args={"/snapshots": "{snapshots}"}
    ),
    ("docs/OPERATIONS.md", "/pay-smoke                      (CLI: payops ops smoke)"): Run(),
    (
        "docs/OPERATIONS.md",
        "/pay-incident open duplicate credits on verify        (CLI: payops ops incident open ...)",
    ): Run(),
    ("docs/OPERATIONS.md", "Triage of user demo-user"): Run(),
    (
        "docs/OPERATIONS.md",
        "Verify outcomes 2026-11-26 16:26 - 18:26 UTC: 3 attempts — scope: single-user",
    ): Run(),
    ("docs/OPERATIONS.md", "Verify CLOSED by U01ONCALL"): Run(),
    ("docs/OPERATIONS.md", "Adjustment #1: +3 credits for demo-user — PENDING_APPROVAL"): Run(),
    ("docs/OPERATIONS.md", "Reconciliation — ZERO DRIFT (all time)"): Run(),
    ("docs/OPERATIONS.md", "Rollback check"): Run(exit_code=1),
}

# Run after the stack stopped (a restore refuses while the service is connected).
RUN_STOPPED: Final[dict[tuple[str, str], Run]] = {
    (
        "docs/OPERATIONS.md",
        "payops restore /snapshots/payops-snapshot-payops-20261126T182356Z.manifest.json",
    ): Run(
        args={"/snapshots/payops-snapshot-payops-20261126T182356Z.manifest.json": "{manifest}"},
        stdin="payops\n",
        echo_after="anything else to stop: ",
        doc_masks=("db.internal",),
    ),
}

NOT_RUN: Final[dict[tuple[str, str], str]] = {
    (
        "README.md",
        "const events = new EventSourcePolyfill(`${payops}/v1/purchase-intents/${id}/events`, {",
    ): (
        "browser JavaScript; the stream it reads is tested over HTTP in "
        "tests/integration/test_intent_events.py"
    ),
    (
        "README.md",
        'curl -X POST -H "Authorization: Bearer $TOKEN" $PAYOPS/v1/purchase-intents/$ID/verify',
    ): (
        "needs an intent paid from a wallet; the same calls are made over HTTP in "
        "tests/integration/test_verify_by_reference.py and test_intent_events.py"
    ),
    ("README.md", "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/payops up"): (
        "installs payops and starts a stack on the default ports; the test's stack is that"
    ),
    (
        "README.md",
        "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/pytest",
    ): ("the whole test suite"),
    (
        "README.md",
        "payops up [--port 8080] [--chain-port 8899] [--data-dir DIR] [--token-2022] [--reset]",
    ): ("a synopsis; test_the_cli_synopsis_names_options_the_commands_take checks its options"),
    (
        "README.md",
        "core/               domain and persistence; imports nothing from api/, bot/, payops/, localnet/",
    ): ("the source layout, not a command"),
    ("docs/ARCHITECTURE.md", "frontend        Slack            other services        Solana RPC"): (
        "a diagram"
    ),
    (
        "docs/MIGRATIONS.md",
        "payops migrate                                                  # from a shell",
    ): ("shows no output; `payops up` migrates the test's database"),
    ("docs/OPERATIONS.md", "docker build -t payops:0.1.0 ."): "docker (tests/test_packaging.py)",
    ("docs/OPERATIONS.md", "PAYOPS_DATABASE_URL=postgresql://payops:...@db.internal:5432/payops"): (
        "a production env file, not a command"
    ),
    (
        "docs/OPERATIONS.md",
        "docker run --rm --env-file payops.env payops:NEW preflight          # or: payops preflight",
    ): ("docker; `payops preflight`'s output is run below"),
    ("docs/OPERATIONS.md", "docker run --rm --env-file payops.env payops:NEW migrate"): (
        "docker against a production database one release behind"
    ),
    (
        "docs/OPERATIONS.md",
        'docker logs payops 2>&1 | jq -c \'select(.route == "purchase-intents" or .route == "credits") | {ts, msg, status, request_id}\'',
    ): ("docker logs of a running container"),
    ("docs/OPERATIONS.md", "export PAYOPS_SERVICE_URL=https://payops.internal.example"): (
        "production: a token from the identity provider"
    ),
    (
        "docs/OPERATIONS.md",
        "PAYOPS_SLACK_ONCALL=U0ME payops up --data-dir /tmp/payops        # the service's on-call list",
    ): ("starts its own stack on the default ports; the test does these steps on its stack"),
    (
        "docs/OPERATIONS.md",
        'payops ops --break-glass "service down, duplicates in #payments" --as U0ME gate close "duplicates"',
    ): ("shows no output; needs the service down (tests/integration/test_operator_identity.py)"),
    (
        "docs/PERFORMANCE.md",
        "pip install -e '.[dev,bench]'            # bench: matplotlib (the chart), py-spy (--profile)",
    ): ("benchmarks, minutes long"),
    ("docs/WEBHOOKS.md", "POST <your endpoint>"): "an HTTP request payops sends, not a command",
}


# --- comparing shapes -----------------------------------------------------------------------

_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{8}-(?:\.\.\.|…)"
)
_PATH = re.compile(r"(?<![\w.:/<])/[\w.@-]+(?:/[\w.@-]*)*")
_ID = re.compile(
    r"\b(?:[1-9A-HJ-NP-Za-km-z]{32,}(?![0-9A-Za-z])"  # base58 keys and signatures, whole
    r"|[1-9A-HJ-NP-Za-km-z]{8,}(?=\.\.)"  # the head of one
    r"|(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{8,}"  # hex ids, hashes, their heads
    r"|[0-9a-f]{16}(?![0-9A-Za-z]))"  # a 16-hex-digit head that happens to hold no letter
    r"(?:\.\.\.?|…)?"
)
_NUMBER = re.compile(r"\d+")


def masked(line: str, literals: tuple[str, ...] = ()) -> str:
    for literal in literals:
        line = line.replace(literal, "<path>")
    line = _UUID.sub("<id>", line)
    line = _PATH.sub("<path>", line)
    line = _ID.sub("<id>", line)
    line = re.sub(r"(?:<id>)+", "<id>", line)
    line = _NUMBER.sub("<n>", line)
    indent = len(line) - len(line.lstrip())
    return line[:indent] + " ".join(line.split())


def _line_pattern(line: str) -> str:
    if line.strip() in ("...", "…"):
        return r"(?:[^\n]*\n)*?"
    return r"[^\n]*".join(re.escape(part) for part in re.split(r"\.\.\.|…", line)) + r"\n"


def matches(documented: list[str], printed: list[str]) -> bool:
    pattern = "".join(_line_pattern(line) for line in documented)
    return re.fullmatch(pattern, "".join(f"{line}\n" for line in printed)) is not None


def difference(documented: list[str], printed: list[str]) -> str:
    """A diff of the masked lines, a documented line that matches its printed line (an
    elision in it) shown as printed, so that only the lines that differ stand out."""
    shown = [
        printed[i]
        if i < len(printed) and re.fullmatch(_line_pattern(want), printed[i] + "\n")
        else want
        for i, want in enumerate(documented)
    ]
    return "\n".join(difflib.unified_diff(shown, printed, "documented", "printed", lineterm=""))


@dataclass
class Context:
    data_dir: Path
    snapshots: Path
    manifest: str = ""

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYOPS_", "SLACK_"))}
        return {**env, "PAYOPS_DATA_DIR": str(self.data_dir), **extra}


def argv_of(command: str, run: Run, context: Context) -> list[str]:
    """The documented command as `payops` arguments; a Slack command as its CLI twin."""
    command = command.split("(CLI:")[0].strip()
    if command.startswith("/pay-"):
        name, _, rest = command.removeprefix("/pay-").partition(" ")
        command = f"payops ops {name} {rest}"
    words = shlex.split(command, comments=True)
    assert words[0] == "payops", command
    return [run.args.get(word, word).format(**vars(context)) for word in words[1:]]


def run_example(block: Block, run: Run, context: Context, token: str) -> str | None:
    """Run the example; None when its output has the documented shape, else why not."""
    assert block.command is not None
    argv = argv_of(block.command, run, context)
    done = subprocess.run(  # noqa: S603 (our own binary, arguments from our docs)
        [PAYOPS, *argv],
        env=context.env(PAYOPS_OPERATOR_TOKEN=token),
        input=run.stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    where = f"{block.doc}:{block.line} `payops {shlex.join(argv)}`"
    if done.returncode != run.exit_code:
        return f"{where} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    out = done.stdout
    if run.echo_after is not None and run.stdin is not None:
        out = out.replace(run.echo_after, run.echo_after + run.stdin, 1)
    printed = out.splitlines()
    while printed and not printed[0].strip():
        printed.pop(0)
    if argv[0] == "snapshot":
        context.manifest = next(
            line.split()[-1] for line in printed if line.strip().startswith("manifest")
        )
    documented = block.output
    if run.shape is not None:
        documented, printed = run.shape(documented), run.shape(printed)
    want = [masked(line, run.doc_masks) for line in documented]
    got = [masked(line) for line in printed]
    if matches(want, got):
        return None
    return f"{where} prints another shape than documented (masked):\n{difference(want, got)}"


# --- the stack ------------------------------------------------------------------------------


@asynccontextmanager
async def stack(context: Context) -> AsyncIterator[asyncio.subprocess.Process]:
    """`payops up` with the docs' on-call id. Without the treasury watcher: it would race the
    demo's verify for the first credit, and the triage examples show the API's attempts."""
    proc = await asyncio.create_subprocess_exec(
        PAYOPS,
        "up",
        "--port",
        "0",
        "--chain-port",
        "0",
        env=context.env(PAYOPS_SLACK_ONCALL=ONCALL, PAYOPS_WATCH_ENABLED="false"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(UP_TIMEOUT):
            while (line := await proc.stdout.readline()).decode().strip() != "Stop with Ctrl-C.":
                if not line:
                    assert proc.stderr is not None
                    pytest.fail(f"payops up ended: {(await proc.stderr.read()).decode()}")
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(60):
                await proc.wait()


@pytest.fixture
def context() -> Iterator[Context]:
    base = Path(tempfile.mkdtemp(prefix="payops-docs-"))  # not tmp_path: see test_first_hour
    base.chmod(0o755)
    (base / "snapshots").mkdir()
    yield Context(base / "data", base / "snapshots")
    shutil.rmtree(base, ignore_errors=True)


# --- the tests ------------------------------------------------------------------------------


def test_every_documented_example_is_run_or_listed() -> None:
    found = {block.key for block in all_blocks()}
    run = set(RUN) | set(RUN_STOPPED)
    assert not run & set(NOT_RUN), "both run and listed as not run"
    unknown = sorted(found - run - set(NOT_RUN))
    assert not unknown, (
        "fenced blocks neither run by this test nor listed in NOT_RUN with a reason "
        f"(add them to RUN, or to NOT_RUN saying why they cannot run): {unknown}"
    )
    gone = sorted((run | set(NOT_RUN)) - found)
    assert not gone, f"listed here but no longer in the docs: {gone}"
    for block in all_blocks():
        if block.key in run:
            assert block.command is not None, f"{block.doc}:{block.line} names no command"


def test_the_cli_synopsis_names_options_the_commands_take(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (synopsis,) = [
        b for b in all_blocks() if b.key[1].startswith("payops up [--port") and b.doc == "README.md"
    ]
    for line in synopsis.lines:
        if not line.startswith("payops "):
            continue
        usage = line.split("#")[0]
        words = usage.split()
        command = words[1:3] if words[1] == "audit" else words[1:2]
        with pytest.raises(SystemExit) as done:
            cli.main([*command, "--help"])
        assert done.value.code == 0, line
        shown = capsys.readouterr().out
        for option in re.findall(r"--[a-z0-9-]+", usage):
            assert option in shown, f"`{line}`: `payops {' '.join(command)} --help` has no {option}"


async def test_documented_outputs_have_the_shape_commands_print(context: Context) -> None:
    blocks = {block.key: block for block in all_blocks()}
    problems: list[str] = []
    async with stack(context):
        token = await asyncio.to_thread(
            subprocess.run,
            [PAYOPS, "token", "--operator", ONCALL],
            env=context.env(),
            capture_output=True,
            text=True,
            check=True,
        )
        # The triage examples are of the user `payops demo` buys for.
        demo = await asyncio.to_thread(
            subprocess.run, [PAYOPS, "demo"], env=context.env(), capture_output=True, text=True
        )
        assert demo.returncode == 0, demo.stderr
        for key, run in RUN.items():
            problem = await asyncio.to_thread(
                run_example, blocks[key], run, context, token.stdout.strip()
            )
            problems += [problem] if problem else []
    for key, run in RUN_STOPPED.items():
        problem = await asyncio.to_thread(run_example, blocks[key], run, context, "")
        problems += [problem] if problem else []
    assert not problems, "\n\n".join(problems)
