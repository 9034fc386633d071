"""Who may act on the operator API and through break-glass: a proven identity, roles from the
service's configuration, and an unverified actor that can never approve."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.auth import TokenVerifier
from api.routes_ops import OPERATOR_SCOPE
from core.adjustments.rules import (
    Adjustment,
    AdjustmentKind,
    AdjustmentPolicy,
    AdjustmentStatus,
    DecisionKind,
    Refs,
    decide,
)
from core.chain.rpc import SolanaRpc
from core.errors import ConfigError, Forbidden
from payops import cli, ops_remote
from payops.compose import Running, service_app
from payops.ops_cli import run_break_glass
from tests.slack_fake import BOT_TOKEN, FakeSlack
from tests.support import (
    JWT_SECRET,
    ScriptedVerifier,
    bearer,
    build_services,
    make_settings,
    service_bearer,
)

ONCALL, MGR1, MGR2, NOBODY = "U_ONCALL1", "U_MGR1", "U_MGR2", "U_NOBODY"
ROLES = {
    "slack_oncall": ONCALL,
    "slack_managers": f"{MGR1},{MGR2}",
    "adjust_two_approvals_above": 1000,
}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def operator(sub: str) -> dict[str, str]:
    return bearer(sub, OPERATOR_SCOPE)


# --- the decision rule ----------------------------------------------------------------------


def _adjustment(requester: str) -> Adjustment:
    return Adjustment(
        id=1,
        user_id="alice",
        credits=5,
        kind=AdjustmentKind.OTHER,
        refs=Refs(),
        reason="r",
        requester=requester,
        requester_source="cli",
        status=AdjustmentStatus.PENDING_APPROVAL,
        approvals_required=1,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        decided_at=None,
        reverses_ledger_tx=None,
        applied_ledger_tx=None,
        slack_channel=None,
        slack_thread_ts=None,
    )


# Even a manager list that (wrongly) holds an unverified id does not make it an approver.
POLICY = AdjustmentPolicy(
    managers=frozenset({MGR1, MGR2, f"unverified:{MGR1}"}),
    two_approvals_above=1000,
    ttl=timedelta(hours=1),
)


@pytest.mark.parametrize("kind", list(DecisionKind))
def test_an_unverified_actor_cannot_decide_an_adjustment(kind: DecisionKind) -> None:
    with pytest.raises(Forbidden) as refused:
        decide(_adjustment(ONCALL), [], f"unverified:{MGR1}", kind, POLICY, NOW)
    assert refused.value.code == "unverified_actor"


def test_a_manager_cannot_approve_what_they_requested_through_break_glass() -> None:
    with pytest.raises(Forbidden) as refused:
        decide(_adjustment(f"unverified:{MGR1}"), [], MGR1, DecisionKind.APPROVE, POLICY, NOW)
    assert refused.value.code == "self_approval"
    allowed = decide(_adjustment(f"unverified:{MGR1}"), [], MGR2, DecisionKind.APPROVE, POLICY, NOW)
    assert allowed.approvers == (MGR2,)


# --- the operator API -----------------------------------------------------------------------


@dataclass
class Api:
    client: TestClient[Any, Any]
    pool: asyncpg.Pool

    async def ops(
        self, command: str, *args: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        resp = await self.client.post(
            f"/v1/ops/{command}", json={"args": list(args)}, headers=headers or {}
        )
        return resp.status, await resp.json()

    async def audit(self, action_prefix: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT actor, source, action, after, request_id FROM audit_log "
            "WHERE action LIKE $1 ORDER BY id",
            action_prefix + "%",
        )


@pytest.fixture
async def api(pool: asyncpg.Pool) -> AsyncIterator[Api]:
    """The service's app as `payops serve` builds it (compose wires the operator runner)."""
    rpc = SolanaRpc("http://127.0.0.1:9")
    svc = build_services(pool, ScriptedVerifier(), scheduler_enabled=False, **ROLES)
    client: TestClient[Any, Any] = TestClient(TestServer(service_app(Running(svc, rpc))))
    await client.start_server()
    try:
        yield Api(client, pool)
    finally:
        await client.close()
        await rpc.close()


async def test_without_a_proven_operator_nothing_runs(api: Api) -> None:
    assert (await api.ops("gate", "close", "x"))[1]["error"]["code"] == "missing_token"
    status, body = await api.ops("gate", "close", "x", headers=bearer(ONCALL))
    assert (status, body["error"]["code"]) == (403, "insufficient_scope")
    status, body = await api.ops("gate", "close", "x", headers=service_bearer(ONCALL))
    assert (status, body["error"]["code"]) == (403, "insufficient_scope")
    forged = bearer(ONCALL, OPERATOR_SCOPE, secret="another-secret-" + "x" * 32)
    status, body = await api.ops("gate", "close", "x", headers=forged)
    assert (status, body["error"]["code"]) == (401, "invalid_token")
    status, body = await api.ops("gate", "close", "x", headers=operator(NOBODY))
    assert (status, body["error"]["code"]) == (403, "not_oncall")
    status, body = await api.ops("nope", headers=operator(ONCALL))
    assert (status, body["error"]["code"]) == (400, "unknown_command")
    assert await api.audit("gate.") == []


async def test_an_oncall_operator_closes_the_gate_audited_as_themself(api: Api) -> None:
    status, body = await api.ops("gate", "close", "duplicates seen", headers=operator(ONCALL))
    assert status == 200, body
    assert body["ok"] is True
    assert f"Verify CLOSED by {ONCALL}" in body["text"]
    (row,) = await api.audit("gate.")
    assert (row["actor"], row["source"]) == (ONCALL, "cli")
    assert row["request_id"]
    status, body = await api.ops("gate", "open", headers=operator(ONCALL))
    assert (status, body["ok"]) == (200, False)
    assert "smoke test" in body["text"]
    assert body["code"]
    # help needs the operator scope, not the on-call list
    status, body = await api.ops("recon", "help", headers=operator(NOBODY))
    assert (status, body["ok"]) == (200, True)
    assert "/pay-recon" in body["text"]


async def test_only_the_services_managers_approve_and_large_needs_two(api: Api) -> None:
    status, body = await api.ops(
        "adjust", "alice", "+5000", "missing credit", headers=operator(ONCALL)
    )
    assert (status, body["ok"]) == (200, True), body
    assert "needs 2 approval(s)" in body["text"]
    # Being on call, or being named in someone's shell, is not being a manager.
    for who in (ONCALL, NOBODY):
        status, body = await api.ops("adjust", "approve", "1", headers=operator(who))
        assert status in (200, 403)
        assert body.get("ok") is not True
    status, body = await api.ops("adjust", "approve", "1", headers=operator(MGR1))
    assert body["ok"] is True
    assert "(waiting)" in body["text"]
    status, body = await api.ops("adjust", "approve", "1", headers=operator(MGR1))
    assert (body["ok"], body["code"]) == (False, "already_decided")
    status, body = await api.ops("adjust", "approve", "1", headers=operator(MGR2))
    assert body["ok"] is True
    assert "APPLIED" in body["text"]
    decisions = await api.pool.fetch(
        "SELECT approver FROM adjustment_decisions WHERE adjustment_id = 1 ORDER BY id"
    )
    assert [d["approver"] for d in decisions] == [MGR1, MGR2]


async def test_a_cli_command_on_the_service_posts_what_slack_would(pool: asyncpg.Pool) -> None:
    fake = FakeSlack()
    await fake.start()
    rpc = SolanaRpc("http://127.0.0.1:9")
    svc = build_services(
        pool,
        ScriptedVerifier(),
        scheduler_enabled=False,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret="s" * 32,
        slack_api_url=fake.api_url(),
        slack_alerts_channel="C_ALERTS",
        slack_oncall="S_ONCALL",  # a user group: read through Slack
        slack_managers=MGR1,
    )
    fake.groups["S_ONCALL"] = [ONCALL]
    client: TestClient[Any, Any] = TestClient(TestServer(service_app(Running(svc, rpc))))
    await client.start_server()
    try:
        resp = await client.post(
            "/v1/ops/gate", json={"args": ["close", "incident 7"]}, headers=operator(ONCALL)
        )
        assert resp.status == 200, await resp.text()
    finally:
        await client.close()
        await rpc.close()
        await fake.close()
    posted = fake.of("chat.postMessage")
    assert [p["channel"] for p in posted] == ["C_ALERTS"]
    assert "CLOSED" in json.dumps(posted[0])


# --- break-glass ----------------------------------------------------------------------------


async def test_break_glass_acts_audited_as_unverified_and_alerts(
    database_url: str, pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeSlack()
    await fake.start()
    settings = make_settings(
        database_url=database_url,
        solana_rpc_url="http://127.0.0.1:9",
        slack_bot_token=BOT_TOKEN,
        slack_api_url=fake.api_url(),
        slack_alerts_channel="C_ALERTS",
        **ROLES,
    )
    try:
        code = await run_break_glass(
            settings, ONCALL, "service down, duplicates", "gate", ["close", "duplicates"]
        )
    finally:
        await fake.close()
    assert code == 0
    assert "Verify CLOSED" in capsys.readouterr().out
    rows = await pool.fetch(
        "SELECT actor, source, action, after, request_id FROM audit_log ORDER BY id"
    )
    used = [r for r in rows if r["action"] == "breakglass.used"]
    gate = [r for r in rows if r["action"].startswith("gate.")]
    assert len(used) == 1
    assert len(gate) == 1
    assert {r["actor"] for r in (*used, *gate)} == {f"unverified:{ONCALL}"}
    assert used[0]["request_id"] == gate[0]["request_id"]
    facts = used[0]["after"]
    facts = json.loads(facts) if isinstance(facts, str) else facts
    assert facts["reason"] == "service down, duplicates"
    assert facts["host"] == socket.gethostname()
    assert facts["os_user"]
    assert facts["claimed"] == ONCALL
    (alert,) = fake.of("chat.postMessage")
    assert alert["channel"] == "C_ALERTS"
    assert "BREAK-GLASS" in alert["text"]
    assert ONCALL in alert["text"]


async def test_break_glass_never_approves(
    database_url: str, pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(
        database_url=database_url, solana_rpc_url="http://127.0.0.1:9", **ROLES
    )
    assert await run_break_glass(settings, ONCALL, "down", "adjust", ["alice", "+5", "lost"]) == 0
    for manager in (MGR1, MGR2):
        assert await run_break_glass(settings, manager, "down", "adjust", ["approve", "1"]) == 1
        assert "unverified" in capsys.readouterr().err
    assert await pool.fetchval("SELECT status FROM adjustments WHERE id = 1") == "PENDING_APPROVAL"
    assert await pool.fetchval("SELECT count(*) FROM adjustment_decisions") == 0


async def test_break_glass_needs_a_claimed_id_and_a_reason(database_url: str) -> None:
    settings = make_settings(database_url=database_url, **ROLES)
    with pytest.raises(ConfigError, match="--as"):
        await run_break_glass(settings, None, "down", "gate", ["status"])
    with pytest.raises(ConfigError, match="reason"):
        await run_break_glass(settings, ONCALL, "  ", "gate", ["status"])


# --- the CLI's side -------------------------------------------------------------------------


def test_without_a_token_the_cli_says_how_to_get_one() -> None:
    with pytest.raises(ConfigError) as missing:
        ops_remote.read_token(None, None)
    message = missing.value.message
    assert "\n" not in message
    assert "payops token --operator" in message
    assert "--break-glass" in message


def test_as_is_refused_when_it_is_not_the_tokens_operator(tmp_path: Path) -> None:
    token = operator(ONCALL)["Authorization"].removeprefix("Bearer ")
    ops_remote.check_claimed(ONCALL, token)
    ops_remote.check_claimed(None, token)
    with pytest.raises(ConfigError, match="not the operator of your token"):
        ops_remote.check_claimed(MGR1, token)
    path = tmp_path / "token"
    path.write_text(token + "\n")
    assert ops_remote.read_token(path, "other") == token


def test_the_service_url_comes_from_the_flag_the_environment_or_payops_up(tmp_path: Path) -> None:
    assert ops_remote.service_url(None, None, tmp_path) == "http://127.0.0.1:8080"
    (tmp_path / "up.json").write_text(json.dumps({"service_url": "http://127.0.0.1:9999/"}))
    assert ops_remote.service_url(None, None, tmp_path) == "http://127.0.0.1:9999"
    assert ops_remote.service_url(None, "http://svc:1", tmp_path) == "http://svc:1"
    assert ops_remote.service_url("http://flag:2/", "http://svc:1", tmp_path) == "http://flag:2"


def test_payops_token_operator_mints_what_the_service_accepts_as_an_operator(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYOPS_JWT_SECRET", JWT_SECRET)
    assert cli.main(["token", "--operator", ONCALL]) == 0
    token = capsys.readouterr().out.strip()
    found = TokenVerifier(make_settings()).verify(f"Bearer {token}")
    assert found.sub == ONCALL
    assert OPERATOR_SCOPE in found.scopes
    assert cli.main(["token", "alice"]) == 0
    user = TokenVerifier(make_settings()).verify(f"Bearer {capsys.readouterr().out.strip()}")
    assert OPERATOR_SCOPE not in user.scopes
    assert cli.main(["token"]) == 2
    assert "--operator" in capsys.readouterr().err
