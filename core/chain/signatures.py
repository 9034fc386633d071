"""Transaction signatures as payops accepts them from people and the API."""

from __future__ import annotations

from solders.signature import Signature

from core.errors import InvalidInput


def parse_signature(value: object) -> str:
    """The canonical base58 form of a transaction signature, or `InvalidInput`."""
    if not isinstance(value, str) or not 64 <= len(value) <= 90:
        raise InvalidInput(
            "signature must be a base58 transaction signature", code="invalid_signature"
        )
    try:
        return str(Signature.from_string(value))
    except ValueError as exc:
        raise InvalidInput(
            "signature must be a base58 transaction signature", code="invalid_signature"
        ) from exc
