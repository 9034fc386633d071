"""Base58 in json-encoded transactions: untrusted text, bounded and strictly read."""

from __future__ import annotations

import pytest
from solders.pubkey import Pubkey

from core.chain.encoding import _MAX_ENCODED_CHARS, MalformedTransaction, b58decode


def test_b58decode_accepts_data_up_to_the_bound() -> None:
    assert len(b58decode("z" * _MAX_ENCODED_CHARS, "data")) > 0


def test_b58decode_refuses_data_longer_than_the_bound_before_decoding() -> None:
    with pytest.raises(MalformedTransaction, match=r"data: base58 data of 8193 chars is too long"):
        b58decode("z" * (_MAX_ENCODED_CHARS + 1), "data")


@pytest.mark.parametrize("text", ["2 ", "2\n", " 2", "2 2", "é", "0", "O", "I", "l", "+"])
def test_b58decode_rejects_anything_outside_the_alphabet(text: str) -> None:
    with pytest.raises(MalformedTransaction, match=r"ix\.data: not a base58 character"):
        b58decode(text, "ix.data")


def test_b58decode_reads_a_32_byte_key_as_solders_does() -> None:
    key = Pubkey.new_unique()
    assert b58decode(str(key), "data") == bytes(key)
