"""Email addresses are stored normalised, so one person cannot hold two users by changing case."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from jushostit.kit.errors import BadRequest


def normalize_email(email: str) -> str:
    """Lower-cased, IDNA-normalised address; BadRequest for something that is not an address."""
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as error:
        raise BadRequest(str(error), code="invalid_email") from error
