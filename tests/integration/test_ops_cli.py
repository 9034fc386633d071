"""`payops ops`: the Slack commands on the command line, as a named operator."""

from __future__ import annotations

import json

import asyncpg
import pytest

from core.config import Settings
from payops.ops_cli import run_ops
from tests.support import make_settings


def _settings(database_url: str) -> Settings:
    return make_settings(
        database_url=database_url,
        slack_oncall="U_ONCALL",
        slack_managers="U_MGR,U_MGR2",
        solana_rpc_url="http://127.0.0.1:9",  # the CLI must work while the RPC is down
    )


async def test_gate_through_the_cli_is_audited_as_the_operator(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(database_url)
    assert (
        await run_ops(settings, "U_ONCALL", "gate", ["close", "slack is down, duplicates seen"])
        == 0
    )
    assert "Verify CLOSED by U_ONCALL" in capsys.readouterr().out
    assert await run_ops(settings, "U_ONCALL", "gate", ["open"]) == 1
    assert "smoke test" in capsys.readouterr().err
    assert await run_ops(settings, "U_ONCALL", "gate", ["status"]) == 0
    assert "verify: CLOSED" in capsys.readouterr().out


async def test_unknown_operator_is_refused(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_ops(_settings(database_url), "U_NOBODY", "gate", ["close", "x"]) == 1
    assert "not on call" in capsys.readouterr().err


async def test_adjustment_requested_and_approved_on_the_cli(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(database_url)
    assert await run_ops(settings, "U_ONCALL", "adjust", ["alice", "+12", "missing credit"]) == 0
    out = capsys.readouterr().out
    assert "Adjustment #1: +12 credits for alice" in out
    assert await run_ops(settings, "U_ONCALL", "adjust", ["approve", "1"]) == 1
    assert "manager" in capsys.readouterr().err
    assert await run_ops(settings, "U_MGR", "adjust", ["approve", "1"]) == 0
    assert "APPLIED" in capsys.readouterr().out
    assert await run_ops(settings, "U_ONCALL", "triage", ["alice"]) == 0
    assert "ledger tx" in capsys.readouterr().out


async def test_incident_closeout_on_the_cli(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(database_url)
    assert await run_ops(settings, "U_ONCALL", "incident", ["open", "missing", "credits"]) == 0
    assert await run_ops(settings, "U_ONCALL", "incident", ["close"]) == 1
    assert "closeout" in capsys.readouterr().err
    closed = await run_ops(
        settings,
        "U_ONCALL",
        "incident",
        [
            "close",
            "--root-cause",
            "rpc",
            "--affected-users",
            "alice",
            "--corrective-action",
            "adjusted",
            "--prevention-action",
            "alert",
        ],
    )
    assert closed == 0
    assert "root cause: rpc" in capsys.readouterr().out


async def test_help_needs_no_authorization(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_ops(_settings(database_url), "U_NOBODY", "recon", ["help"]) == 0
    assert "/pay-recon" in capsys.readouterr().out


async def test_reopening_is_refused_under_drift_and_rollback_check_says_why(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(database_url)
    assert await run_ops(settings, "U_ONCALL", "adjust", ["alice", "+12", "missing credit"]) == 0
    assert await run_ops(settings, "U_MGR", "adjust", ["approve", "1"]) == 0
    conn = await asyncpg.connect(database_url)
    try:
        # Corrupt the cached balance behind the ledger's back: drift.
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("UPDATE user_balances SET balance = balance + 5 WHERE user_id = 'alice'")
    finally:
        await conn.close()
    assert (
        await run_ops(settings, "U_ONCALL", "gate", ["close", "credits integrity uncertain"]) == 0
    )
    capsys.readouterr()
    # NOT ready is an answer a script must see: exit status 1.
    assert await run_ops(settings, "U_ONCALL", "gate", ["rollback-check"]) == 1
    report = capsys.readouterr().out
    assert "ok  1. Pause verification path" in report
    assert "TODO 4. Reconcile before re-opening" in report
    assert "NOT ready to reopen" in report
    # A second check within minutes reuses that full run and says how old it is.
    assert await run_ops(settings, "U_ONCALL", "rollback-check", ["--json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["ready"] is False
    assert answer["reconciliation"]["reused"] is True
    assert answer["reconciliation"]["zero_drift"] is False
    assert [s["done"] for s in answer["steps"]][:1] == [True]
    assert "min" in answer["steps"][3]["detail"]
    assert await run_ops(settings, "U_ONCALL", "rollback-check", ["--json", "--fresh"]) == 1
    fresh = json.loads(capsys.readouterr().out)["reconciliation"]
    assert fresh["reused"] is False
    assert fresh["run_id"] > answer["reconciliation"]["run_id"]
    assert await run_ops(settings, "U_ONCALL", "rollback-check", ["--jsn"]) == 1
    assert "unknown argument '--jsn'" in capsys.readouterr().err
    assert await run_ops(settings, "U_ONCALL", "gate", ["open"]) == 1
    assert "drift" in capsys.readouterr().err
    assert (
        await run_ops(
            settings, "U_ONCALL", "gate", ["open", "--force", "drift understood, ticket RECON-1"]
        )
        == 0
    )
    assert "Verify OPEN" in capsys.readouterr().out


async def test_adjustment_messages_say_what_happened(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(database_url)
    # No reason: say so, rather than the whole help.
    assert await run_ops(settings, "U_ONCALL", "adjust", ["alice", "+10"]) == 1
    err = capsys.readouterr().err
    assert 'a reason is required: /pay-adjust alice +10 "<reason>"' in err
    assert "audited credit corrections" not in err
    # No Slack: nothing was posted, and the answer says how the request gets decided.
    assert await run_ops(settings, "U_ONCALL", "adjust", ["alice", "+10", "missing credit"]) == 0
    out = capsys.readouterr().out
    assert "Posted for approval" not in out
    assert "Waiting for a manager's approval: `payops ops adjust approve 1`" in out
    assert await run_ops(settings, "U_MGR", "adjust", ["approve", "1"]) == 0
    capsys.readouterr()
    # A correction that takes the balance below zero: warned before, and said right after.
    assert await run_ops(settings, "U_ONCALL", "adjust", ["alice", "-25", "spent twice"]) == 0
    assert "applying takes alice's balance from 10 to -15" in capsys.readouterr().out
    assert await run_ops(settings, "U_MGR", "adjust", ["approve", "2"]) == 0
    out = capsys.readouterr().out
    assert "applying took alice's balance from 10 to -15" in out
    assert "-25 to" not in out


async def test_a_failed_smoke_test_exits_1_and_leaves_no_test_credit(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No known-valid transaction is configured, and the RPC is down: the smoke test fails.
    settings = _settings(database_url)
    assert await run_ops(settings, "U_ONCALL", "smoke", []) == 1
    out = capsys.readouterr().out
    assert "Smoke test FAILED" in out
    assert "FAIL" in out
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM smoke_runs WHERE NOT passed") == 1
        assert await conn.fetchval("SELECT count(*) FROM ledger_transactions") == 0
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'smoke.run'") == 1
    finally:
        await conn.close()
