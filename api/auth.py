"""Bearer JWT authentication: `sub` is the user id; `exp` is required.

HS256 with `PAYOPS_JWT_SECRET`, or RS256 with `PAYOPS_JWT_PUBLIC_KEY`; `iss` and `aud` are
checked when configured. Internal services carry the scope `credits:debit` to spend credits.
A token lives at most `PAYOPS_JWT_MAX_LIFETIME_SECONDS` (`..._SERVICE_...` for services)
from its `iat` to its `exp`. A refusal says what is wrong in payops' words: the JWT
library's messages are not part of the API.

A client sends the same token with every request until it expires, so a verified token is
remembered (bounded, least recently used first out) and only its expiry is checked again:
the signature and the claims of a given token string cannot change.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from aiohttp import web

from api.keys import REQUEST_ID, TOKENS
from api.ratelimit import limit_user
from core import logs
from core.audit import Actor
from core.config import Settings
from core.errors import ConfigError, Forbidden, Unauthorized

DEBIT_SCOPE = "credits:debit"
MAX_SUB_LENGTH = 200
LEEWAY_SECONDS = 5
VERIFIED_TOKENS = 10_000  # remembered verified tokens (a few MB at most)


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    scopes: frozenset[str]


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        if settings.jwt_public_key:
            self._key: str = settings.jwt_public_key
            self._algorithms = ["RS256"]
        elif settings.jwt_secret is not None:
            self._key = settings.jwt_secret.get_secret_value()
            self._algorithms = ["HS256"]
        else:
            raise ConfigError("set PAYOPS_JWT_SECRET (HS256) or PAYOPS_JWT_PUBLIC_KEY (RS256)")
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._lifetimes = (
            max_lifetime(settings, service=False),
            max_lifetime(settings, service=True),
        )
        # token -> (principal, exp): tokens verified before, still to be checked for expiry
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def verify(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization: Bearer <jwt>` header, or `Unauthorized`."""
        if not authorization:
            raise Unauthorized("missing bearer token", code="missing_token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("expected an Authorization: Bearer token", code="invalid_token")
        if not token.isascii():
            # A JWT is base64url and dots; anything else (even text that cannot be encoded,
            # which the JWT library would raise on) is no token.
            raise Unauthorized("the bearer token is not a JWT", code="invalid_token")
        known = self._verified.get(token)
        if known is not None:
            principal, exp = known
            if time.time() < exp + LEEWAY_SECONDS:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]  # expired: decoding it again says so
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                options={
                    # iat is checked after, so that an expired token is told it expired
                    "require": ["exp", "sub"],
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                },
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the token has expired", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(_refusal(exc), code="invalid_token") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUB_LENGTH or not sub.isprintable():
            raise Unauthorized("the token's sub is not a valid user id", code="invalid_token")
        scope = claims.get("scope", "")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        principal = Principal(sub=sub, scopes=scopes)
        self._check_lifetime(claims, principal)
        # A token with `nbf` is not remembered: its validity also starts at a time.
        if "nbf" not in claims:
            self._verified[token] = (principal, float(claims["exp"]))
            if len(self._verified) > VERIFIED_TOKENS:
                self._verified.popitem(last=False)
        return principal

    def _check_lifetime(self, claims: dict[str, Any], principal: Principal) -> None:
        service = DEBIT_SCOPE in principal.scopes
        longest = self._lifetimes[service]
        if not longest:
            return
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise Unauthorized("the token lacks its iat (issued at) claim", code="invalid_token")
        lifetime = float(claims["exp"]) - float(iat)
        if lifetime > longest:
            who = "a service token" if service else "a token"
            raise Unauthorized(
                f"the token lives {lifetime:.0f} s from iat to exp; {who} may live at most "
                f"{longest} s",
                code="invalid_token",
            )


def max_lifetime(settings: Settings, *, service: bool) -> int:
    """The longest lifetime (seconds, `exp - iat`) a token may have; 0 for no limit."""
    if service:
        return settings.jwt_service_max_lifetime_seconds
    return settings.jwt_max_lifetime_seconds


# What each refusal of the JWT library means, in payops' words; the first match wins.
_REFUSALS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "the token is signed with an algorithm payops does not accept"),
    (jwt.InvalidIssuerError, "the token was not issued by the configured issuer"),
    (jwt.InvalidAudienceError, "the token is not meant for this service (audience)"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidIssuedAtError, "the token's iat (issued at) is not a time"),
    (jwt.DecodeError, "the token is not a well-formed JWT"),
)


def _refusal(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        known = {"exp": "exp (expiry)", "sub": "sub (user id)", "iat": "iat (issued at)"}
        return f"the token lacks its {known.get(exc.claim, 'required')} claim"
    for kind, message in _REFUSALS:
        if isinstance(exc, kind):
            return message
    return "the token is not valid"


def principal(request: web.Request) -> Principal:
    """The request's authenticated caller (401 otherwise), counted against its user limit."""
    p = request.app[TOKENS].verify(request.headers.get("Authorization"))
    logs.add(user=p.sub)
    limit_user(request, p.sub)
    return p


def actor_of(request: web.Request, p: Principal) -> Actor:
    return Actor(id=p.sub, source="api", request_id=request.get(REQUEST_ID))


def require_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise Forbidden(f"this token lacks the scope {scope}", code="insufficient_scope")


def mint_token(
    secret: str,
    sub: str,
    *,
    ttl: timedelta = timedelta(hours=12),
    scopes: tuple[str, ...] = (),
    issuer: str | None = None,
    audience: str | None = None,
    now: datetime | None = None,
) -> str:
    """An HS256 development token (`payops token`)."""
    issued = now or datetime.now(UTC)
    claims: dict[str, object] = {"sub": sub, "iat": issued, "exp": issued + ttl}
    if scopes:
        claims["scope"] = " ".join(scopes)
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
