"""Keyset pagination: `?limit=&cursor=`, responses `{items, next_cursor}`."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel

from jushostit.kit.errors import BadRequest

T = TypeVar("T")


class PageParams(BaseModel):
    limit: int
    after: str | None

    def after_uuid(self) -> uuid.UUID | None:
        if self.after is None:
            return None
        try:
            return uuid.UUID(self.after)
        except ValueError as error:
            raise BadRequest("Invalid cursor", code="invalid_cursor") from error

    def after_int(self) -> int | None:
        if self.after is None:
            return None
        try:
            return int(self.after)
        except ValueError as error:
            raise BadRequest("Invalid cursor", code="invalid_cursor") from error


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise BadRequest("Invalid cursor", code="invalid_cursor") from error


def page_params(
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> PageParams:
    return PageParams(limit=limit, after=decode_cursor(cursor) if cursor else None)


# A route's `?limit=&cursor=`.
Paging = Annotated[PageParams, Depends(page_params)]


def split_page(rows: list[T], params: PageParams, key: str) -> tuple[list[T], str | None]:
    """`rows` were fetched with limit+1; return the page and the cursor after it (`key` names its attribute)."""
    more = len(rows) > params.limit
    rows = rows[: params.limit]
    return rows, (encode_cursor(str(getattr(rows[-1], key))) if more and rows else None)
