"""Stripe-Signature verification (`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<payload>">`).

Every configured secret is tried, so a secret can be rotated without refusing events signed with the previous
one. The timestamp must lie within the tolerance on both sides of now: Stripe's own check refuses only old
timestamps, and a signature dated in the future would otherwise stay replayable for as long as it is early.
"""

from __future__ import annotations

from collections.abc import Sequence

from stripe import SignatureVerificationError, WebhookSignature

TOLERANCE_SECONDS = 300


class SignatureRefused(Exception):
    """The request is not a genuine, fresh event from the provider."""


def _timestamp(header: str) -> int:
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                break
    raise SignatureRefused("the Stripe-Signature header has no timestamp")


def verify(payload: str, header: str | None, secrets: Sequence[str], *, now: int,
           tolerance: int = TOLERANCE_SECONDS) -> None:
    """Pass when `header` signs `payload` with one of `secrets`, dated within `tolerance` seconds of `now`."""
    if not header:
        raise SignatureRefused("the Stripe-Signature header is missing")
    timestamp = _timestamp(header)
    if abs(now - timestamp) > tolerance:
        raise SignatureRefused(f"the signature's timestamp is more than {tolerance} seconds from now")
    for secret in secrets:
        try:
            # The age was checked above against `now`; this checks the signature only.
            WebhookSignature.verify_header(payload, header, secret, tolerance=None)
        except SignatureVerificationError:
            continue
        return
    raise SignatureRefused("no configured webhook secret signs this request")
