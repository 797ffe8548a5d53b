from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from jushostit.auth.scopes import Scope
from jushostit.kit.schemas import (
    EMAIL_MAX_LENGTH,
    DateTime,
    DisplayName,
    EmailAddress,
    FromJsonString,
    OpaqueToken,
    RequestModel,
    ResponseModel,
)
from jushostit.models import Role

Password = Annotated[str, Field(min_length=1, max_length=256)]
Name = DisplayName


# A HubSpot deal's record id (HubSpot's ids are numbers; nothing else may reach the CRM's URL).
CorporateRef = Annotated[str, StringConstraints(min_length=1, max_length=20, pattern=r"^[0-9]+$")]


class SignupRequest(RequestModel):
    email: EmailAddress
    password: Password
    account_name: Name
    corporate_ref: CorporateRef | None = Field(
        default=None, description="A won HubSpot deal's id: the account is prepaid by that contract until its end "
        "(one deal, one account)")


class LoginRequest(RequestModel):
    email: Annotated[str, Field(min_length=3, max_length=EMAIL_MAX_LENGTH)]
    password: Password


class RefreshRequest(RequestModel):
    refresh_token: OpaqueToken


class MagicLinkRequest(RequestModel):
    email: EmailAddress


class MagicLinkConsume(RequestModel):
    token: OpaqueToken


class Revoked(ResponseModel):
    """What a sign-in or reset took away from the user (also e-mailed to them)."""

    password: bool = Field(description="The old password no longer works (removed or replaced).")
    sessions: int = Field(description="Signed-in sessions that were signed out.")
    api_keys: int = Field(description="API keys that were revoked.")

    @property
    def anything(self) -> bool:
        return self.password or self.sessions > 0 or self.api_keys > 0

    def describe(self) -> str:
        parts = ["the old password no longer works"] if self.password else []
        parts += [f"{self.sessions} signed-in session(s) were signed out"] if self.sessions else []
        parts += [f"{self.api_keys} API key(s) were revoked"] if self.api_keys else []
        return ", ".join(parts) or "nothing was revoked"


class TokenPair(ResponseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int
    revoked: Revoked | None = Field(
        default=None, description="Set when this sign-in or reset revoked the user's earlier credentials."
    )


class SignupAccepted(ResponseModel):
    message: str


class VerifyEmailRequest(RequestModel):
    token: OpaqueToken


class PasswordResetRequest(RequestModel):
    email: EmailAddress


class PasswordResetConfirm(RequestModel):
    token: OpaqueToken
    password: Password


class UserRead(ResponseModel):
    id: uuid.UUID
    email: str
    email_verified: bool
    is_platform_admin: bool
    created_at: datetime


class MembershipRead(ResponseModel):
    account_id: uuid.UUID
    account_name: str
    role: Role


class MeRead(ResponseModel):
    user: UserRead
    memberships: list[MembershipRead]


class ApiKeyCreate(RequestModel):
    name: Annotated[Name, StringConstraints(max_length=100)]  # the api_keys.name column
    scopes: Annotated[list[FromJsonString[Scope]], Field(min_length=1, max_length=len(Scope))]
    # Aware only: a naive time has no meaning to compare with now (and would fail as a 500).
    expires_at: DateTime | None = None


class ApiKeyRead(ResponseModel):
    id: uuid.UUID
    name: str
    display_prefix: str
    scopes: list[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret key. Shown once; only its hash is stored.")


class ApiKeyPage(ResponseModel):
    items: list[ApiKeyRead]
    next_cursor: str | None
