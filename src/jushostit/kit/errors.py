"""One exception base carrying its HTTP status and error code; the handlers render the contract's shape:
{"error": {"code": "...", "message": "...", "details": ...}}, for every error on every route (docs/api.md).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class AppError(Exception):
    status_code = 400
    code = "bad_request"
    keep_transaction = False
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code:
            self.code = code


class BadRequest(AppError):
    pass


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012 - never mutated (TooManyRequests sets its own)


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"

    def __init__(self, message: str = "Not found", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class Unprocessable(AppError):
    """Well-formed input that a rule refuses (a budget in another currency than the account's)."""

    status_code = 422
    code = "validation_error"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class ServiceUnavailable(AppError):
    """A service we depend on (a payment provider) did not answer: nothing was recorded that a retry would
    repeat."""

    status_code = 503
    code = "service_unavailable"


class TooManyRequests(AppError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, keep_transaction: bool = False) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.headers = {"Retry-After": str(max(1, retry_after))}
        self.keep_transaction = keep_transaction


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable: what went wrong (e.g. `validation_error`)")
    message: str = Field(description="For people; may change between versions")
    details: Any = Field(
        default=None,
        description="null; for `validation_error` and `invalid_json` a list of `{loc, msg, type}`; otherwise an "
        "object particular to the code (e.g. `retry_after`, `request_id`)",
    )


class ErrorResponse(BaseModel):
    """The shape of every error response, on every route."""

    error: ErrorBody


def error_payload(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can answer."""
    return {status: {"model": ErrorResponse} for status in statuses}


def conflicts(codes: dict[str, str]) -> dict[int | str, dict[str, Any]]:
    """A 409 entry for `responses=` that lists the route's error codes."""
    listed = "; ".join(f"`{code}`: {meaning}" for code, meaning in codes.items())
    return {409: {"model": ErrorResponse, "description": f"Conflict. {listed}."}}
