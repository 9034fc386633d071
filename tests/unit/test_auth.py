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
from payops import cli, cli_args

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
    iat = datetime.now(UTC)
    token = jwt.encode({"sub": "alice", "iat": iat, "exp": exp}, key, algorithm="RS256")
    assert v.verify(f"Bearer {token}").sub == "alice"
    # An HS256 token signed with the public key as secret must not pass.
    forged = jwt.encode(
        {"sub": "mallory", "iat": iat, "exp": exp},
        "public-key-used-as-an-hmac-secret!!",
        algorithm="HS256",
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


def _hs256(claims: dict[str, object], key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def _refusal(verifier: TokenVerifier, token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        verifier.verify(f"Bearer {token}")
    return info.value


def test_a_token_living_longer_than_the_maximum_is_refused() -> None:
    v = _verifier(jwt_max_lifetime_seconds=3600, jwt_service_max_lifetime_seconds=7200)
    assert v.verify(f"Bearer {mint_token(SECRET, 'a', ttl=timedelta(hours=1))}").sub == "a"
    refused = _refusal(v, mint_token(SECRET, "a", ttl=timedelta(hours=1, seconds=1)))
    assert refused.code == "invalid_token"
    assert (
        refused.message == "the token lives 3601 s from iat to exp; a token may live at most 3600 s"
    )
    # A service token has its own maximum.
    service = mint_token(SECRET, "shop", ttl=timedelta(hours=2), scopes=(DEBIT_SCOPE,))
    assert v.verify(f"Bearer {service}").sub == "shop"
    longer = mint_token(SECRET, "shop", ttl=timedelta(hours=3), scopes=(DEBIT_SCOPE,))
    assert "a service token may live at most 7200 s" in _refusal(v, longer).message


def test_the_default_maximum_is_a_day_and_payops_token_passes_it() -> None:
    v = _verifier()
    assert v.verify(f"Bearer {mint_token(SECRET, 'a')}").sub == "a"  # payops token's 12 h
    assert v.verify(f"Bearer {mint_token(SECRET, 'a', ttl=timedelta(days=1))}").sub == "a"
    assert "at most 86400 s" in _refusal(v, mint_token(SECRET, "a", ttl=timedelta(days=2))).message


def test_a_token_without_iat_is_refused_when_a_maximum_is_set() -> None:
    exp = datetime.now(UTC) + timedelta(minutes=5)
    token = _hs256({"sub": "a", "exp": exp})
    assert _refusal(_verifier(), token).message == "the token lacks its iat (issued at) claim"
    unlimited = _verifier(jwt_max_lifetime_seconds=0, jwt_service_max_lifetime_seconds=0)
    assert unlimited.verify(f"Bearer {token}").sub == "a"


NOW = datetime.now(UTC)
# Far enough ahead that `nbf`/`iat` in the future stay so however long the suite runs.
LATER = NOW + timedelta(hours=2)
# (token, payops' message): never the JWT library's words
REFUSALS = [
    ("not.a.jwt", "the token is not a well-formed JWT"),
    ("abc", "the token is not a well-formed JWT"),
    (
        _hs256({"sub": "a", "iat": NOW, "exp": LATER}, "y" * 40),
        "the token's signature does not verify",
    ),
    (_hs256({"sub": "a", "iat": NOW}), "the token lacks its exp (expiry) claim"),
    (_hs256({"iat": NOW, "exp": LATER}), "the token lacks its sub (user id) claim"),
    (
        _hs256({"sub": "a", "iat": "yesterday", "exp": LATER}),
        "the token's iat (issued at) is not a time",
    ),
    (
        _hs256({"sub": "a", "iat": NOW + timedelta(hours=1), "exp": LATER + timedelta(hours=1)}),
        "the token is not valid yet",
    ),
    (_hs256({"sub": "a", "iat": NOW, "exp": LATER, "nbf": LATER}), "the token is not valid yet"),
    (
        jwt.encode({"sub": "a", "iat": NOW, "exp": LATER}, None, algorithm="none"),
        "the token is signed with an algorithm payops does not accept",
    ),
    (_hs256({"sub": "a", "iat": NOW, "exp": "tomorrow"}), "the token is not a well-formed JWT"),
]


@pytest.mark.parametrize(("token", "message"), REFUSALS, ids=[m for _, m in REFUSALS])
def test_a_refusal_says_what_is_wrong_in_payops_words(token: str, message: str) -> None:
    refused = _refusal(_verifier(), token)
    assert (refused.code, refused.message) == ("invalid_token", message)


def test_issuer_and_audience_refusals_are_named() -> None:
    v = _verifier(jwt_issuer="https://auth.example", jwt_audience="payops")
    other_iss = mint_token(SECRET, "a", issuer="https://evil", audience="payops")
    assert _refusal(v, other_iss).message == "the token was not issued by the configured issuer"
    other_aud = mint_token(SECRET, "a", issuer="https://auth.example", audience="shop")
    assert _refusal(v, other_aud).message == "the token is not meant for this service (audience)"
    assert _refusal(v, mint_token(SECRET, "a")).message.startswith("the token lacks its")


def test_payops_token_mints_what_the_service_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(jwt_secret=SECRET)

    def token(*argv: str) -> str:
        assert cli._token(settings, cli_args.parser().parse_args(["token", *argv])) == 0
        return capsys.readouterr().out.strip()

    assert _verifier().verify(f"Bearer {token('alice')}").sub == "alice"
    assert DEBIT_SCOPE in _verifier().verify(f"Bearer {token('shop', '--service')}").scopes
    with pytest.raises(ConfigError, match="PAYOPS_JWT_MAX_LIFETIME_SECONDS"):
        token("alice", "--ttl-hours", "48")
