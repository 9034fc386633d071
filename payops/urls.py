"""URLs as payops shows them in messages and logs: without what may be a secret."""

from __future__ import annotations

from urllib.parse import urlsplit


def public_url(url: str) -> str:
    """`url` without credentials, query or fragment (RPC providers put API keys there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"
