"""`payops preflight` against the local chain and a real database: all ✓ when the mint,
treasury, schema and settings are right, and each wrong one named with its fix."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from solders.keypair import Keypair

from core import db
from core.chain.rpc import SolanaRpc
from core.config import Settings, load_settings
from core.errors import ConfigError
from localnet.server import LocalnetInfo, start_localnet
from payops import cli
from payops.preflight import Report, batch_check, preflight, preflight_command
from payops.preflight_checks import SYSTEM_ACCOUNTS, Status
from tests.fake_node import Reply, running_node
from tests.support import JWT_SECRET

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def chain() -> AsyncIterator[LocalnetInfo]:
    runner, info = await start_localnet("127.0.0.1", 0)
    yield info
    await runner.cleanup()


def production_like(info: LocalnetInfo, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "solana_rpc_url": info.rpc_url,
        "token_mint": info.mint,
        "token_program": info.token_program,
        "token_decimals": info.decimals,
        "treasury_owner": info.treasury_owner,
        "jwt_secret": JWT_SECRET,
        "jwt_issuer": "https://auth.example",
        "jwt_audience": "payops",
        "slack_bot_token": "xoxb-preflight-test",
        "slack_signing_secret": "signing-secret",
        "slack_alerts_channel": "C_ALERTS",
        "slack_approvals_channel": "C_APPROVALS",
        "slack_oncall": "U_ONCALL",
        "slack_managers": "U_MGR1,U_MGR2",
        "rpc_max_retries": 0,
        "rpc_timeout_seconds": 2,
    }
    values.update(overrides)
    return load_settings(**values)


def failed(report: Report) -> dict[str, str]:
    return {c.name: c.detail for c in report.checks if c.status is Status.FAIL}


async def test_everything_right_is_all_ticks_and_exit_zero(
    chain: LocalnetInfo, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = production_like(chain, database_url)
    report = await preflight(settings)
    assert report.ok, report.render()
    assert {c.status for c in report.checks} == {Status.OK}
    names = [c.name for c in report.checks]
    for name in (
        "database_url",
        "payment_settings",
        "jwt",
        "slack_credentials",
        "rpc",
        "rpc_batches",
        "token_mint",
        "token_program",
        "token_decimals",
        "treasury_owner",
        "treasury_token_account",
        "connection",
        "schema",
        "seed",
        "ledger",
        "gate",
    ):
        assert name in names

    assert await preflight_command(settings, as_json=False) == 0
    out = capsys.readouterr().out
    assert "✗" not in out
    assert "✓ token mint" in out
    assert "ready to deploy." in out
    assert JWT_SECRET not in out
    assert "xoxb-preflight-test" not in out


async def test_a_wrong_mint_is_named_and_fails(chain: LocalnetInfo, database_url: str) -> None:
    report = await preflight(
        production_like(chain, database_url, token_mint=str(Keypair().pubkey()))
    )
    assert not report.ok
    assert "does not exist on chain" in failed(report)["token_mint"]
    assert "PAYOPS_SOLANA_RPC_URL" in report.by_name("token_mint").fix


async def test_a_mint_of_other_decimals_or_program_is_named(
    chain: LocalnetInfo, database_url: str
) -> None:
    report = await preflight(
        production_like(
            chain,
            database_url,
            token_decimals=9,
            token_program="TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb",
        )
    )
    assert set(failed(report)) == {"token_decimals", "token_program"}
    assert report.by_name("token_decimals").fix == f"set PAYOPS_TOKEN_DECIMALS={chain.decimals}"
    assert report.by_name("token_program").fix == f"set PAYOPS_TOKEN_PROGRAM={chain.token_program}"
    # The treasury is still judged with the mint's real program, as the service does.
    assert report.by_name("treasury_token_account").status is Status.OK


async def test_a_wrong_treasury_wallet_is_named(chain: LocalnetInfo, database_url: str) -> None:
    report = await preflight(
        production_like(chain, database_url, treasury_owner=str(Keypair().pubkey()))
    )
    assert set(failed(report)) == {"treasury_token_account"}
    assert "does not exist" in failed(report)["treasury_token_account"]
    assert "spl-token create-account" in report.by_name("treasury_token_account").fix


async def test_a_treasury_token_account_of_someone_else_is_named(
    chain: LocalnetInfo, database_url: str
) -> None:
    report = await preflight(
        production_like(chain, database_url, treasury_token_account=chain.payer_token_account)
    )
    assert set(failed(report)) == {"treasury_token_account"}
    assert f"belongs to {chain.payer}" in failed(report)["treasury_token_account"]


async def test_a_token_account_given_as_the_treasury_wallet_is_named(
    chain: LocalnetInfo, database_url: str
) -> None:
    report = await preflight(
        production_like(chain, database_url, treasury_owner=chain.treasury_token_account)
    )
    assert "is a token account, not a wallet" in failed(report)["treasury_owner"]
    assert f"PAYOPS_TREASURY_OWNER={chain.treasury_owner}" in report.by_name("treasury_owner").fix


async def test_an_unmigrated_database_is_named(
    chain: LocalnetInfo, empty_database_url: str
) -> None:
    report = await preflight(production_like(chain, empty_database_url))
    assert set(failed(report)) == {"schema", "seed"}
    assert f"this payops needs {db.latest_version()}" in failed(report)["schema"]
    assert "payops migrate" in report.by_name("schema").fix
    assert SYSTEM_ACCOUNTS[0] in failed(report)["seed"]


async def test_a_database_one_migration_behind_is_named(
    chain: LocalnetInfo, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DELETE FROM schema_migrations WHERE version = $1", db.latest_version())
    finally:
        await conn.close()
    report = await preflight(production_like(chain, database_url))
    assert set(failed(report)) == {"schema"}
    assert f"(missing {db.latest_version()})" in failed(report)["schema"]


async def test_a_closed_gate_is_a_warning_not_a_failure(
    chain: LocalnetInfo, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE gate_switches SET is_open = false, reason = 'incident 7', changed_by = 'U1' "
            "WHERE name = 'verify'"
        )
    finally:
        await conn.close()
    report = await preflight(production_like(chain, database_url))
    assert report.ok
    assert report.by_name("gate").status is Status.WARN
    assert "verify CLOSED by U1: incident 7" in report.by_name("gate").detail


async def test_a_node_that_refuses_batches_is_a_warning_with_its_fix() -> None:
    settings = load_settings(rpc_max_batch=10)
    async with running_node() as node:
        node.results["getSlot"] = 5
        node.refuse_batches = Reply(error={"code": -32600, "message": "batches not supported"})
        async with SolanaRpc(node.url, max_batch=10) as rpc:
            check = await batch_check(settings, rpc)
        assert node.batches == [10]
        assert len(node.requests) == 10  # then asked one by one, and answered
    assert check.status is Status.WARN
    assert "refused a JSON-RPC batch of 10 calls" in check.detail
    assert "PAYOPS_RPC_MAX_BATCH=1" in check.fix


async def test_batches_are_not_checked_when_off(chain: LocalnetInfo, database_url: str) -> None:
    report = await preflight(production_like(chain, database_url, rpc_max_batch=1))
    assert "rpc_batches" not in [c.name for c in report.checks]
    assert report.ok, report.render()


async def test_an_unreachable_rpc_is_named(chain: LocalnetInfo, database_url: str) -> None:
    url = "http://127.0.0.1:9/?api-key=s3cr3t-key"  # providers put API keys in the URL
    report = await preflight(production_like(chain, database_url, solana_rpc_url=url))
    assert "gave no answer" in failed(report)["rpc"]
    assert "s3cr3t-key" not in report.render()


async def test_missing_jwt_and_slack_settings_are_named(
    chain: LocalnetInfo, database_url: str
) -> None:
    settings = production_like(
        chain,
        database_url,
        jwt_secret=None,
        slack_bot_token=None,
        slack_signing_secret=None,
        slack_alerts_channel=None,
        slack_approvals_channel=None,
        slack_oncall="",
        slack_managers="",
    )
    report = await preflight(settings)
    assert set(failed(report)) == {"jwt", "slack_credentials", "slack_channels", "slack_people"}
    skipped = await preflight(
        settings.model_copy(update={"jwt_secret": JWT_SECRET}), skip=["slack"]
    )
    assert skipped.ok
    assert skipped.by_name("slack").status is Status.SKIP


async def test_invalid_settings_are_one_failed_check(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(token_mint="not-a-key")
    assert await preflight_command(caught.value, as_json=True) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] is False
    assert answer["checks"][0]["name"] == "settings"
    assert "PAYOPS_TOKEN_MINT" in answer["checks"][0]["detail"]


async def test_the_cli_prints_json_and_exits_by_the_verdict(
    chain: LocalnetInfo,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        "PAYOPS_DATABASE_URL": database_url,
        "PAYOPS_SOLANA_RPC_URL": chain.rpc_url,
        "PAYOPS_TOKEN_MINT": chain.mint,
        "PAYOPS_TREASURY_OWNER": chain.treasury_owner,
        "PAYOPS_JWT_SECRET": JWT_SECRET,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = await asyncio.to_thread(cli.main, ["preflight", "--json", "--skip", "slack"])
    answer = json.loads(capsys.readouterr().out)
    assert code == 0, answer
    assert answer["ok"] is True
    statuses = {c["name"]: c["status"] for c in answer["checks"]}
    assert statuses["treasury_token_account"] == "ok"
    assert statuses["slack"] == "skip"

    monkeypatch.setenv("PAYOPS_TOKEN_DECIMALS", "2")
    assert await asyncio.to_thread(cli.main, ["preflight"]) == 1
    out = capsys.readouterr().out
    assert "✗ token decimals" in out
    assert "NOT ready to deploy." in out
