from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from jushostit.catalog.spec import PlatformName, ProjectLimit
from jushostit.kit.schemas import RequestModel, ResponseModel


class ProjectLimits(RequestModel):
    """The most projects a seat holder may create, by their role in the customer's account. Members work in
    the owner's projects, so they create none by default."""

    owner: ProjectLimit = 5
    admin: ProjectLimit = 5
    member: ProjectLimit = 0


class PlatformCreate(RequestModel):
    """A shared data platform to sell seats on. Its admin API key is tested, stored encrypted and never returned."""

    name: PlatformName
    kind: Literal["hopsworks"] = "hopsworks"
    base_url: str = Field(max_length=2048, description="Where its REST API answers, e.g. https://hopsworks.example.com")
    api_key: SecretStr = Field(min_length=1, max_length=1000, description="An admin API key of the platform")
    edition: Literal["community", "enterprise"] = "community"
    project_limits: ProjectLimits = ProjectLimits()
    cluster: PlatformName | None = Field(
        default=None, description="The registered cluster (by name) the platform runs its projects on: OpenCost's "
                                  "costs of the seat holders' project namespaces there are billed to the seats' "
                                  "accounts. Left out: the seats' usage is not metered.")

    oidc_provider: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="Enterprise edition only: the sign-in provider (a name in "
                                  "JUSHOSTIT_OIDC_PROVIDERS) the platform trusts too. A seat holder who signed in "
                                  "through it gets a remote OAuth user linked by their subject, with no password.")

    @model_validator(mode="after")
    def remote_users_need_enterprise(self) -> PlatformCreate:
        if self.oidc_provider is not None and self.edition != "enterprise":
            raise ValueError("oidc_provider needs the enterprise edition: community has no remote users")
        return self

    @field_validator("base_url")
    @classmethod
    def http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL, e.g. https://hopsworks.example.com")
        return value.rstrip("/")


class PlatformRead(ResponseModel):
    id: uuid.UUID
    name: str
    kind: str
    base_url: str
    edition: str
    project_limits: dict[str, int]
    cluster_id: uuid.UUID | None
    oidc_provider: str | None
    checked_at: datetime = Field(description="When its connection test last passed")
    created_at: datetime


class PlatformList(ResponseModel):
    items: list[PlatformRead]
