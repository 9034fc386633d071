"""Triage windows, pure: which time window, and is the trouble single-user or widespread?

`parse_window` reads "last 2h" or an explicit ISO 8601 range; `core.triage_db` aggregates
the window's verification attempts in SQL, and `summarise` turns those rows into totals by
outcome, failures by code, the affected users and wallets, first and last failure, and the
scope.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.errors import InvalidInput

# --- windows ----------------------------------------------------------------------------

DEFAULT_WINDOW = timedelta(hours=1)
MAX_WINDOW = timedelta(days=30)
_RELATIVE = re.compile(
    r"(?:last\s+)?(\d{1,6})\s*(m|mins?|minutes?|h|hrs?|hours?|d|days?)", re.IGNORECASE
)
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime  # inclusive
    end: datetime  # exclusive


def parse_window(text: str, now: datetime) -> Window:
    """A time window: "" (the last hour), "last 2h", "30m", "last 1d", or explicit ISO 8601
    "2026-11-26T10:00Z..2026-11-26T12:00Z" (no zone means UTC; an empty end means now).

    At most 30 days. Raises `InvalidInput` with code `invalid_window`.
    """
    value = " ".join(text.split())
    if not value:
        return Window(now - DEFAULT_WINDOW, now)
    match = _RELATIVE.fullmatch(value)
    if match:
        span = int(match[1]) * _UNIT[match[2][0].lower()]
        if span > MAX_WINDOW:  # before subtracting: "last 999999d" would leave year 1
            raise _bad_window("the window is longer than 30 days")
        return _checked(now - span, now)
    if ".." in value:
        first, _, last = value.partition("..")
        end = now if last.strip().lower() in ("", "now") else _instant(last)
        return _checked(_instant(first), end)
    raise _bad_window(f"cannot read {value!r}")


def _instant(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _bad_window(f"{text.strip()!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _checked(start: datetime, end: datetime) -> Window:
    if end <= start:
        raise _bad_window("the window must end after it starts")
    if end - start > MAX_WINDOW:
        raise _bad_window("the window is longer than 30 days")
    return Window(start, end)


def _bad_window(why: str) -> InvalidInput:
    return InvalidInput(
        f"{why}: use `last 2h`, `30m`, `1d` or `2026-11-26T10:00Z..2026-11-26T12:00Z`",
        code="invalid_window",
    )


# --- window summary ---------------------------------------------------------------------


class Scope(enum.StrEnum):
    NONE = "none"
    SINGLE_USER = "single-user"
    WIDESPREAD = "widespread"


# Two users failing is already more than "single-user": the runbook's question is binary,
# and a second affected user is the signal to look at the system rather than the user.
WIDESPREAD_MIN_USERS = 2
# Outcomes a user experiences as a failed verify. `pending` is normal while a transaction
# finalizes, except when the chain could not be asked; `paused` is the operators' own gate.
FAILED_OUTCOMES = frozenset({"rejected", "conflict"})


def is_failure(outcome: str, code: str | None) -> bool:
    """Whether an attempt counts as a failed verify in the window summary."""
    return outcome in FAILED_OUTCOMES or (outcome == "pending" and code == "rpc_unavailable")


@dataclass(frozen=True, slots=True)
class AttemptSummaryRow:
    """Verification attempts in a window with one outcome and code (a SQL GROUP BY row)."""

    outcome: str
    code: str | None
    attempts: int
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class FailingUsers:
    """Distinct users and wallets with a failed attempt in the window, and the worst hit."""

    users: int
    wallets: int
    top: tuple[tuple[str, int], ...] = ()  # (user id, failed attempts), most first


@dataclass(frozen=True, slots=True)
class WindowSummary:
    window: Window
    attempts: int
    by_outcome: dict[str, int]
    failures_by_code: dict[str, int]  # most frequent first
    failing_users: int
    failing_wallets: int
    top_failing_users: tuple[tuple[str, int], ...]
    first_failure: datetime | None
    last_failure: datetime | None
    still_pending: int  # intents created in the window that are still PENDING
    scope: Scope


def summarise(
    window: Window, rows: list[AttemptSummaryRow], failing: FailingUsers, still_pending: int = 0
) -> WindowSummary:
    """The window's verification picture: totals by outcome, failures by code, who is
    affected, when, and the scope (`widespread` from `WIDESPREAD_MIN_USERS` failing users)."""
    by_outcome: Counter[str] = Counter()
    by_code: Counter[str] = Counter()
    failed = [r for r in rows if is_failure(r.outcome, r.code)]
    for r in rows:
        by_outcome[r.outcome] += r.attempts
    for r in failed:
        by_code[r.code or r.outcome] += r.attempts
    if failing.users >= WIDESPREAD_MIN_USERS:
        scope = Scope.WIDESPREAD
    else:
        scope = Scope.SINGLE_USER if failing.users == 1 else Scope.NONE
    return WindowSummary(
        window=window,
        attempts=sum(by_outcome.values()),
        by_outcome=dict(by_outcome.most_common()),
        failures_by_code=dict(by_code.most_common()),
        failing_users=failing.users,
        failing_wallets=failing.wallets,
        top_failing_users=failing.top,
        first_failure=min((r.first_seen for r in failed), default=None),
        last_failure=max((r.last_seen for r in failed), default=None),
        still_pending=still_pending,
        scope=scope,
    )
