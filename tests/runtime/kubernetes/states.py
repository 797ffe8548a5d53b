"""Desired states for the manifest tests, built as a reconcile pass builds them (reconcile.desired.build_desired),
with ciphertexts that 'decrypt' to a recognisable value and a record of every decryption."""

from __future__ import annotations

import uuid
from typing import Any

from jushostit.catalog.loader import load_plans, load_templates
from jushostit.entitlement import Access, Entitlement, InstanceEntitlement, Level, Quotas
from jushostit.reconcile.desired import InstanceInput, build_desired
from jushostit.runtime.kubernetes.cluster import ClusterSettings
from jushostit.runtime.protocol import AccountState

TEMPLATES = {t.code: t for t in load_templates()}
STARTER = Quotas(**next(p for p in load_plans() if p.code == "starter").quotas.model_dump())
ACCOUNT = uuid.UUID("6f1c2a34-0000-4000-8000-00000000a11c")
CLUSTER = ClusterSettings(base_domain="apps.example.net")


class Decryptions:
    """A decrypt that turns ciphertext `cipher:<NAME>` into `plain:<NAME>` and remembers each call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, token: str) -> str:
        self.calls.append(token)
        return token.replace("cipher:", "plain:")


def instance(template: str, name: str, *, number: int, tier: str | None = None) -> InstanceInput:
    slug = f"{name}-{number:06x}"
    url, host = CLUSTER.instance_address(slug)
    return InstanceInput(uuid.UUID(int=number), slug, name, template, tier or TEMPLATES[template].default_tier,
                         url, host)


def state(*instances: InstanceInput, level: Level = Level.running, quotas: Quotas = STARTER,
          levels: dict[uuid.UUID, Level] | None = None, decrypt: Decryptions | None = None,
          templates: dict[str, Any] | None = None) -> AccountState:
    """The account at `level` (each instance too, unless `levels` says otherwise), every generated value stored."""
    known = TEMPLATES if templates is None else templates
    entitled = Entitlement(level, (), Access.full, None, quotas,
                           {i.id: InstanceEntitlement((levels or {}).get(i.id, level), ()) for i in instances})
    ciphertexts = {
        i.id: {v.name: f"cipher:{v.name}" for v in known[i.template_code].env if v.generate is not None}
        for i in instances if i.template_code in known
    }
    return build_desired(ACCOUNT, list(instances), entitled, known, ciphertexts, decrypt or Decryptions()).state


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found
