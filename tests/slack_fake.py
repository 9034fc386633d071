"""A local fake of the Slack Web API that records every call, and Slack-style signing.

The bot's `AsyncWebClient` is pointed at `<fake>/api/`; slash-command payloads carry a
`response_url` on the fake too, so every message the bot sends is recorded here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web
from aiohttp.test_utils import TestServer
from slack_sdk.signature import SignatureVerifier

SIGNING_SECRET = "slack-signing-secret-for-tests-0123456789"
BOT_TOKEN = "xoxb-test-token"


@dataclass
class Call:
    method: str
    payload: dict[str, Any]


@dataclass
class FakeSlack:
    calls: list[Call] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    rate_limit_next: int = 0  # answer this many calls with 429 first
    refused: dict[str, str] = field(default_factory=dict)  # channel -> chat.postMessage error
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    server: TestServer | None = None
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Messages in channels, as conversations.history/replies read them: what the bot posted
    # and what a test says people wrote (`say`).
    messages: list[dict[str, Any]] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)  # file id -> uploaded content
    channels: dict[str, str] = field(default_factory=dict)  # created: name -> id
    unknown_users: set[str] = field(default_factory=set)  # conversations.invite: user_not_found

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/response/{id}", self._response)
        app.router.add_get("/socket", self._socket)
        app.router.add_post("/upload/{file_id}", self._upload)
        return app

    async def start(self) -> str:
        self.server = TestServer(self.app())
        await self.server.start_server()
        return str(self.server.make_url("/"))

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/"))

    def api_url(self) -> str:
        return self.url + "api/"

    async def _payload(self, request: web.Request) -> dict[str, Any]:
        if request.method == "GET":
            return dict(request.query)
        raw = await request.text()
        if request.content_type == "application/json":
            return dict(request.query) | dict(json.loads(raw or "{}"))
        return dict(request.query) | dict(parse_qsl(raw))

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        payload = await self._payload(request)
        if self.rate_limit_next > 0:
            self.rate_limit_next -= 1
            self.calls.append(Call(f"{method}:429", payload))
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "0"}
            )
        self.calls.append(Call(method, payload))
        self.changed.set()
        if method == "auth.test":
            return web.json_response(
                {"ok": True, "user_id": "UBOT", "bot_id": "BBOT", "team_id": "T1"}
            )
        if method == "usergroups.users.list":
            return web.json_response(
                {"ok": True, "users": self.groups.get(payload.get("usergroup", ""), [])}
            )
        if method == "chat.postMessage" and payload.get("channel") in self.refused:
            return web.json_response({"ok": False, "error": self.refused[payload["channel"]]})
        if method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
            ts = payload.get("ts") or f"{int(time.time())}.{next(self._ts):06d}"
            if method == "chat.postMessage":
                self._remember(payload.get("channel", ""), ts, payload, "UBOT")
            return web.json_response({"ok": True, "channel": payload.get("channel"), "ts": ts})
        answer = self._more(method, payload)
        if answer is not None:
            return web.json_response(answer)
        if method == "apps.connections.open":
            return web.json_response(
                {"ok": True, "url": self.url.replace("http", "ws", 1) + "socket"}
            )
        if method == "views.open":
            return web.json_response({"ok": True, "view": {"id": "V1"}})
        return web.json_response({"ok": True})

    def _remember(self, channel: str, ts: str, payload: dict[str, Any], user: str) -> None:
        message = {"type": "message", "ts": ts, "user": user, "text": payload.get("text", "")}
        if payload.get("thread_ts"):
            message["thread_ts"] = payload["thread_ts"]
        self.messages.append({"channel": channel, **message})

    def say(self, channel: str, user: str, text: str, thread_ts: str | None = None) -> str:
        """A message someone wrote in a channel (or thread); its ts."""
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        self._remember(channel, ts, {"text": text, "thread_ts": thread_ts}, user)
        return ts

    def _in(self, channel: str) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in m.items() if k != "channel"}
            for m in self.messages
            if m["channel"] == channel
        ]

    def _more(self, method: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Conversations, files and views: answered as Slack answers them."""
        channel = str(payload.get("channel") or "")
        if method == "conversations.replies":
            ts = payload.get("ts")
            found = [m for m in self._in(channel) if ts in (m["ts"], m.get("thread_ts"))]
            if not found:
                return {"ok": False, "error": "thread_not_found"}
            return {"ok": True, "messages": found, "has_more": False}
        if method == "conversations.history":
            latest = str(payload.get("latest") or "9999999999")
            oldest = str(payload.get("oldest") or "0")
            found = [m for m in self._in(channel) if oldest <= m["ts"] <= latest]
            found.sort(key=lambda m: m["ts"], reverse=True)
            return {"ok": True, "messages": found[: int(payload.get("limit") or 100)]}
        if method == "conversations.create":
            name = str(payload.get("name"))
            if name in self.channels:
                return {"ok": False, "error": "name_taken"}
            self.channels[name] = f"C_{len(self.channels) + 1:04d}"
            return {"ok": True, "channel": {"id": self.channels[name], "name": name}}
        if method == "conversations.invite":
            if payload.get("users") in self.unknown_users:
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "channel": {"id": channel}}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._ts):06d}"
            return {"ok": True, "upload_url": f"{self.url}upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = payload.get("files")
            listed = json.loads(files) if isinstance(files, str) else list(files or [])
            return {"ok": True, "files": [{"id": f["id"], "title": f["title"]} for f in listed]}
        if method == "views.publish":
            return {"ok": True, "view": {"id": "VH", "type": "home"}}
        return None

    async def _upload(self, request: web.Request) -> web.Response:
        self.uploads[request.match_info["file_id"]] = await request.read()
        self.calls.append(Call("upload", {"file_id": request.match_info["file_id"]}))
        self.changed.set()
        return web.Response(text="OK - 1")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        """Socket Mode: say hello, then relay envelopes the test sends and record acks."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {}})
        self.changed.set()
        async for message in ws:
            if message.type == web.WSMsgType.TEXT:
                self.calls.append(Call("socket:ack", json.loads(message.data)))
                self.changed.set()
        return ws

    async def _response(self, request: web.Request) -> web.Response:
        payload = await self._payload(request)
        self.calls.append(Call(f"response:{request.match_info['id']}", payload))
        self.changed.set()
        return web.json_response({"ok": True})

    def of(self, method: str) -> list[dict[str, Any]]:
        return [c.payload for c in self.calls if c.method == method]

    def responses(self) -> list[dict[str, Any]]:
        return [c.payload for c in self.calls if c.method.startswith("response:")]

    async def wait_for(self, predicate: Any, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def signed_headers(
    body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    assert signature is not None  # None only without a timestamp
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def command_body(
    fake: FakeSlack, command: str, text: str, user: str, response_id: str = "r"
) -> str:
    return urlencode(
        {
            "token": "legacy",
            "team_id": "T1",
            "team_domain": "acme",
            "channel_id": "C_OPS",
            "channel_name": "payments-ops",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A1",
            "response_url": f"{fake.url}response/{response_id}",
            "trigger_id": "1337.42.abcd",
        }
    )


def action_body(payload: dict[str, Any]) -> str:
    return urlencode({"payload": json.dumps(payload)})


def event_body(event: dict[str, Any], event_id: str = "Ev1") -> str:
    """An Events API callback (JSON), as Slack sends `reaction_added`, `app_home_opened`."""
    return json.dumps(
        {
            "token": "legacy",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "event": event,
        }
    )
