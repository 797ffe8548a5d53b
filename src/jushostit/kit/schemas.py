"""Base classes for request and response models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestModel(BaseModel):
    """Strict input: no coercion (`false` is not an integer, `"1"` not a bool) and unknown fields refused,
    so a client can never mass-assign a field the route does not offer."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
