"""What the fault tests share: paid intents, a retrying client load and a tally of every
answer (the database checks are in `fault_checks`, the processes they break in
`fault_processes`).

- `buy`: intents created through the service, paid on the chain and finalized before any
  fault starts, so every one of them must end credited exactly once;
- `settle`: concurrent clients that verify every paid intent (each by `copies` clients at
  once, as a frontend retrying in two tabs would) until it answers 200, on the replica
  `pick` names, each request bounded in time; every answer is tallied, and one the test does
  not allow (a rejection, a 500, a hang) is recorded and ends that intent's retries.

`PAYOPS_TEST_HEAVY=1` selects the heavier variants (`scale`). Each test prints one line
`FAULTS-SUMMARY {json}` (requests, faults injected, answers by status, credits, wall time).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import aiohttp

from tests.e2e.harness import Chain, Service

T = TypeVar("T")
HEAVY: Final = os.environ.get("PAYOPS_TEST_HEAVY") == "1"
OBSERVER: Final = "payops-faults-observer"  # application_name of the tests' own connections
REQUEST_SECONDS: Final = 10.0  # an answer later than this is a hang


def scale(default: int, heavy: int) -> int:
    return heavy if HEAVY else default


# --- paid intents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Paid:
    """An intent whose payment is final on chain: it must end credited exactly once."""

    user: str
    intent: Mapping[str, Any]
    signature: str

    @property
    def id(self) -> str:
        return str(self.intent["id"])

    @property
    def credits(self) -> int:
        return int(self.intent["credits"])


async def buy(
    service: Service, chain: Chain, users: Sequence[str], *, concurrency: int = 8
) -> list[Paid]:
    """One intent per entry of `users` (repeat a user for several), each paid and final.

    Credits vary from 1 to 9 so that a balance off by one intent shows."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, user: str) -> Paid:
        async with gate:
            intent = await service.create_intent(user, credits=1 + index % 9)
            signature = await chain.wallet.pay(intent, decimals=chain.info.decimals)
            await chain.finalized(signature)
            return Paid(user, intent, signature)

    return list(await asyncio.gather(*(one(i, u) for i, u in enumerate(users))))


def users_for(prefix: str, intents: int, per_user: int = 3) -> list[str]:
    """`intents` entries naming `intents / per_user` users, so users hold several intents."""
    names = [f"{prefix}-{uuid.uuid4().hex[:10]}" for _ in range(max(1, intents // per_user))]
    return [names[i % len(names)] for i in range(intents)]


# --- one verify, and what came back ---------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One verify request's fate: an HTTP answer, or no answer (`status` None)."""

    service: Service
    label: str  # "200 credited", "202 rpc_unavailable", "503 database_unavailable", ...
    status: int | None
    body: Any
    headers: Mapping[str, str]
    seconds: float
    request_id: str

    @property
    def credited(self) -> bool:
        return self.label == "200 credited"

    @property
    def settled(self) -> bool:
        return self.status == 200


def label_of(status: int, body: Any) -> str:
    if not isinstance(body, dict):
        return f"{status} non-json"
    if status == 200:
        return "200 already_credited" if body.get("already_credited") else "200 credited"
    if status == 202:
        return f"202 {body.get('reason')}"
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return f"{status} {code}"


async def verify_once(
    service: Service, paid: Paid, *, within: float = REQUEST_SECONDS, request_id: str = ""
) -> Outcome:
    """POST verify with our own X-Request-Id (so the database can be searched for it)."""
    request_id = request_id or uuid.uuid4().hex
    headers = {**service.auth(paid.user), "X-Request-Id": request_id}
    url = f"{service.url}/v1/purchase-intents/{paid.id}/verify"
    started = time.monotonic()
    status: int | None = None
    body: Any = None
    answer_headers: Mapping[str, str] = {}
    try:
        async with service.session.post(
            url,
            json={"signature": paid.signature},
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=within),
        ) as resp:
            status = resp.status
            answer_headers = dict(resp.headers)
            raw = await resp.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        label = label_of(status, body)
    except TimeoutError:
        label = "no answer (hang)"
        status = None
    except aiohttp.ClientConnectionError as exc:
        label = f"connection error ({type(exc).__name__})"
        status = None
    return Outcome(
        service, label, status, body, answer_headers, time.monotonic() - started, request_id
    )


# --- a retrying load and its tally ----------------------------------------------------------


@dataclass
class Tally:
    """Every answer of a load, by label; the ones not allowed; credits announced per intent."""

    answers: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    credited: Counter[str] = field(default_factory=Counter)  # "200 credited" per intent id
    settled: set[str] = field(default_factory=set)  # intents that got a 200
    slowest: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.answers.values())

    def record(self, paid: Paid, outcome: Outcome, allowed: bool) -> None:
        self.answers[outcome.label] += 1
        self.slowest = max(self.slowest, outcome.seconds)
        if outcome.credited:
            self.credited[paid.id] += 1
        if outcome.settled:
            self.settled.add(paid.id)
        if not allowed:
            self.unexpected.append(
                f"intent {paid.id} on {outcome.service.url}: {outcome.label} "
                f"after {outcome.seconds:.2f}s: {outcome.body!r:.300}"
            )

    def assert_clean(self) -> None:
        assert not self.unexpected, "answers not allowed:\n" + "\n".join(self.unexpected[:20])
        doubled = {k: n for k, n in self.credited.items() if n > 1}
        assert not doubled, f"credited more than once according to the answers: {doubled}"


Allowed = Callable[[Outcome], bool]


def clean_error(outcome: Outcome, *codes: str) -> bool:
    """A 503 with a JSON error of one of `codes` and a Retry-After: 'try again', said well."""
    return (
        outcome.status == 503
        and outcome.label.removeprefix("503 ") in codes
        and int(outcome.headers.get("Retry-After", "0")) > 0
    )


def pending(outcome: Outcome, *reasons: str) -> bool:
    """A 202 PENDING with one of `reasons` and a Retry-After."""
    return (
        outcome.status == 202
        and isinstance(outcome.body, dict)
        and outcome.body.get("status") == "PENDING"
        and outcome.body.get("reason") in reasons
        and int(outcome.headers.get("Retry-After", "0")) > 0
    )


async def settle(
    paid: Sequence[Paid],
    pick: Callable[[], Service],
    tally: Tally,
    *,
    allowed: Allowed,
    within: float,
    workers: int = 16,
    copies: int = 1,
    backoff: float = 0.05,
    on_answer: Callable[[Paid, Outcome], None] | None = None,
    until: asyncio.Event | None = None,
) -> None:
    """Verify each of `paid` (by `copies` clients) until it answers 200; fail after `within`.

    An answer not `allowed` is tallied as unexpected and ends that client's retries. With
    `until`, the clients then go on verifying settled intents again (a frontend polling),
    so requests stay in flight, until `until` is set."""
    queue: asyncio.Queue[Paid] = asyncio.Queue()
    for p in paid:
        for _ in range(copies):
            queue.put_nowait(p)
    again = itertools.cycle(paid)

    def next_paid() -> Paid | None:
        if not queue.empty():
            return queue.get_nowait()
        if until is not None and not until.is_set():
            return next(again)
        return None

    async def client() -> None:
        while (p := next_paid()) is not None:
            while True:
                outcome = await verify_once(pick(), p)
                ok = allowed(outcome)
                tally.record(p, outcome, ok)
                if on_answer is not None:
                    on_answer(p, outcome)
                if outcome.settled or not ok:
                    break
                await asyncio.sleep(backoff)

    try:
        async with asyncio.timeout(within):
            await asyncio.gather(*(client() for _ in range(workers)))
    except TimeoutError:
        left = len({p.id for p in paid} - tally.settled)
        raise AssertionError(
            f"{left} of {len({p.id for p in paid})} intents still not credited after "
            f"{within} s; answers so far: {dict(tally.answers)}"
        ) from None


@contextlib.asynccontextmanager
async def background(work: Coroutine[Any, Any, T]) -> AsyncIterator[asyncio.Task[T]]:
    """`work` as a task for the block's length: awaited when the block ends, cancelled (and
    awaited) when the block fails, so no load outlives its test."""
    task = asyncio.create_task(work)
    try:
        yield task
    except BaseException:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    await task


def round_robin(services: Sequence[Service]) -> Callable[[], Service]:
    turns = itertools.cycle(services)
    return lambda: next(turns)
