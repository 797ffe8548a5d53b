"""Base classes for request and response models."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Strict, StringConstraints, field_validator

T = TypeVar("T")


# JSON has no enum or datetime type: such fields parse from their string form (still validated), while
# str / int / bool stay strict.
def from_json_string(tp: type[T]) -> Any:
    return Annotated[tp, Strict(False)]


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


# A name people read (accounts, API keys): no control characters, which would break email headers and logs.
DisplayName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class RequestModel(BaseModel):
    """Strict input: no coercion (`false` is not an integer, `"1"` not a bool) and unknown fields refused,
    so a client can never mass-assign a field the route does not offer. No string may hold a NUL character
    (PostgreSQL text cannot store one)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def refuse_nul_characters(cls, value: Any) -> Any:
        if _has_nul(value):
            raise ValueError("must not contain NUL characters")
        return value


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
