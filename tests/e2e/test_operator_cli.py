"""The real `payops ops` against a real `payops serve`: who the operator is comes from a token
the service verifies, and roles from the service's settings — never from the caller's shell.

The threat: one person naming themselves on-call and then two managers (`--as U_MGR1`,
`--as U_MGR2`), or putting themselves in PAYOPS_SLACK_MANAGERS in their own shell.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from api.auth import mint_token
from api.routes_ops import OPERATOR_SCOPE
from core import ledger
from tests.e2e.harness import JWT_SECRET, Chain, Service, running_service, service_env
from tests.e2e.procs import child_env, spawn

ONCALL, MGR1, MGR2, EVE = "U_ONCALL1", "U_MGR1", "U_MGR2", "eve-1"
ROLES = {
    "PAYOPS_SLACK_ONCALL": ONCALL,
    "PAYOPS_SLACK_MANAGERS": f"{MGR1},{MGR2}",
    "PAYOPS_ADJUST_TWO_APPROVALS_ABOVE": "1000",
}


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    """`payops ops` as an operator's shell runs it: no database, no roles, a service URL."""

    service: Service
    workdir: Path
    database_url: str  # the service's, for break-glass
    runs: int = 0

    async def run(self, *args: str, token_for: str | None = None, **env: str) -> Ran:
        extra = {"PAYOPS_SERVICE_URL": self.service.url, "PAYOPS_DATA_DIR": str(self.workdir)}
        if token_for is not None:
            extra["PAYOPS_OPERATOR_TOKEN"] = mint_token(
                JWT_SECRET, token_for, scopes=(OPERATOR_SCOPE,)
            )
        return await self._spawn(["ops", *args], child_env(**extra, **env))

    async def break_glass(self, claimed: str, *args: str) -> Ran:
        """Straight against the database, as someone holding its credentials would."""
        env = service_env(self.service.chain.info, self.database_url, self.workdir / "bg", **ROLES)
        return await self._spawn(
            ["ops", "--break-glass", "the service is down", "--as", claimed, *args], env
        )

    async def _spawn(self, args: list[str], env: dict[str, str]) -> Ran:
        self.runs += 1
        binary = Path(sys.executable).with_name("payops")
        command = [str(binary)] if binary.exists() else [sys.executable, "-m", "payops.cli"]
        proc = spawn(f"payops-{self.runs}", [*command, *args], self.workdir, env)
        code = await proc.wait_exit(within=60)
        return Ran(code, proc.stdout.read_text(), proc.stderr.read_text())


@pytest.fixture
async def cli(
    own_chain: Chain, http: aiohttp.ClientSession, database_url: str, tmp_path: Path
) -> AsyncIterator[Cli]:
    async with running_service(
        own_chain, database_url, tmp_path / "service", http, **ROLES
    ) as service:
        yield Cli(service, tmp_path / "cli", database_url)


async def _audit(service: Service, prefix: str) -> list[tuple[str, str]]:
    rows = await service.pool.fetch(
        "SELECT actor, action FROM audit_log WHERE action LIKE $1 ORDER BY id", prefix + "%"
    )
    return [(r["actor"], r["action"]) for r in rows]


async def test_operators_act_with_tokens_and_invented_identities_are_refused(cli: Cli) -> None:
    service = cli.service
    # On call, with a token: closes the gate, audited as that operator.
    closed = await cli.run("gate", "close", "duplicates seen", token_for=ONCALL)
    assert closed.code == 0, closed.err
    assert f"Verify CLOSED by {ONCALL}" in closed.out
    assert await _audit(service, "gate.") == [(ONCALL, "gate.verify.close")]

    # An invented manager without a token: refused, with how to get one; nothing recorded.
    invented = await cli.run(
        "--as", MGR1, "adjust", "approve", "1", PAYOPS_SLACK_MANAGERS=f"{MGR1},{EVE}"
    )
    assert invented.code == 2
    assert "payops token --operator" in invented.err
    assert len(invented.err.strip().splitlines()) == 1
    # --as is no identity: it must match the token.
    mismatch = await cli.run("--as", MGR1, "gate", "status", token_for=ONCALL)
    assert mismatch.code == 2
    assert "not the operator of your token" in mismatch.err

    requested = await cli.run("adjust", "alice", "+5000", "missing credit", token_for=ONCALL)
    assert requested.code == 0, requested.err
    assert "needs 2 approval(s)" in requested.out

    # A genuine token for someone the service does not list as a manager, whose shell says
    # otherwise: the service's list decides.
    eve = await cli.run(
        "adjust",
        "approve",
        "1",
        token_for=EVE,
        PAYOPS_SLACK_MANAGERS=EVE,
        PAYOPS_SLACK_ONCALL=EVE,
    )
    assert eve.code == 1
    assert "not on call" in eve.err
    oncall = await cli.run("adjust", "approve", "1", token_for=ONCALL, PAYOPS_SLACK_MANAGERS=ONCALL)
    assert oncall.code == 1
    assert "manager" in oncall.err

    # Two managers with tokens: applied.
    first = await cli.run("adjust", "approve", "1", token_for=MGR1)
    assert first.code == 0, first.err
    assert "(waiting)" in first.out
    second = await cli.run("adjust", "approve", "1", token_for=MGR2)
    assert second.code == 0, second.err
    assert "APPLIED" in second.out
    assert await ledger.balance(service.pool, "alice") == 5000
    decided = await service.pool.fetch(
        "SELECT approver FROM adjustment_decisions WHERE adjustment_id = 1 ORDER BY id"
    )
    assert [d["approver"] for d in decided] == [MGR1, MGR2]


async def test_break_glass_acts_unverified_and_never_approves(cli: Cli) -> None:
    service = cli.service
    requested = await cli.run("adjust", "bob", "+5", "missing credit", token_for=ONCALL)
    assert requested.code == 0, requested.err

    acted = await cli.break_glass(ONCALL, "gate", "close", "service down")
    assert acted.code == 0, acted.err
    assert "Verify CLOSED" in acted.out
    assert await _audit(service, "gate.") == [(f"unverified:{ONCALL}", "gate.verify.close")]
    used = await service.pool.fetchrow(
        "SELECT actor, after FROM audit_log WHERE action = 'breakglass.used'"
    )
    assert used is not None
    assert used["actor"] == f"unverified:{ONCALL}"
    assert "the service is down" in str(used["after"])

    for manager in (MGR1, MGR2):
        refused = await cli.break_glass(manager, "adjust", "approve", "1")
        assert refused.code == 1
        assert "unverified" in refused.err
    assert await service.pool.fetchval("SELECT status FROM adjustments WHERE id = 1") == (
        "PENDING_APPROVAL"
    )
    assert await ledger.balance(service.pool, "bob") == 0
