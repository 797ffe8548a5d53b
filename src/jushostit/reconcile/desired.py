"""Desired state as data: a pure function of entitlement, instances, templates and their stored secrets.

One instance that cannot be rendered (its template is missing or invalid) is desired as it is, with the
problem named: it is never started, it can still be stopped, its data is kept, and its siblings converge."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from jushostit.catalog.spec import TemplateSpec
from jushostit.entitlement import Entitlement, Level
from jushostit.runtime.protocol import AccountState, DesiredInstance

_PLACEHOLDER = re.compile(r"\{(url|host|slug|secret:[A-Za-z_][A-Za-z0-9_]*)\}")
TEMPLATE_UNAVAILABLE = "its service template is missing or invalid"


class DesiredStateError(ValueError):
    """An instance's environment cannot be rendered (a generated value is missing or unreadable)."""


@dataclass(frozen=True)
class InstanceInput:
    id: uuid.UUID
    slug: str
    name: str
    template_code: str
    url: str
    host: str


@dataclass(frozen=True)
class RenderedEnv:
    """Literal values with {url} {host} {slug} {secret:NAME} filled in; generated values decrypted from the
    stored ciphertexts, only when `values()` is called."""

    template: TemplateSpec
    instance: InstanceInput
    ciphertexts: Mapping[str, str]
    decrypt: Callable[[str], str] = field(compare=False)

    def values(self) -> tuple[tuple[str, str], ...]:
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

        def fill(match: re.Match[str]) -> str:
            key = match.group(1)
            if key.startswith("secret:"):
                return secret(key.removeprefix("secret:"))
            return {"url": self.instance.url, "host": self.instance.host, "slug": self.instance.slug}[key]

        return tuple(
            (var.name, secret(var.name) if var.generate is not None else _PLACEHOLDER.sub(fill, var.value or ""))
            for var in self.template.env
        )


@dataclass(frozen=True)
class NoEnv:
    """The environment of an instance whose template cannot be read: it is never started."""

    problem: str

    def values(self) -> tuple[tuple[str, str], ...]:
        raise DesiredStateError(self.problem)


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
) -> Desired:
    desired = []
    to_delete = []
    for instance in instances:
        level = entitled.instances[instance.id].level
        if level == Level.deleted:
            to_delete.append(instance.id)
        template = templates.get(instance.template_code)
        problem = None if template is not None else TEMPLATE_UNAVAILABLE
        env = (
            RenderedEnv(template, instance, ciphertexts.get(instance.id, {}), decrypt)
            if template is not None
            else NoEnv(f"the template {instance.template_code!r} of {instance.slug} is missing or invalid")
        )
        desired.append(
            DesiredInstance(
                id=instance.id,
                slug=instance.slug,
                name=instance.name,
                template_code=instance.template_code,
                run=level >= Level.throttled,
                throttled=level == Level.throttled,
                env=env,
                url=instance.url,
                template=template,
                problem=problem,
            )
        )
    return Desired(AccountState(account_id, tuple(desired)), tuple(to_delete))
