"""Desired state as data: a pure function of entitlement, instances, templates and their stored secrets."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from jushostit.catalog.spec import TemplateSpec
from jushostit.entitlement import Entitlement, Level
from jushostit.runtime.protocol import AccountState, DesiredInstance

_PLACEHOLDER = re.compile(r"\{(url|host|slug|secret:[A-Za-z_][A-Za-z0-9_]*)\}")


class DesiredStateError(ValueError):
    """The facts cannot be turned into desired state (a missing template or generated value)."""


@dataclass(frozen=True)
class InstanceInput:
    id: uuid.UUID
    slug: str
    name: str
    template_code: str
    url: str
    host: str


def render_env(template: TemplateSpec, instance: InstanceInput, secrets: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Literal values with {url} {host} {slug} {secret:NAME} filled in; generated values from `secrets`."""

    def secret(name: str) -> str:
        if name not in secrets:
            raise DesiredStateError(f"the generated value {name} of {instance.slug} is missing")
        return secrets[name]

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key.startswith("secret:"):
            return secret(key.removeprefix("secret:"))
        return {"url": instance.url, "host": instance.host, "slug": instance.slug}[key]

    env = []
    for var in template.env:
        value = secret(var.name) if var.generate is not None else _PLACEHOLDER.sub(fill, var.value or "")
        env.append((var.name, value))
    return tuple(env)


def build_desired(
    account_id: uuid.UUID,
    instances: list[InstanceInput],
    entitled: Entitlement,
    templates: dict[str, TemplateSpec],
    secrets: dict[uuid.UUID, dict[str, str]],
) -> AccountState:
    """Every instance whose level is not `deleted`, running or not; deleted ones are left out (and so removed)."""
    desired = []
    for instance in instances:
        level = entitled.instances[instance.id].level
        if level == Level.deleted:
            continue
        template = templates.get(instance.template_code)
        if template is None:
            raise DesiredStateError(f"the template {instance.template_code!r} of {instance.slug} is missing or invalid")
        desired.append(
            DesiredInstance(
                id=instance.id,
                slug=instance.slug,
                name=instance.name,
                template_code=instance.template_code,
                run=level >= Level.throttled,
                throttled=level == Level.throttled,
                env=render_env(template, instance, secrets.get(instance.id, {})),
                url=instance.url,
                template=template,
            )
        )
    return AccountState(account_id, tuple(desired))
