"""Base classes for request and response models."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Strict

T = TypeVar("T")


# JSON has no enum or datetime type: such fields parse from their string form (still validated), while
# str / int / bool stay strict.
def from_json_string(tp: type[T]) -> Any:
    return Annotated[tp, Strict(False)]


class RequestModel(BaseModel):
    """Strict input: no coercion (`false` is not an integer, `"1"` not a bool) and unknown fields refused,
    so a client can never mass-assign a field the route does not offer."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
