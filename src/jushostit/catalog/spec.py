"""The shape of plans and service templates (DESIGN §5), validated when loaded and when admins add them."""

from __future__ import annotations

import re
import secrets
import string
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from jushostit.kit import money
from jushostit.kit.schemas import INT32_MAX, MINOR_UNITS_MAX, MinorUnits, Note

Code = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$", max_length=63)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
# Documented as the currencies we know the exponent of; PlanCreate and PlanUpdate refuse the others.
Currency = Annotated[
    str, Field(pattern=r"^[A-Z]{3}$", max_length=3, json_schema_extra={"enum": sorted(money.EXPONENTS)})
]
StripePriceId = Annotated[str, Field(min_length=1, max_length=100)]
BillingModes = Annotated[list[Literal["card", "invoice", "prepaid", "free"]], Field(min_length=1, max_length=4)]
# Also the name of the stored secret a generated value is kept under (stored_secrets.name is 100 characters).
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)]
AbsolutePath = Annotated[str, Field(pattern=r"^/", max_length=1024)]
ImageReference = Annotated[str, Field(min_length=1, max_length=500)]  # registry/name:tag@digest
Uid = Annotated[int, Field(ge=1, le=INT32_MAX)]  # Pod Security "restricted" needs a numeric non-root uid
SizeGib = Annotated[int, Field(ge=1, le=10_000)]
CreditAmount = Annotated[int, Field(ge=0, le=MINOR_UNITS_MAX)]  # whole credits (BIGINT)


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- plans ------------------------------------------------------------------------------------------------


class PlanQuotas(Spec):
    cpu_millicores: int = Field(ge=0, le=INT32_MAX)
    memory_mib: int = Field(ge=0, le=INT32_MAX)
    storage_gib: int = Field(ge=0, le=INT32_MAX)
    max_instances: int = Field(ge=0, le=INT32_MAX)
    concurrent_sessions: int = Field(default=0, ge=0, le=10_000, description="Browser sessions open at once")
    session_max_minutes: int = Field(default=0, ge=0, le=1440, description="The longest one browser session lasts")


UsageDimension = Literal["core_hours", "gib_hours", "gb_transferred", "gb_month_stored", "session_minutes"]


def _exact_decimal(value: Any) -> Any:
    """A decimal string or an integer, read exactly, even inside the API's strict request models. A float is
    refused: it carries binary rounding into money."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ValueError("must be a decimal number, such as \"1.25\"") from None
    if isinstance(value, float):
        raise ValueError("must be a decimal string (\"1.25\") or an integer, not a binary float")  # noqa: TRY004 - pydantic reports ValueError, not TypeError
    return value


ExactDecimal = BeforeValidator(_exact_decimal)
# Written out in fixed point ("0.000000001", never "1E-9"), as the documented pattern says.
FixedPoint = PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json")
# Documented as JSON carries them: a decimal string, or an integer; the bounds are the Field's.
UsageAmount = Annotated[
    Decimal, ExactDecimal, FixedPoint, Field(ge=0, le=Decimal("1e12"), max_digits=22, decimal_places=9),
    WithJsonSchema({"anyOf": [
        {"type": "string", "pattern": r"^[0-9]{1,13}(\.[0-9]{1,9})?$", "maxLength": 23, "examples": ["1.25"]},
        {"type": "integer", "minimum": 0, "maximum": 10**12},
    ]}),
]
MarkupPercent = Annotated[
    Decimal, ExactDecimal, FixedPoint, Field(ge=0, le=1000, max_digits=7, decimal_places=3),
    WithJsonSchema({"anyOf": [
        {"type": "string", "pattern": r"^[0-9]{1,4}(\.[0-9]{1,3})?$", "maxLength": 8, "examples": ["25"]},
        {"type": "integer", "minimum": 0, "maximum": 1000},
    ]}),
]


class UsagePricing(Spec):
    """What usage costs on a plan, beyond what the plan includes: unit prices in minor units of the plan's
    currency (a Decimal: a core-hour may cost 1.25 cents), or OpenCost's cost of the account's namespace plus a
    markup. One or the other: both would charge the same usage twice."""

    included: dict[UsageDimension, UsageAmount] = Field(default_factory=dict, max_length=5)
    unit_price_minor: dict[UsageDimension, UsageAmount] = Field(default_factory=dict, max_length=5)
    opencost_markup_percent: MarkupPercent | None = None

    @model_validator(mode="after")
    def _one_way_of_pricing(self) -> UsagePricing:
        if self.unit_price_minor and self.opencost_markup_percent is not None:
            raise ValueError("price usage by unit prices or by an OpenCost markup, not both")
        return self


class PlanSpec(Spec):
    code: Code
    name: Name
    price_minor: MinorUnits
    currency: Currency
    interval: Literal["month", "year"] = "month"
    billing_modes: BillingModes
    quotas: PlanQuotas
    default_budget_minor: MinorUnits | None = None
    # Credits each paid period brings; at renewal they expire (reset) or what is left carries over, at most
    # `credits_rollover_cap` (null: no cap).
    included_credits: CreditAmount = 0
    credits_rollover: bool = False
    credits_rollover_cap: CreditAmount | None = None
    stripe_price_id: StripePriceId | None = None
    usage_pricing: UsagePricing | None = None


class CreditPackSpec(Spec):
    """Credits sold once (not a subscription): granted when the payment is confirmed, never before."""

    code: Code
    name: Name
    credits: Annotated[int, Field(ge=1, le=MINOR_UNITS_MAX)]
    price_minor: Annotated[int, Field(ge=1, le=MINOR_UNITS_MAX)]
    currency: Currency
    billing_modes: BillingModes


# --- service templates ------------------------------------------------------------------------------------


class Generated(Spec):
    """A value generated once per instance and stored encrypted."""

    length: int = Field(default=32, ge=8, le=256)
    alphabet: Literal["alnum", "hex", "urlsafe", "printable"] = "alnum"

    def new_value(self) -> str:
        alphabet = ALPHABETS[self.alphabet]
        return "".join(secrets.choice(alphabet) for _ in range(self.length))


ALPHABETS = {
    "alnum": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
    "urlsafe": string.ascii_letters + string.digits + "-_",
    "printable": string.ascii_letters + string.digits + "!#%+,-./:;<=>?@[]^_{|}~",
}


class EnvVar(Spec):
    name: EnvName
    # literal; may reference {url}, {host}, {slug}, {secret:NAME}
    value: Annotated[str, Field(max_length=4096)] | None = None
    generate: Generated | None = None
    secret: bool = False  # shown in credentials

    @model_validator(mode="after")
    def one_source(self) -> EnvVar:
        if (self.value is None) == (self.generate is None):
            raise ValueError("exactly one of value or generate is required")
        return self


class Volume(Spec):
    name: Code
    mount_path: AbsolutePath
    size_gib: SizeGib = 1


class HttpProbe(Spec):
    path: AbsolutePath
    host_header: bool = False  # sites that redirect to their canonical URL need the Host header


class Probe(Spec):
    http: HttpProbe | None = None
    tcp: bool = False
    initial_delay_seconds: int = Field(default=5, ge=0, le=3600)
    period_seconds: int = Field(default=10, ge=1, le=3600)

    @model_validator(mode="after")
    def one_kind(self) -> Probe:
        if (self.http is None) == (not self.tcp):
            raise ValueError("a probe is either http or tcp")
        return self


class Resources(Spec):
    cpu_request_millicores: int = Field(ge=1, le=INT32_MAX)
    cpu_limit_millicores: int = Field(ge=1, le=INT32_MAX)
    memory_request_mib: int = Field(ge=1, le=INT32_MAX)
    memory_limit_mib: int = Field(ge=1, le=INT32_MAX)

    @model_validator(mode="after")
    def requests_within_limits(self) -> Resources:
        if self.cpu_request_millicores > self.cpu_limit_millicores or self.memory_request_mib > self.memory_limit_mib:
            raise ValueError("requests must not exceed limits")
        return self


class DatabaseSpec(Spec):
    engine: Literal["mysql", "mariadb", "postgres"]
    image: ImageReference
    port: int = Field(ge=1, le=65535)
    uid: Uid
    data_path: AbsolutePath
    size_gib: SizeGib = 5
    env: list[EnvVar] = Field(default_factory=list, max_length=100)
    resources: Resources

    @model_validator(mode="after")
    def generates_nothing(self) -> DatabaseSpec:
        # Its credentials are the app's generated values ({secret:NAME}): only those are generated and stored.
        if any(var.generate is not None for var in self.env):
            raise ValueError("the database's env generates nothing: refer to the app's values with {secret:NAME}")
        return self


# Pod Security "baseline" allows adding these; "restricted" only NET_BIND_SERVICE (runtime.kubernetes checks).
Capability = Annotated[str, Field(pattern=r"^[A-Z][A-Z_]*$", max_length=64)]
SysctlName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.]*$", max_length=253)]


class KubernetesForm(Spec):
    """What the Kubernetes runtime needs beyond image, port, uid, volumes and probes. A template runs under Pod
    Security "restricted" unless it says why it cannot: its namespace then enforces "baseline"."""

    pod_security: Literal["restricted", "baseline"] = "restricted"
    pod_security_reason: Note | None = None  # why it cannot run restricted; recorded on the namespace
    add_capabilities: list[Capability] = Field(default_factory=list, max_length=20)
    sysctls: dict[SysctlName, Annotated[str, Field(max_length=100)]] = Field(default_factory=dict, max_length=20)
    shared_memory_mib: int | None = Field(default=None, ge=1, le=65_536)  # a memory-backed /dev/shm (browsers)

    @model_validator(mode="after")
    def baseline_says_why(self) -> KubernetesForm:
        if self.pod_security == "baseline" and not self.pod_security_reason:
            raise ValueError("pod_security baseline needs a pod_security_reason: why it cannot run restricted")
        return self


class ProcessForm(Spec):
    """How the local runtime runs it: a command with {python}, {port}, {data_dir} placeholders."""

    command: list[Annotated[str, Field(max_length=1000)]] = Field(min_length=1, max_length=100)
    health_path: AbsolutePath = "/"
    # relative path → content ({name}, {url})
    seed_files: dict[Annotated[str, Field(max_length=255)], Annotated[str, Field(max_length=65_536)]] = Field(
        default_factory=dict, max_length=50
    )

    @model_validator(mode="after")
    def known_placeholders(self) -> ProcessForm:
        for part in self.command:
            for placeholder in re.findall(r"\{([^}]*)\}", part):
                if placeholder not in {"python", "port", "data_dir", "host"}:
                    raise ValueError(f"unknown placeholder {{{placeholder}}} in command")
        return self


class PoolForm(Spec):
    """A pool of headless browsers sessions are taken from: how many wait warm, how many it runs at most, and
    when a session nobody uses is ended."""

    warm_size: int = Field(default=2, ge=0, le=50)
    max_browsers: int = Field(default=20, ge=1, le=500)  # warm and in use together
    idle_timeout_seconds: int = Field(default=120, ge=5, le=3600)  # no CDP traffic this long: ended as `idle`
    disconnect_grace_seconds: int = Field(default=30, ge=0, le=3600)  # no client connected this long: `idle`
    # `session`: a session costs one credit, whatever its length. `second`: one credit per second of session, no
    # minimum (the first at the start), taken as it runs; the customer gets an event when their credits are about
    # to run out, and the session is cut (`credits_exhausted`) when they have.
    billing: Literal["session", "second"] = "session"

    @model_validator(mode="after")
    def warm_within_max(self) -> PoolForm:
        if self.warm_size > self.max_browsers:
            raise ValueError("warm_size cannot exceed max_browsers")
        return self


class TemplateSpec(Spec):
    """A service that runs as a workload: an app, or a pool of browsers."""

    code: Code
    name: Name
    kind: Literal["app", "session_pool"]
    description: Note = ""
    image: ImageReference
    port: int = Field(ge=1, le=65535)
    uid: Uid
    env: list[EnvVar] = Field(default_factory=list, max_length=100)
    volumes: list[Volume] = Field(default_factory=list, max_length=20)
    readiness: Probe
    liveness: Probe
    tiers: dict[Code, Resources] = Field(min_length=1, max_length=20)
    default_tier: Code
    database: DatabaseSpec | None = None
    process: ProcessForm | None = None
    needs_internet_egress: bool = False
    kubernetes: KubernetesForm = KubernetesForm()
    pool: PoolForm | None = None  # a session pool's (required for one, refused for an app)

    @model_validator(mode="after")
    def consistent(self) -> TemplateSpec:
        if (self.kind == "session_pool") != (self.pool is not None):
            raise ValueError("a session_pool template has a pool form, and only one does")
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


# A platform's name in the registry (`POST /v1/admin/platforms`).
PlatformName = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length=63)]
ProjectLimit = Annotated[int, Field(ge=0, le=1000)]
SeatRole = Literal["owner", "admin", "member"]


class SeatTemplateSpec(Spec):
    """A seat on a shared data platform: one user of the customer's account gets an account on the platform,
    with a project limit by their role in the customer's account. Nothing runs on our runtime."""

    code: Code
    name: Name
    kind: Literal["seat"]
    description: Note = ""
    platform: PlatformName
    # Overrides the platform's limits per role (absent roles keep the platform's).
    project_limits: dict[SeatRole, ProjectLimit] = Field(default_factory=dict, max_length=3)


def parse_template(document: object) -> TemplateSpec | SeatTemplateSpec:
    """A stored or shipped template of any kind, read as the model its `kind` names, so an error names the field
    as the document spells it (pydantic's ValidationError when it is not one)."""
    seat = isinstance(document, dict) and document.get("kind") == "seat"
    return SeatTemplateSpec.model_validate(document) if seat else TemplateSpec.model_validate(document)
