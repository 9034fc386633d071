"""Bearer JWT authentication: `sub` is the user id; `exp` is required.

HS256 with `PAYOPS_JWT_SECRET`, or RS256 with `PAYOPS_JWT_PUBLIC_KEY`; `iss` and `aud` are
checked when configured. Internal services carry the scope `credits:debit` to spend credits.

A client sends the same token with every request until it expires, so a verified token is
remembered (bounded, least recently used first out) and only its expiry is checked again:
the signature and the claims of a given token string cannot change.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
                    "require": ["exp", "sub"],
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                },
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the token has expired", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}", code="invalid_token") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUB_LENGTH or not sub.isprintable():
            raise Unauthorized("the token's sub is not a valid user id", code="invalid_token")
        scope = claims.get("scope", "")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        principal = Principal(sub=sub, scopes=scopes)
        # A token with `nbf` is not remembered: its validity also starts at a time.
        if "nbf" not in claims:
            self._verified[token] = (principal, float(claims["exp"]))
            if len(self._verified) > VERIFIED_TOKENS:
                self._verified.popitem(last=False)
        return principal


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
