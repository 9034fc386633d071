"""The one error tree of payops. Every error carries a stable string `code`.

    PayopsError
    ├── ConfigError            a setting is missing or invalid (start-up)
    ├── InvalidInput           malformed request              (HTTP 400)
    ├── Unauthorized           missing/invalid credentials    (HTTP 401)
    ├── Forbidden              authenticated, not allowed     (HTTP 403)
    ├── NotFound               unknown, or not yours          (HTTP 404)
    ├── Conflict               clashes with recorded state    (HTTP 409)
    ├── PayloadTooLarge        body over the limit            (HTTP 413)
    ├── Unprocessable          well-formed but refused        (HTTP 422)
    ├── RateLimited            too many requests              (HTTP 429)
    └── Unavailable            try again later                (HTTP 503)
        └── VerifyPaused       the verify gate is closed

The API turns these into `{"error": {"code", "message"}}`; the bot into a private Slack
message. `core/` never imports aiohttp or Bolt, so the HTTP status lives in `api/`.
"""

from __future__ import annotations


class PayopsError(Exception):
    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(PayopsError):
    code = "config_error"


class InvalidInput(PayopsError):
    code = "invalid_request"


class Unauthorized(PayopsError):
    code = "unauthorized"


class Forbidden(PayopsError):
    code = "forbidden"


class NotFound(PayopsError):
    code = "not_found"


class Conflict(PayopsError):
    code = "conflict"


class PayloadTooLarge(PayopsError):
    code = "body_too_large"


class Unprocessable(PayopsError):
    code = "unprocessable"


class RateLimited(PayopsError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Unavailable(PayopsError):
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 5, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class VerifyPaused(Unavailable):
    code = "verify_paused"
