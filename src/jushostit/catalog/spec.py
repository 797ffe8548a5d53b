"""The shape of plans and service templates (DESIGN §5), validated when loaded and when admins add them."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Code = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- plans ------------------------------------------------------------------------------------------------


class PlanQuotas(Spec):
    cpu_millicores: int = Field(ge=0)
    memory_mib: int = Field(ge=0)
    storage_gib: int = Field(ge=0)
    max_instances: int = Field(ge=0)


class PlanSpec(Spec):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    price_minor: int = Field(ge=0)
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    interval: Literal["month", "year"] = "month"
    billing_modes: list[Literal["card", "invoice", "prepaid", "free"]] = Field(min_length=1)
    quotas: PlanQuotas
    default_budget_minor: int | None = Field(default=None, ge=0)
    stripe_price_id: str | None = None


# --- service templates ------------------------------------------------------------------------------------


class Generated(Spec):
    """A value generated once per instance and stored encrypted."""

    length: int = Field(default=32, ge=8, le=256)
    alphabet: Literal["alnum", "hex", "urlsafe", "printable"] = "alnum"


class EnvVar(Spec):
    name: EnvName
    value: str | None = None  # literal; may reference {url}, {host}, {slug}, {secret:NAME}
    generate: Generated | None = None
    secret: bool = False  # shown in credentials

    @model_validator(mode="after")
    def one_source(self) -> EnvVar:
        if (self.value is None) == (self.generate is None):
            raise ValueError("exactly one of value or generate is required")
        return self


class Volume(Spec):
    name: Code
    mount_path: Annotated[str, Field(pattern=r"^/")]
    size_gib: int = Field(default=1, ge=1, le=10_000)


class HttpProbe(Spec):
    path: Annotated[str, Field(pattern=r"^/")]
    host_header: bool = False  # sites that redirect to their canonical URL need the Host header


class Probe(Spec):
    http: HttpProbe | None = None
    tcp: bool = False
    initial_delay_seconds: int = Field(default=5, ge=0)
    period_seconds: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def one_kind(self) -> Probe:
        if (self.http is None) == (not self.tcp):
            raise ValueError("a probe is either http or tcp")
        return self


class Resources(Spec):
    cpu_request_millicores: int = Field(ge=1)
    cpu_limit_millicores: int = Field(ge=1)
    memory_request_mib: int = Field(ge=1)
    memory_limit_mib: int = Field(ge=1)

    @model_validator(mode="after")
    def requests_within_limits(self) -> Resources:
        if self.cpu_request_millicores > self.cpu_limit_millicores or self.memory_request_mib > self.memory_limit_mib:
            raise ValueError("requests must not exceed limits")
        return self


class DatabaseSpec(Spec):
    engine: Literal["mysql", "mariadb", "postgres"]
    image: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    uid: int = Field(ge=1)
    data_path: Annotated[str, Field(pattern=r"^/")]
    size_gib: int = Field(default=5, ge=1)
    env: list[EnvVar] = Field(default_factory=list)
    resources: Resources


class ProcessForm(Spec):
    """How the local runtime runs it: a command with {python}, {port}, {data_dir} placeholders."""

    command: list[str] = Field(min_length=1)
    health_path: Annotated[str, Field(pattern=r"^/")] = "/"
    seed_files: dict[str, str] = Field(default_factory=dict)  # relative path → content ({name}, {url})

    @model_validator(mode="after")
    def known_placeholders(self) -> ProcessForm:
        for part in self.command:
            for placeholder in re.findall(r"\{([^}]*)\}", part):
                if placeholder not in {"python", "port", "data_dir", "host"}:
                    raise ValueError(f"unknown placeholder {{{placeholder}}} in command")
        return self


class TemplateSpec(Spec):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["app", "session_pool", "seat"]
    description: str = ""
    image: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    uid: int = Field(ge=1)  # Pod Security "restricted" needs a numeric non-root uid
    env: list[EnvVar] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    readiness: Probe
    liveness: Probe
    tiers: dict[Code, Resources] = Field(min_length=1)
    default_tier: Code
    database: DatabaseSpec | None = None
    process: ProcessForm | None = None
    needs_internet_egress: bool = False

    @model_validator(mode="after")
    def consistent(self) -> TemplateSpec:
        if self.default_tier not in self.tiers:
            raise ValueError(f"default_tier {self.default_tier!r} is not one of the tiers")
        names = [e.name for e in self.env]
        if len(names) != len(set(names)):
            raise ValueError("env names must be unique")
        generated = {e.name for e in self.env if e.generate is not None}
        for var in [*self.env, *(self.database.env if self.database else [])]:
            for name in re.findall(r"\{secret:([^}]*)\}", var.value or ""):
                if name not in generated:
                    raise ValueError(f"env {var.name} refers to {{secret:{name}}}, which no env entry generates")
        return self
