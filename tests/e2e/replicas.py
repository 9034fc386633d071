"""Helpers for the three-replica load test (`test_replicas.py`).

- `replica_size`: how big a run is (default, or `PAYOPS_TEST_HEAVY=1` for ten times more);
- `Plan` / `UserPlan`: the users, their intents, debits and adjustments, and the money model
  the test keeps (credits - debits + approved adjustments), chosen so that every outcome the
  test asserts is determined whatever order the replicas process the requests in;
- `Cluster`: the three `payops serve` replicas, the fake Slack API, signed Slack requests,
  requests with headers, and a tally of every answer by kind and status;
- `run_bursts`: fire groups of requests that must race each other (the duplicates of one
  verify, the replays of one idempotency key, the clicks on one approval) all at once, with
  a bounded number of groups in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from api.auth import DEBIT_SCOPE, mint_token
from tests.e2e.harness import JWT_SECRET, Answer, Service
from tests.slack_fake import FakeSlack, action_body, command_body, signed_headers

ONCALL: Final = "U_ONCALL"
MANAGER: Final = "U_MGR"
MANAGER2: Final = "U_MGR2"
APPROVALS_CHANNEL: Final = "C_APPROVALS"
ALERTS_CHANNEL: Final = "C_ALERTS"
DEBIT_SERVICE: Final = "svc-replicas"
TWO_APPROVALS_ABOVE: Final = 10  # credits; the "large" adjustments need two managers
NEGATIVE_ADJUSTMENT: Final = 2  # credits taken back from every user by an approved adjustment
SAFE_DEBITS: Final = (1, 2)  # debits that always fit in the balance


@dataclass(frozen=True)
class Size:
    """How much one run sends."""

    name: str
    users: int
    intents_per_user: int  # paid on chain and verified
    duplicates: int  # concurrent verifies of each intent with its own signature (storm A)
    cross_replays: int  # other intents each signature is also sent to, per storm
    bursts_in_flight: int  # groups of racing requests sent at once
    timeout_seconds: int  # the pytest timeout for the whole test

    @property
    def intents(self) -> int:
        return self.users * self.intents_per_user


def replica_size() -> Size:
    """The default run (bounded for CI), or ten times more with `PAYOPS_TEST_HEAVY=1`."""
    if os.environ.get("PAYOPS_TEST_HEAVY") == "1":
        return Size("heavy", 40, 10, 4, 2, 24, timeout_seconds=900)
    return Size("default", 8, 5, 4, 2, 16, timeout_seconds=120)


# --- the plan and the money model -------------------------------------------------------------


@dataclass
class Adjust:
    """One adjustment request and how it must end."""

    user: str
    credits: int
    tag: str  # unique, in the reason: finds the request's row
    id: int = 0
    thread_ts: str = ""

    @property
    def approvers(self) -> tuple[str, ...]:
        return (MANAGER, MANAGER2) if abs(self.credits) > TWO_APPROVALS_ABOVE else (MANAGER,)


@dataclass
class UserPlan:
    """A user's intents, debits and adjustments; `expected_balance` is the model."""

    user: str
    paid: list[dict[str, Any]] = field(default_factory=list)  # intents as the API returned them
    unpaid: dict[str, Any] = field(default_factory=dict)  # never paid: stays PENDING
    signatures: dict[str, str] = field(default_factory=dict)  # intent id -> its payment
    adjustments: list[Adjust] = field(default_factory=list)
    safe_keys: dict[str, int] = field(default_factory=dict)  # idempotency key -> credits
    race_keys: dict[str, int] = field(default_factory=dict)  # two keys, one of them can apply
    overdraft_keys: dict[str, int] = field(default_factory=dict)  # never fit

    @property
    def purchased(self) -> int:
        return sum(int(i["credits"]) for i in self.paid)

    @property
    def adjusted(self) -> int:
        return sum(a.credits for a in self.adjustments)

    @property
    def positive_adjustments(self) -> int:
        return sum(a.credits for a in self.adjustments if a.credits > 0)

    @property
    def negative_adjustments(self) -> int:
        return -sum(a.credits for a in self.adjustments if a.credits < 0)

    @property
    def race_amount(self) -> int:
        return next(iter(self.race_keys.values()))

    @property
    def expected_debits(self) -> int:
        """The safe debits, and exactly one of the two racing ones."""
        return sum(self.safe_keys.values()) + self.race_amount

    @property
    def expected_balance(self) -> int:
        return self.purchased + self.adjusted - self.expected_debits

    def plan_money(self, rng: random.Random, large: bool) -> None:
        """Choose adjustments and debits so each one's fate is fixed whatever the order.

        Storm B starts from B = the purchases. With P the positive adjustments, N the
        negative one and S the safe debits, a racing debit of D credits has
        D <= B - S - N (it fits even if everything else that lowers the balance went first)
        and 2D > B + P (two of them never fit, even if every credit went first): exactly one
        of the two applies. An overdraft is more than B + P: it never fits.
        """
        b = self.purchased
        tag = uuid.uuid4().hex[:8]
        positive = rng.randint(TWO_APPROVALS_ABOVE + 1, TWO_APPROVALS_ABOVE + 5) if large else 0
        positive = positive or rng.randint(1, TWO_APPROVALS_ABOVE)
        self.adjustments = [
            Adjust(self.user, positive, f"{tag}-plus"),
            Adjust(self.user, -NEGATIVE_ADJUSTMENT, f"{tag}-minus"),
        ]
        self.safe_keys = {f"{self.user}-safe-{n}": c for n, c in enumerate(SAFE_DEBITS)}
        p, s, n = self.positive_adjustments, sum(SAFE_DEBITS), self.negative_adjustments
        race = (b + p) // 2 + 1
        assert race <= b - s - n, f"{self.user}: purchases {b} too small for the race plan"
        self.race_keys = {f"{self.user}-race-a": race, f"{self.user}-race-b": race}
        self.overdraft_keys = {
            f"{self.user}-over-a": b + p + 1,
            f"{self.user}-over-b": b + p + rng.randint(2, 100),
        }


@dataclass
class Plan:
    users: list[UserPlan]

    def paid(self) -> list[tuple[UserPlan, dict[str, Any]]]:
        return [(u, i) for u in self.users for i in u.paid]

    def adjustments(self) -> list[Adjust]:
        return [a for u in self.users for a in u.adjustments]

    def owner_of(self) -> dict[str, UserPlan]:
        """intent id -> its owner, paid and unpaid."""
        out = {str(i["id"]): u for u, i in self.paid()}
        out.update({str(u.unpaid["id"]): u for u in self.users})
        return out


# --- the replicas -----------------------------------------------------------------------------


@dataclass
class Tally:
    """Requests sent and answers received, by kind."""

    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # kind, status, code
    per_replica: Counter[int] = field(default_factory=Counter)

    def record(self, kind: str, replica: int, answer: Answer) -> Answer:
        self.sent[kind] += 1
        self.per_replica[replica] += 1
        self.answers[(kind, answer.status, answer.error_code or "")] += 1
        return answer

    def of(self, kind: str) -> dict[str, int]:
        """`"<status> <code>"` -> count, for one kind of request."""
        return {
            f"{status} {code}".strip(): n
            for (k, status, code), n in sorted(self.answers.items())
            if k == kind
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": dict(sorted(self.sent.items())),
            "total": sum(self.sent.values()),
            "answers": {kind: self.of(kind) for kind in sorted(self.sent)},
            "per_replica": {f"replica {r}": n for r, n in sorted(self.per_replica.items())},
        }


@dataclass
class Cluster:
    """Three replicas on one database and one chain, and the fake Slack they all talk to."""

    services: list[Service]
    fake: FakeSlack
    session: aiohttp.ClientSession
    tally: Tally = field(default_factory=Tally)
    _clicks: int = 0
    _tokens: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)

    def token(self, sub: str, *scopes: str) -> str:
        key = (sub, scopes)
        if key not in self._tokens:
            self._tokens[key] = mint_token(JWT_SECRET, sub, scopes=scopes)
        return self._tokens[key]

    async def send(
        self,
        kind: str,
        replica: int,
        method: str,
        path: str,
        *,
        sub: str | None = None,
        scopes: tuple[str, ...] = (),
        body: Any = None,
        data: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request to replica `replica` (modulo the replica count), tallied as `kind`."""
        index = replica % len(self.services)
        sent = dict(headers or {})
        if sub is not None:
            sent["Authorization"] = f"Bearer {self.token(sub, *scopes)}"
        url = self.services[index].url + path
        async with self.session.request(method, url, json=body, data=data, headers=sent) as resp:
            payload = await resp.json() if resp.content_type == "application/json" else None
            answer = Answer(resp.status, payload, dict(resp.headers))
        return self.tally.record(kind, index, answer)

    async def create_intent(self, replica: int, user: str, credits: int) -> dict[str, Any]:
        answer = await self.send(
            "create intent",
            replica,
            "POST",
            "/v1/purchase-intents",
            sub=user,
            body={"credits": credits},
        )
        assert answer.status == 201, answer
        return dict(answer.body)

    async def verify(self, kind: str, replica: int, user: str, intent_id: str, sig: str) -> Answer:
        path = f"/v1/purchase-intents/{intent_id}/verify"
        return await self.send(kind, replica, "POST", path, sub=user, body={"signature": sig})

    async def debit(self, kind: str, replica: int, user: str, credits: int, key: str) -> Answer:
        return await self.send(
            kind,
            replica,
            "POST",
            "/v1/credits/debits",
            sub=DEBIT_SERVICE,
            scopes=(DEBIT_SCOPE,),
            body={"user_id": user, "credits": credits, "reason": f"replica test {key}"},
            headers={"Idempotency-Key": key},
        )

    async def balance(self, replica: int, user: str) -> int:
        answer = await self.send("read balance", replica, "GET", "/v1/credits", sub=user)
        assert answer.status == 200, answer
        return int(answer.body["balance"])

    async def signed(self, kind: str, replica: int, body: str) -> Answer:
        """A Slack request, signed as Slack signs it, to `/slack/events`."""
        return await self.send(
            kind, replica, "POST", "/slack/events", data=body, headers=signed_headers(body)
        )

    async def command(self, replica: int, command: str, text: str, rid: str) -> Answer:
        """`command text` typed by the on-call engineer; the reply goes to `response/<rid>`."""
        body = command_body(self.fake, command, text, ONCALL, rid)
        return await self.signed("slack command", replica, body)

    def click_id(self) -> str:
        self._clicks += 1
        return f"click-{self._clicks}"

    async def click(self, replica: int, adj: Adjust, user: str, click_id: str) -> Answer:
        """`user` presses Approve on the adjustment's approval message, through `replica`;
        a refusal comes back to `response/<click_id>`."""
        payload = {
            "type": "block_actions",
            "user": {"id": user},
            "team": {"id": "T1"},
            "api_app_id": "A1",
            "container": {
                "type": "message",
                "message_ts": adj.thread_ts,
                "channel_id": APPROVALS_CHANNEL,
            },
            "channel": {"id": APPROVALS_CHANNEL},
            "message": {"ts": adj.thread_ts, "text": ""},
            "response_url": f"{self.fake.url}response/{click_id}",
            "trigger_id": "t",
            "actions": [
                {
                    "action_id": "adjust_approve",
                    "block_id": f"adjustment:{adj.id}",
                    "value": str(adj.id),
                    "type": "button",
                }
            ],
        }
        return await self.signed("slack click", replica, action_body(payload))

    def thread_posts(self, adj: Adjust) -> list[dict[str, Any]]:
        """What the bot said in the adjustment's approval thread (one post per decision)."""
        return [
            p
            for p in self.fake.of("chat.postMessage")
            if p.get("channel") == APPROVALS_CHANNEL and p.get("thread_ts") == adj.thread_ts
        ]

    def refusals(self, click_ids: Sequence[str]) -> list[str]:
        """The private answers to those clicks (a click that decided gets none)."""
        return [p.get("text", "") for c in click_ids for p in self.fake.of(f"response:{c}")]


Burst = Callable[[], Awaitable[None]]


async def run_bursts(bursts: Sequence[Burst], *, in_flight: int, rng: random.Random) -> float:
    """Run every burst, in a random order, at most `in_flight` at a time; the wall time."""
    order = list(bursts)
    rng.shuffle(order)
    gate = asyncio.Semaphore(in_flight)

    async def one(burst: Burst) -> None:
        async with gate:
            await burst()

    started = time.monotonic()
    async with asyncio.TaskGroup() as group:
        for burst in order:
            group.create_task(one(burst))
    return time.monotonic() - started


async def together(*calls: Awaitable[Answer]) -> list[Answer]:
    """Send requests at the same moment (a burst's body)."""
    return list(await asyncio.gather(*calls))


def summary(figures: Mapping[str, Any]) -> str:
    """The run's figures, as printed with `pytest -s` (one JSON object, indented)."""
    return "replica load test figures:\n" + json.dumps(figures, indent=2, sort_keys=False)
