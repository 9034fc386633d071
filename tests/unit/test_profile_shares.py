"""bench.profile_shares: each py-spy sample goes to the part of the service that ran it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import profile_shares
from bench.profile_shares import OTHER, part_of, shares

ROOT = "_run_module_as_main (<frozen runpy>:198);run (uvloop/__init__.py:92)"
HANDLER = (
    f"{ROOT};RequestHandler._handle_request (aiohttp/web_protocol.py:577)"
    ";observe (api/middlewares.py:64);limit_per_ip (api/ratelimit.py:134)"
    ";verify_intent (api/routes_intents.py:96);verify_intent (core/purchases/service.py:109)"
)


def name(stack: str) -> str:
    part = part_of(stack.split(";"))
    return part.name if part else OTHER


def test_the_innermost_frame_that_belongs_to_a_part_decides() -> None:
    # the middlewares and the rate limiter wrap every handler: they are not what ran
    rules = f"{HANDLER};SolanaVerifier.verify (core/chain/solana_verifier.py:77)"
    assert name(f"{rules};decide_raw (core/chain/rules.py:93)") == "chain rules"
    credit = f"{HANDLER};credit (core/purchases/credit.py:87)"
    assert name(f"{credit};Connection.fetchrow (asyncpg/connection.py:775)") == (
        "database driver (asyncpg)"
    )
    assert name(f"{credit};replace (dataclasses.py:1501)") == "verify and credit (payops)"
    assert name(f"{HANDLER[: HANDLER.index(';limit_per_ip')]};info (core/logs.py:199)") == (
        "access line and logs"
    )


def test_the_standard_library_and_native_frames_belong_to_their_caller() -> None:
    rpc = f"{ROOT};JsonRpc._send (core/chain/jsonrpc.py:278)"
    assert name(f"{rpc};JSONDecoder.raw_decode (json/decoder.py:353)") == "RPC exchange"
    body = f"{HANDLER[: HANDLER.index(';verify_intent (core')]};read_json (api/http.py:97)"
    assert name(f"{body};JSONDecoder.raw_decode (json/decoder.py:353)") == (
        "request and response bodies"
    )
    assert name(f"{ROOT};Runner.run (asyncio/runners.py:118);write (libc.so.6)") == "event loop"


def test_aiohttp_works_for_the_rpc_client_when_the_client_is_on_the_stack() -> None:
    writer = "StreamWriter._writelines (aiohttp/http_writer.py:116)"
    client = f"{ROOT};JsonRpc._post (core/chain/jsonrpc.py:218);ClientRequest.send (aiohttp/client_reqrep.py:1721)"
    assert name(f"{client};{writer}") == "RPC exchange"
    server = f"{ROOT};RequestHandler.finish_response (aiohttp/web_protocol.py:842)"
    assert name(f"{server};{writer}") == "HTTP server (aiohttp)"


def test_samples_are_summed_and_the_verify_s_own_share_leaves_out_the_shared_parts() -> None:
    s = shares(
        [
            f"{HANDLER};decide_raw (core/chain/rules.py:93) 30\n",
            f"{HANDLER};credit (core/purchases/credit.py:87);fetchrow (asyncpg/connection.py:775) 50\n",
            "\n",
            "<module> (<frozen importlib._bootstrap>:1) 20\n",
        ]
    )
    assert s.samples == 100
    assert s.by_part == {"chain rules": 30, "database driver (asyncpg)": 50, OTHER: 20}
    assert s.own == pytest.approx(0.30)
    table = profile_shares.markdown(s, cpu_ms=0.5)
    assert "| chain rules | - | 30 | 30.0 % | 0.150 |" in table
    assert "| database driver (asyncpg) | yes | 50 | 50.0 % | 0.250 |" in table
    assert "30.0 % of 100 samples, 0.150 of 0.500 ms" in table


def test_a_line_that_is_no_collapsed_stack_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a py-spy collapsed stack line"):
        shares(["a;b;c no-count\n"])
    bad = tmp_path / "profile.svg"
    bad.write_text("<svg>\n")
    assert profile_shares.main([str(bad)]) == 2
    assert profile_shares.main([str(tmp_path / "missing.txt")]) == 2


def test_the_run_report_uses_that_run_s_cpu_per_transaction(tmp_path: Path) -> None:
    (tmp_path / "profile-e2e-c16-r1.txt").write_text(
        f"{HANDLER};decide_raw (core/chain/rules.py:93) 4\n"
    )
    (tmp_path / "profile-e2e-c16-r2.txt").write_text(
        f"{ROOT};Runner.run (asyncio/runners.py:118) 4\n"
    )
    (tmp_path / "profile-ceiling-c16-r1.txt").write_text(
        f"{ROOT};credit (bench/perf_ceiling.py:33);fetchrow (asyncpg/connection.py:775) 3\n"
        f"{ROOT};credit (bench/perf_ceiling.py:33);json_body (bench/perf_sql.py:20) 1\n"
    )
    result = {
        "levels": {
            "16": {
                "e2e": {"cpu_ms_per_tx": {"service": 0.7, "service_kernel": 0.1}},
                "ceiling": {"cpu_ms_per_tx": {"ceiling": 0.3, "ceiling_kernel": 0.1}},
            }
        }
    }
    path = profile_shares.report(tmp_path, result)
    assert path == str(tmp_path / "profile-shares.md")
    text = Path(path).read_text()
    assert "## End-to-end verify, 16 clients" in text
    assert "| chain rules | - | 4 | 50.0 % | 0.400 |" in text
    assert "Steady duplicates" not in text  # no profile of them in this run
    ceiling = text[text.index("## The bare handler") :]
    assert "| database driver (asyncpg) | yes | 3 | 75.0 % | 0.300 |" in ceiling
    assert "| the bare handler's own | yes | 1 | 25.0 % | 0.100 |" in ceiling
    assert "The verify's own work (not shared): 0.0 %" in ceiling
    assert profile_shares.report(tmp_path / "empty", {"levels": {}}) is None
