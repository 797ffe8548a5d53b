"""Base classes for request and response models."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    Strict,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

T = TypeVar("T")


# JSON has no enum or datetime type: such fields parse from their string form (still validated), while
# str / int / bool stay strict.
# An enum (or other non-str type) that JSON carries as a string: lax for that field only, while the model stays
# strict. Written `FromJsonString[Role]`.
FromJsonString = Annotated[T, Strict(False)]


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE)


def _rfc3339_text(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.match(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2030-01-31T12:00:00Z")


# A date-time as JSON bodies and query strings carry it: RFC 3339 text with an offset. Lax parsing alone would
# also read a number, or "0.5", as a Unix timestamp, which the OpenAPI's `format: date-time` does not allow.
DateTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), Strict(False)]


_ISO_DURATION = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")


ISO_DURATION_MAX_LENGTH = 40


def _iso_duration_text(value: Any) -> Any:
    if isinstance(value, timedelta) or (
        isinstance(value, str) and len(value) <= ISO_DURATION_MAX_LENGTH and _ISO_DURATION.match(value)
    ):
        return value
    raise ValueError("must be an ISO 8601 duration, e.g. P7D or PT30S")


def iso_duration(value: timedelta) -> str:
    """ISO 8601 (RFC 3339) text in days and time only, e.g. `P601D`, `P7DT1H`, `PT30S`: never years or months,
    which have no fixed length (pydantic would write 601 days as `P1Y236D`, which RFC 3339 does not allow)."""
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    if seconds or value.microseconds:
        time += f"{seconds}.{value.microseconds:06d}".rstrip("0").rstrip(".") + "S"
    text = "P" + (f"{value.days}D" if value.days else "") + (f"T{time}" if time else "")
    return "PT0S" if text == "P" else text


# A duration as JSON bodies carry it, both ways: ISO 8601 text (`P7D`, `PT30S`). Lax parsing alone would also read
# a number as seconds, or "7 days".
IsoDuration = Annotated[
    timedelta,
    BeforeValidator(_iso_duration_text),
    Strict(False),
    PlainSerializer(iso_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "duration", "maxLength": ISO_DURATION_MAX_LENGTH,
                    "pattern": _ISO_DURATION.pattern, "examples": ["P7D", "PT30S"]}),
]


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


# A name people read (accounts, API keys): no control characters, which would break email headers and logs.
# A name shown to other people (an account, a key): no control characters (C0, C1), no bidirectional marks,
# embeddings, overrides or isolates (which can make "gnp.exe" read as "exe.png"), no zero-width characters and
# no line or paragraph separators (which can hide or fake text in a list or an e-mail).
DISPLAY_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]+$"
DisplayName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=DISPLAY_NAME_PATTERN)
]

# The longest address SMTP can deliver to (RFC 5321's 256-octet path less its angle brackets).
EMAIL_MAX_LENGTH = 254
EmailAddress = Annotated[EmailStr, Field(max_length=EMAIL_MAX_LENGTH)]

# Free text a person writes (a note, a description).
Note = Annotated[str, Field(max_length=1000)]

# Room for every token we issue (opaque ones are a prefix and 43 characters, access tokens about 360), so one
# of another kind presented here is refused as invalid (401), not as malformed.
OpaqueToken = Annotated[str, Field(min_length=1, max_length=512)]

# Integers that reach an INTEGER column, or Kubernetes' int32 fields, must fit 32 bits.
INT32_MAX = 2**31 - 1

# An amount in minor units (BIGINT columns): 10^15 is far above any real price or budget, and sums of many
# of them still fit BIGINT's 9.2 * 10^18.
MINOR_UNITS_MAX = 10**15
MinorUnits = Annotated[int, Field(ge=0, le=MINOR_UNITS_MAX)]


def not_nullable(*fields: str) -> Callable[[dict[str, Any]], None]:
    """`json_schema_extra` of a PATCH model whose `fields` may be left out (unchanged) but are refused as null:
    the OpenAPI must not offer null for them."""

    def document(schema: dict[str, Any]) -> None:
        for name in fields:
            prop = schema["properties"][name]
            options = [option for option in prop.pop("anyOf") if option.get("type") != "null"]
            prop.update(options[0] if len(options) == 1 else {"anyOf": options})

    return document


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
