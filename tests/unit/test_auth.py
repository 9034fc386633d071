"""JWT verification: exp required, iss/aud when configured, RS256 with a public key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from api.auth import DEBIT_SCOPE, TokenVerifier, mint_token, require_scope
from core.config import load_settings
from core.errors import ConfigError, Forbidden, Unauthorized

SECRET = "x" * 40


def _verifier(**kw: object) -> TokenVerifier:
    return TokenVerifier(load_settings(jwt_secret=SECRET, **kw))


def test_valid_token_gives_the_subject_and_scopes() -> None:
    token = mint_token(SECRET, "alice", scopes=(DEBIT_SCOPE,))
    p = _verifier().verify(f"Bearer {token}")
    assert p.sub == "alice"
    require_scope(p, DEBIT_SCOPE)
    with pytest.raises(Forbidden):
        require_scope(_verifier().verify(f"Bearer {mint_token(SECRET, 'bob')}"), DEBIT_SCOPE)


def test_issuer_and_audience_are_checked_when_configured() -> None:
    v = _verifier(jwt_issuer="https://auth.example", jwt_audience="payops")
    good = mint_token(SECRET, "a", issuer="https://auth.example", audience="payops")
    assert v.verify(f"Bearer {good}").sub == "a"
    for bad in [
        mint_token(SECRET, "a", issuer="https://evil", audience="payops"),
        mint_token(SECRET, "a", issuer="https://auth.example", audience="other"),
        mint_token(SECRET, "a"),
    ]:
        with pytest.raises(Unauthorized):
            v.verify(f"Bearer {bad}")


def test_expired_token_is_refused_with_its_own_code() -> None:
    old = mint_token(SECRET, "a", now=datetime.now(UTC) - timedelta(days=1), ttl=timedelta(hours=1))
    with pytest.raises(Unauthorized) as info:
        _verifier().verify(f"Bearer {old}")
    assert info.value.code == "token_expired"


def test_token_without_exp_is_refused() -> None:
    # A token that never expires would stay valid forever once leaked: exp is required.
    forever = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")

    with pytest.raises(Unauthorized, match="exp") as info:
        _verifier().verify(f"Bearer {forever}")
    assert info.value.code == "invalid_token"


def test_token_without_exp_is_refused_even_after_a_good_one_for_the_same_user() -> None:
    verifier = _verifier()
    verifier.verify(f"Bearer {mint_token(SECRET, 'alice')}")
    forever = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")

    with pytest.raises(Unauthorized, match="exp"):
        verifier.verify(f"Bearer {forever}")


def test_rs256_with_a_public_key_and_no_algorithm_confusion() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    v = TokenVerifier(load_settings(jwt_public_key=public_pem))
    exp = datetime.now(UTC) + timedelta(minutes=5)
    token = jwt.encode({"sub": "alice", "exp": exp}, key, algorithm="RS256")
    assert v.verify(f"Bearer {token}").sub == "alice"
    # An HS256 token signed with the public key as secret must not pass.
    forged = jwt.encode(
        {"sub": "mallory", "exp": exp}, "public-key-used-as-an-hmac-secret!!", algorithm="HS256"
    )
    with pytest.raises(Unauthorized):
        v.verify(f"Bearer {forged}")


def test_no_key_configured_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="PAYOPS_JWT_SECRET"):
        TokenVerifier(load_settings())


@pytest.mark.parametrize("token", ["\udb34\udf8a", "é.é.é", "abc\u00f5.def.ghi"])
def test_a_token_that_is_not_ascii_is_refused_not_an_error(token: str) -> None:
    with pytest.raises(Unauthorized) as info:
        _verifier().verify(f"Bearer {token}")
    assert info.value.code == "invalid_token"
