"""The HTTP load generator: a separate process, pinned to one CPU, that replays prepared
requests over keep-alive connections and records when each one started and ended.

    python -m bench.perf_load SPEC.json OUT.json

SPEC: {"host", "port", "requests": [raw HTTP/1.1 request text], "concurrency", "warmup",
"duration", "cpu": int | null, "mode": "closed" | "burst", "keep_bodies": bool}

- closed: `concurrency` connections, each sending its next request as soon as the previous
  answer arrived, until the requests run out or `warmup + duration` seconds have passed;
- burst: one connection per request, all opened first, then every request written at once
  (the "1,000 concurrent duplicate verifies").

OUT: {"records": [[start, end, status]], "bodies": [...] (when kept), "connect_s": float}.
Plain asyncio streams and a minimal HTTP/1.1 reader keep the client's own cost per request
small (tens of microseconds), so the server, not the client, is what is measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

CONNECT_BATCH = 50  # opened at once, well inside any listen backlog


class ProtocolError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body, and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    keep_alive = True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and value.strip().lower() == b"close":
            keep_alive = False
    if length is None:
        raise ProtocolError(f"no Content-Length in {head[:200]!r}")
    body = await reader.readexactly(length) if length else b""
    return status, body, keep_alive


# A connection the server dropped, or an answer that is not HTTP: recorded as status 0.
_BROKEN = (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError)


async def _connect_all(
    host: str, port: int, n: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    while len(conns) < n:
        batch = min(CONNECT_BATCH, n - len(conns))
        conns += await asyncio.gather(*(asyncio.open_connection(host, port) for _ in range(batch)))
    return conns


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    requests = [r.encode("latin-1") for r in spec["requests"]]
    keep_bodies = bool(spec.get("keep_bodies"))
    records: list[list[float]] = []
    bodies: list[str | None] = [None] * len(requests) if keep_bodies else []
    connect_started = time.perf_counter()
    if spec["mode"] == "burst":
        conns = await _connect_all(spec["host"], spec["port"], len(requests))
        connect_s = time.perf_counter() - connect_started
        go = asyncio.Event()

        async def one(i: int) -> None:
            reader, writer = conns[i]
            await go.wait()
            start = time.perf_counter()
            try:
                writer.write(requests[i])
                status, body, _ = await read_response(reader)
            except _BROKEN:
                status, body = 0, b""
            records.append([start, time.perf_counter(), status])
            if keep_bodies:
                bodies[i] = body.decode()

        tasks = [asyncio.create_task(one(i)) for i in range(len(requests))]
        await asyncio.sleep(0)  # every task is now waiting on `go`
        go.set()
        await asyncio.gather(*tasks)
    else:
        conns = await _connect_all(spec["host"], spec["port"], int(spec["concurrency"]))
        connect_s = time.perf_counter() - connect_started
        deadline = time.perf_counter() + float(spec["warmup"]) + float(spec["duration"])
        next_index = 0

        async def worker(slot: int) -> None:
            nonlocal next_index
            reader, writer = conns[slot]
            while next_index < len(requests):
                start = time.perf_counter()
                if start >= deadline:
                    return
                i = next_index
                next_index += 1
                try:
                    writer.write(requests[i])
                    status, body, keep_alive = await read_response(reader)
                except _BROKEN:
                    status, body, keep_alive = 0, b"", False
                records.append([start, time.perf_counter(), status])
                if keep_bodies:
                    bodies[i] = body.decode()
                if not keep_alive:
                    writer.close()
                    reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
                    conns[slot] = (reader, writer)

        await asyncio.gather(*(worker(slot) for slot in range(len(conns))))
    for _, writer in conns:
        writer.close()
    return {"records": records, "bodies": bodies, "connect_s": connect_s}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec_path, out_path = Path(args[0]), Path(args[1])
    spec = json.loads(spec_path.read_text())
    if spec.get("cpu") is not None:
        os.sched_setaffinity(0, {int(spec["cpu"])})
    result = asyncio.run(run(spec))
    out_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
