"""Access tokens (short-lived JWT, HS256) naming the user and the login session they belong to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

ISSUER = "jushostit"
AUDIENCE = "jushostit-api"


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID


def issue_access_token(secret: str, claims: AccessClaims, *, now: datetime, ttl_seconds: int) -> str:
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(claims.user_id),
        "sid": str(claims.session_id),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def read_access_token(secret: str, token: str) -> AccessClaims | None:
    """Claims of a valid, unexpired token we issued; None for anything else."""
    try:
        payload = jwt.decode(
            token, secret, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER, options={"require": ["exp", "sub", "sid"]}
        )
        return AccessClaims(uuid.UUID(payload["sub"]), uuid.UUID(payload["sid"]))
    except (jwt.InvalidTokenError, ValueError, TypeError):
        return None
