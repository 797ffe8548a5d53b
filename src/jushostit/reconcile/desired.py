"""Desired state as data: a pure function of entitlement, instances, templates and their stored secrets.

One instance that cannot be rendered (its template is missing or invalid) is desired as it is, with the
problem named: it is never started, it can still be stopped, its data is kept, and its siblings converge."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from jushostit.catalog.spec import EnvVar, SeatTemplateSpec, TemplateSpec
from jushostit.entitlement import Access, Entitlement, InstanceEntitlement, Level, Quotas
from jushostit.platforms.facts import SeatFacts, project_limit
from jushostit.runtime.protocol import AccountState, DesiredDatabase, DesiredInstance, DesiredSeat, EnvPairs

_PLACEHOLDER = re.compile(r"\{(url|host|slug|secret:[A-Za-z_][A-Za-z0-9_]*)\}")
TEMPLATE_UNAVAILABLE = "its service template is missing or invalid"
SEAT_HOLDER_LEFT = "its holder is no longer a member of the account"


class DesiredStateError(ValueError):
    """An instance's environment cannot be rendered (a generated value is missing or unreadable)."""


@dataclass(frozen=True)
class InstanceInput:
    id: uuid.UUID
    slug: str
    name: str
    template_code: str
    tier: str
    url: str
    host: str


def carries_a_secret(var: EnvVar) -> bool:
    """Generated values, literal values built from them and those the template marks secret go to the secret
    side (a Secret, never a workload's spec)."""
    return var.generate is not None or var.secret or "{secret:" in (var.value or "")


def _fill(value: str, instance: InstanceInput, secret: Callable[[str], str]) -> str:
    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key.startswith("secret:"):
            return secret(key.removeprefix("secret:"))
        return {"url": instance.url, "host": instance.host, "slug": instance.slug}[key]

    return _PLACEHOLDER.sub(one, value)


def _no_secret(name: str) -> str:
    raise AssertionError(f"a plain value names the generated value {name}")  # carries_a_secret sorts them


def plain_values(variables: Sequence[EnvVar], instance: InstanceInput) -> EnvPairs:
    """The values with no secret in them, {url} {host} {slug} filled in."""
    return tuple((var.name, _fill(var.value or "", instance, _no_secret))
                 for var in variables if not carries_a_secret(var))


@dataclass(frozen=True)
class RenderedEnv:
    """The values that carry a secret: generated ones decrypted from the stored ciphertexts, literal ones with
    their {secret:NAME} (and {url} {host} {slug}) filled in; only when `values()` is called."""

    variables: tuple[EnvVar, ...]
    instance: InstanceInput
    ciphertexts: Mapping[str, str]
    decrypt: Callable[[str], str] = field(compare=False)

    def names(self) -> tuple[str, ...]:
        return tuple(var.name for var in self.variables if carries_a_secret(var))

    def values(self) -> EnvPairs:
        plain: dict[str, str] = {}

        def secret(name: str) -> str:
            if name not in plain:
                if name not in self.ciphertexts:
                    raise DesiredStateError(f"the generated value {name} of {self.instance.slug} is missing")
                try:
                    plain[name] = self.decrypt(self.ciphertexts[name])
                except ValueError as error:
                    raise DesiredStateError(f"the generated value {name} of {self.instance.slug} is unreadable") from error
            return plain[name]

        return tuple(
            (var.name, secret(var.name) if var.generate is not None else _fill(var.value or "", self.instance, secret))
            for var in self.variables if carries_a_secret(var)
        )

    def fingerprint(self) -> str:
        """The secret variables' definitions, the instance's url, host and slug, and the stored ciphertexts: a key
        rotation re-encrypts them, which changes it once without changing the values."""
        made_of = [
            [[var.name, var.value, var.generate is not None] for var in self.variables if carries_a_secret(var)],
            [self.instance.url, self.instance.host, self.instance.slug],
            sorted(self.ciphertexts.items()),
        ]
        return hashlib.sha256(json.dumps(made_of).encode()).hexdigest()


@dataclass(frozen=True)
class NoEnv:
    """The environment of an instance whose template cannot be read: it is never started."""

    problem: str

    def names(self) -> tuple[str, ...]:
        return ()

    def values(self) -> EnvPairs:
        raise DesiredStateError(self.problem)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.problem.encode()).hexdigest()


def missing_generated(template: TemplateSpec, stored: set[str]) -> list[str]:
    """Generated variables the template declares that the instance has no stored value for (a template that
    gained one on upgrade): the reconciler generates them once."""
    return [var.name for var in template.env if var.generate is not None and var.name not in stored]


@dataclass(frozen=True)
class Desired:
    state: AccountState  # what the runtime applies (data of every instance kept)
    to_delete: tuple[uuid.UUID, ...]  # instances whose level is `deleted`: removed only after a fresh read


def build_desired(
    account_id: uuid.UUID,
    instances: list[InstanceInput],
    entitled: Entitlement,
    templates: Mapping[str, TemplateSpec],
    ciphertexts: Mapping[uuid.UUID, Mapping[str, str]],
    decrypt: Callable[[str], str],
    seat_templates: Mapping[str, SeatTemplateSpec] | None = None,
    seats: Mapping[uuid.UUID, SeatFacts] | None = None,
) -> Desired:
    desired = []
    desired_seats = []
    to_delete = []
    for instance in instances:
        level = entitled.instances[instance.id].level
        if level == Level.deleted:
            to_delete.append(instance.id)
        seat = (seats or {}).get(instance.id)
        if seat is not None:
            desired_seats.append(_desired_seat(instance, level, seat, (seat_templates or {}).get(instance.template_code)))
            continue
        template = templates.get(instance.template_code)
        stored = ciphertexts.get(instance.id, {})
        database = None
        if template is not None and template.database is not None:
            variables = tuple(template.database.env)
            database = DesiredDatabase(template.database, plain_values(variables, instance),
                                       RenderedEnv(variables, instance, stored, decrypt))
        desired.append(
            DesiredInstance(
                id=instance.id,
                slug=instance.slug,
                name=instance.name,
                template_code=instance.template_code,
                tier=instance.tier,
                run=level >= Level.throttled,
                throttled=level == Level.throttled,
                deleted=level == Level.deleted,
                plain_env=plain_values(template.env, instance) if template is not None else (),
                secret_env=(
                    RenderedEnv(tuple(template.env), instance, stored, decrypt)
                    if template is not None
                    else NoEnv(f"the template {instance.template_code!r} of {instance.slug} is missing or invalid")
                ),
                url=instance.url,
                host=instance.host,
                template=template,
                resources=template.tiers.get(instance.tier) if template is not None else None,
                database=database,
                problem=None if template is not None else TEMPLATE_UNAVAILABLE,
            )
        )
    state = AccountState(account_id, tuple(desired), tuple(desired_seats), quotas=entitled.quotas,
                         throttled=entitled.level == Level.throttled, deleted=entitled.level == Level.deleted)
    return Desired(state, tuple(to_delete))


def _desired_seat(instance: InstanceInput, level: Level, seat: SeatFacts,
                  template: SeatTemplateSpec | None) -> DesiredSeat:
    """A seat whose template is gone keeps the platform's limits; one whose holder left is kept deactivated."""
    problem = SEAT_HOLDER_LEFT if seat.role is None else None
    limits: dict[str, int] = {role: n for role, n in template.project_limits.items()} if template else {}
    return DesiredSeat(
        id=instance.id, slug=instance.slug, name=instance.name, platform_id=seat.platform_id, email=seat.email,
        max_projects=project_limit(seat.role or "member", limits, seat.platform_limits),
        run=level >= Level.throttled and problem is None, deleted=level == Level.deleted, problem=problem,
    )


SAMPLE_ACCOUNT = uuid.UUID(int=0)
SAMPLE_INSTANCE = uuid.UUID(int=1)
SAMPLE_SECRET = "generated-for-each-instance"


def sample_desired(template: TemplateSpec, tier: str, level: Level,
                   address: Callable[[str], tuple[str, str]]) -> AccountState:
    """A made-up account with one instance of `template` at `tier` and `level`, built like a real one: what the
    template looks like on a runtime before anyone orders it. Its generated values are a placeholder, and its
    quotas exactly what the instance takes."""
    slug = f"{template.code[:40].rstrip('-')}-sample"
    url, host = address(slug)
    instance = InstanceInput(SAMPLE_INSTANCE, slug, "sample", template.code, tier, url, host)
    entitled = Entitlement(level, (), Access.full, None, _taken_by(template, tier),
                           {SAMPLE_INSTANCE: InstanceEntitlement(level, ())})
    generated = {var.name: SAMPLE_SECRET for var in template.env if var.generate is not None}
    return build_desired(SAMPLE_ACCOUNT, [instance], entitled, {template.code: template},
                         {SAMPLE_INSTANCE: generated}, str).state


def _taken_by(template: TemplateSpec, tier: str) -> Quotas:
    """One instance's limits (its database's included), volumes and count."""
    resources = [template.tiers[tier], *([template.database.resources] if template.database else [])]
    storage = sum(v.size_gib for v in template.volumes) + (template.database.size_gib if template.database else 0)
    return Quotas(sum(r.cpu_limit_millicores for r in resources), sum(r.memory_limit_mib for r in resources),
                  storage, 1)
