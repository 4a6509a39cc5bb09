"""The admin token. The service is given it once, through an environment variable, and keeps only its SHA-256;
a request's token is hashed and compared in constant time, and neither is ever logged. The API takes
`Authorization: Bearer <token>`; the fleet page also HTTP Basic with the token as the password (any user name), so a
browser can ask for it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from fastapi import Request

from oemkit.serve.errors import ApiError

_BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="oemkit"'}
_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="oemkit"'}
_MAX_HEADER = 4096  # an Authorization header longer than this is not ours


def presented_token(authorization: str | None, *, basic: bool) -> str | None:
    """The token in an Authorization header (Bearer; Basic's password when `basic`), or None."""
    if not authorization or len(authorization) > _MAX_HEADER:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if basic and scheme.lower() == "basic":
        try:
            pair = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, sep, password = pair.partition(":")
        return password if sep and password else None
    return None


class AdminAuth:
    def __init__(self, token_sha256: bytes) -> None:
        self._digest = token_sha256

    def accepts(self, token: str | None) -> bool:
        # hashing first makes the comparison constant-time over equal lengths, whatever the token's length
        candidate = hashlib.sha256((token or "").encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(candidate, self._digest) and token is not None

    def require(self, request: Request, *, basic: bool) -> None:
        if not self.accepts(presented_token(request.headers.get("authorization"), basic=basic)):
            raise ApiError(
                401,
                "unauthorized",
                "admin token missing or wrong",
                headers=_BASIC_CHALLENGE if basic else _BEARER_CHALLENGE,
            )
