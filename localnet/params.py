"""Reading JSON-RPC parameters the way a node does, and the `context` wrapper of its answers."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

from base58 import b58decode
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from localnet.chain import COMMITMENTS, Commitment, LocalChain
from localnet.errors import MIN_CONTEXT_SLOT_NOT_REACHED, RpcError, invalid_params

API_VERSION: Final = "2.3.0"
FEATURE_SET: Final = 3294202862
Params = list[Any]


def param(params: Params, index: int, name: str) -> Any:
    if index >= len(params):
        raise invalid_params(f"Invalid params: missing {name}")
    return params[index]


def pubkey_param(params: Params, index: int, name: str = "pubkey") -> Pubkey:
    return parse_pubkey(param(params, index, name))


def parse_pubkey(value: Any) -> Pubkey:
    if not isinstance(value, str):
        raise invalid_params("Invalid param: not a base58 pubkey")
    try:
        return Pubkey.from_string(value)
    except ValueError as exc:
        raise invalid_params(f"Invalid param: {exc}") from exc


def parse_signature(value: Any) -> Signature:
    if not isinstance(value, str):
        raise invalid_params("Invalid param: not a base58 signature")
    try:
        return Signature.from_string(value)
    except ValueError as exc:
        raise invalid_params(f"Invalid param: {exc}") from exc


def config_param(params: Params, index: int) -> dict[str, Any]:
    """The optional configuration object at `index` ({} when absent or null)."""
    if index >= len(params) or params[index] is None:
        return {}
    config = params[index]
    if not isinstance(config, dict):
        raise invalid_params("Invalid params: expected a configuration object")
    return config


def int_field(config: dict[str, Any], key: str, default: int | None = None) -> int | None:
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise invalid_params(f"Invalid params: {key} must be a non-negative integer")
    return value


def commitment_of(config: dict[str, Any], default: Commitment = "finalized") -> Commitment:
    value = config.get("commitment") or default
    # Legacy names a node still accepts.
    value = {"recent": "processed", "single": "confirmed", "max": "finalized"}.get(value, value)
    for level in COMMITMENTS:
        if value == level:
            return level
    raise invalid_params(f"Invalid params: unknown commitment {value!r}")


def at_least_confirmed(config: dict[str, Any]) -> Commitment:
    commitment = commitment_of(config)
    if commitment == "processed":
        raise invalid_params("Method does not support commitment below `confirmed`")
    return commitment


def context(chain: LocalChain, commitment: Commitment, config: dict[str, Any]) -> dict[str, Any]:
    """The `context` of a wrapped answer, after checking `minContextSlot`."""
    slot = chain.slot_at(commitment)
    check_min_context_slot(slot, config)
    return {"slot": slot, "apiVersion": API_VERSION}


def check_min_context_slot(slot: int, config: dict[str, Any]) -> None:
    minimum = int_field(config, "minContextSlot")
    if minimum is not None and slot < minimum:
        raise RpcError(
            MIN_CONTEXT_SLOT_NOT_REACHED,
            "Minimum context slot has not been reached",
            {"contextSlot": slot},
        )


def decode_transaction(encoded: Any, encoding: str) -> VersionedTransaction:
    """A wire transaction from `sendTransaction` / `simulateTransaction` (base58 by default)."""
    if not isinstance(encoded, str):
        raise invalid_params("Invalid params: transaction must be a string")
    try:
        if encoding == "base64":
            raw = base64.b64decode(encoded, validate=True)
        elif encoding == "base58":
            raw = b58decode(encoded)
        else:
            raise invalid_params(f"Invalid params: unsupported encoding: {encoding}")
    except (binascii.Error, ValueError) as exc:
        raise invalid_params(f"invalid {encoding} encoding: {exc}") from exc
    try:
        return VersionedTransaction.from_bytes(raw)
    except ValueError as exc:
        raise invalid_params(
            f"failed to deserialize solana_transaction::versioned::VersionedTransaction: {exc}"
        ) from exc
