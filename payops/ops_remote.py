"""`payops ops <command> ...` as a client of the running service's operator API.

The identity is the operator token (a JWT with the scope `payops:operator`), checked by the
service (api/routes_ops.py) against its own on-call and manager lists. `--as` names nobody:
it is only compared with the token's `sub`, so a wrong token is noticed before it is used.

Where: `--service-url`, else PAYOPS_SERVICE_URL, else the `service_url` of a running
`payops up` (PAYOPS_DATA_DIR/up.json), else http://127.0.0.1:8080.
The token: `--token-file`, else PAYOPS_OPERATOR_TOKEN.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from core.errors import ConfigError

DEFAULT_SERVICE_URL = "http://127.0.0.1:8080"
# Reconciliation runs and smoke tests take their time; the service bounds its own work.
TIMEOUT_SECONDS = 600.0
NO_TOKEN = (
    "no operator token: set PAYOPS_OPERATOR_TOKEN or pass --token-file (production: a JWT "
    "with the scope payops:operator from your identity provider; development: "
    "`payops token --operator <your Slack user id>`), or, with the service down, "
    '`payops ops --break-glass "<reason>" --as <your id> ...`'
)


@dataclass(frozen=True)
class Target:
    url: str
    token: str


def service_url(explicit: str | None, env_url: str | None, data_dir: Path) -> str:
    """Where the operator API is (module docstring)."""
    if explicit:
        return explicit.rstrip("/")
    if env_url:
        return env_url.rstrip("/")
    state = data_dir / "up.json"
    try:
        found = json.loads(state.read_text()).get("service_url")
    except (OSError, ValueError):
        found = None
    return str(found).rstrip("/") if found else DEFAULT_SERVICE_URL


def read_token(token_file: Path | None, env_token: str | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {token_file}: {exc.strerror}") from exc
        if not token:
            raise ConfigError(f"--token-file {token_file} is empty")
        return token
    if env_token and env_token.strip():
        return env_token.strip()
    raise ConfigError(NO_TOKEN)


def token_subject(token: str) -> str | None:
    """The token's `sub`, read without checking the signature (the service checks it)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    sub = claims.get("sub")
    return sub if isinstance(sub, str) else None


def check_claimed(claimed: str | None, token: str) -> None:
    """`--as` must name the token's operator, when it names anyone."""
    if not claimed:
        return
    sub = token_subject(token)
    if sub is not None and sub != claimed:
        raise ConfigError(
            f"--as {claimed} is not the operator of your token ({sub}): the token says who you "
            "are; drop --as or use your own token"
        )


async def run_remote(target: Target, command: str, args: list[str]) -> int:
    """Send the command; print its answer; 0 when it answered ok, 1 otherwise."""
    url = f"{target.url}/v1/ops/{command}"
    headers = {"Authorization": f"Bearer {target.token}"}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json={"args": args}, headers=headers) as resp,
        ):
            body = await _json(resp)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ConfigError(
            f"cannot reach the service at {target.url} ({type(exc).__name__}: {exc}); set "
            'PAYOPS_SERVICE_URL, or if the service is down use --break-glass "<reason>"'
        ) from exc
    if status == 200 and isinstance(body.get("text"), str):
        if body.get("code"):  # the command refused
            print(f"payops ops {command}: {body['text']}", file=sys.stderr)
            return 1
        print(body["text"])  # an answer, "no" answers included (exit 1: scripts see them)
        return 0 if body.get("ok") is True else 1
    found = body.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    message = error.get("message") or f"the service answered HTTP {status}"
    code = error.get("code") or "http_error"
    print(f"payops ops {command}: {message} ({code})", file=sys.stderr)
    return 1


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        found = await resp.json(content_type=None)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
