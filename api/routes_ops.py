"""`POST /v1/ops/{command}`: the runbook's commands for an operator who proved who they are.

`payops ops <command> ...` sends its arguments here. The operator is the `sub` of a bearer
JWT verified like every API token (api/auth.py) and carrying the scope `payops:operator`;
the ids are Slack user ids, so the service's own PAYOPS_SLACK_ONCALL and
PAYOPS_SLACK_MANAGERS decide what the operator may do — never the caller's environment.

The commands themselves live in bot/ (api/ cannot import it): the composition root puts an
`OpsRunner` in the app under `OPS_RUNNER`.

Answers: 200 `{"text", "ok"}` once the command ran or refused (`ok` false: a "no" the
CLI exits 1 on, with the refusal's `code`); 401 without a valid token; 403 without the
operator scope or when the operator is not on call; 400 for a body or command it cannot read.
"""

from __future__ import annotations

from typing import Annotated, Protocol

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.auth import actor_of, principal, require_scope
from api.http import json_response, read_json
from api.keys import OPS_RUNNER, SERVICES
from api.routedoc import Answer, Param, Route, RouteDoc, error
from core import logs
from core.audit import Actor
from core.errors import InvalidInput, PayopsError

OPERATOR_SCOPE = "payops:operator"


class Answered(Protocol):
    """What a command answers (bot/replies.py `Reply` is one)."""

    @property
    def text(self) -> str: ...

    @property
    def ok(self) -> bool: ...


class OpsRunner(Protocol):
    """The runbook's commands, as the composition root wires them (bot/ops.py)."""

    def known(self, command: str) -> bool: ...

    async def authorize(self, operator: str) -> None:
        """Raise `Forbidden` unless `operator` is on call (or a manager) in the service's
        configuration."""

    async def run(self, actor: Actor, command: str, args: list[str]) -> Answered:
        """Run `command` as `actor`; a refusal raises a `PayopsError`."""


def _arg(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


# No count or length of their own: the body cap (PAYOPS_MAX_BODY_BYTES, 413) bounds them, and
# each command checks its own arguments (a reason's length, a reference's form).
Arg = Annotated[str, AfterValidator(_arg)]


class OpsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    args: list[Arg] = Field(
        default_factory=list,
        description="The command's words, as typed after `payops ops <command>`",
    )


class OpsAnswerBody(BaseModel):
    text: str = Field(description="The command's answer, or why it refused")
    ok: bool = Field(description="False: a refusal or a 'no' (the CLI exits 1)")
    code: str | None = Field(default=None, description="The refusal's error code, when refused")


async def run_command(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = principal(request)
    body = await read_json(request, OpsRequest, svc.settings.max_body_bytes)
    require_scope(p, OPERATOR_SCOPE)
    runner = request.app[OPS_RUNNER]
    command = request.match_info["command"]
    if not runner.known(command):
        raise InvalidInput(f"unknown command {command!r}", code="unknown_command")
    logs.add(operator=p.sub, command=command)
    if body.args[:1] != ["help"]:
        await runner.authorize(p.sub)
    actor = Actor(p.sub, "cli", actor_of(request, p).request_id)
    try:
        answer = await runner.run(actor, command, list(body.args))
    except PayopsError as exc:
        return json_response(OpsAnswerBody(text=exc.message, ok=False, code=exc.code))
    return json_response(OpsAnswerBody(text=answer.text, ok=answer.ok))


COMMAND = Param(
    "command",
    "path",
    {"type": "string", "minLength": 1, "maxLength": 50},
    required=True,
    description="A runbook command: triage, gate, smoke, adjust, recon, incident, ...",
)
RUN = RouteDoc(
    "runOpsCommand",
    f"Run a runbook command as the token's operator (scope {OPERATOR_SCOPE}; on call in the "
    "service's PAYOPS_SLACK_ONCALL or PAYOPS_SLACK_MANAGERS)",
    request=OpsRequest,
    params=(COMMAND,),
    authenticated=True,
    database=True,
    answers=(
        Answer(200, "The command ran; `ok` false when it refused or answered no", OpsAnswerBody),
        error(400, "unknown_command"),
        error(403, "insufficient_scope", "not_oncall", "not_configured"),
    ),
)

ROUTES = (Route("POST", "/v1/ops/{command}", "ops.run", run_command, RUN),)
