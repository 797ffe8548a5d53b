"""What one pass changes on a cluster, decided purely: the account's rendered objects against the objects the
cluster holds with our labels (the driver lists only those: `app.kubernetes.io/managed-by: jushostit` and the
account's label, so an object without them is never seen, hence never touched).

Applied: a rendered object that is missing, whose digest annotation differs from the rendered object's (it changed
since we applied it), or a workload whose replicas were changed behind our back (a suspended instance scaled up
by hand runs again otherwise). A pass that changes nothing applies nothing. Secrets are compared by a fingerprint
of what their values are made of (`Env.fingerprint`), so a pass decrypts only the Secrets it writes.

Pruned (deleted), among the objects found:
- every object of an instance absent from the desired state (its deletion is recorded: its data already went
  through `remove_instance`);
- of an instance still in the desired state, never its data (PersistentVolumeClaims and Secrets go only through
  `remove_instance`, after the reconciler's fresh read of the facts); its other objects when it renders and they
  are not rendered any more (the Ingress of a stopped instance), or when it renders nothing and must not run (a
  template that cannot be read, an instance awaiting deletion): its workloads and route go, its data stays. One
  that renders nothing and may run is left as it is (the local runtime leaves its process alone too);
- an account-level object that is no longer rendered.

The namespace: an account with no instance in its desired state has none; it is deleted when found (everything in
it goes with it, our objects and any others).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jushostit.runtime.kubernetes.manifests import (
    ACCOUNT_LABEL,
    APP,
    APPLY_ORDER,
    COMPONENT_LABEL,
    DATABASE,
    INSTANCE_LABEL,
    MANAGED_BY,
    Manifest,
    instance_labels,
    rendered_instances,
)
from jushostit.runtime.protocol import AccountState, Env

DIGEST_ANNOTATION = "jushostit.io/applied-digest"
DATA_KINDS = frozenset({"PersistentVolumeClaim", "Secret"})
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet"})

SecretKey = tuple[str, str]  # (instance id, component): an instance's Secret, or its database's


def digest(manifest: Manifest) -> str:
    """The rendered object's digest (its canonical JSON's SHA-256), recorded on it when applied."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def stamped(manifest: Manifest, value: str) -> Manifest:
    """The object with its digest annotation (a copy: the rendered object stays as rendered)."""
    metadata = manifest["metadata"]
    return {**manifest, "metadata": {**metadata, "annotations": {**metadata.get("annotations", {}),
                                                                 DIGEST_ANNOTATION: value}}}


def secret_digest(labels: Mapping[str, str], env: Env) -> str:
    """A Secret's digest, from its labels and its values' fingerprint: nothing is decrypted."""
    return hashlib.sha256(json.dumps([sorted(labels.items()), env.fingerprint()]).encode()).hexdigest()


def wanted_secrets(state: AccountState) -> dict[SecretKey, str]:
    """Each Secret the account's rendered instances have, with its digest."""
    wanted = {}
    for instance in rendered_instances(state):
        labels = instance_labels(state.account_id, instance, APP)
        wanted[(str(instance.id), APP)] = secret_digest(labels, instance.secret_env)
        if instance.database is not None:
            labels = instance_labels(state.account_id, instance, DATABASE)
            wanted[(str(instance.id), DATABASE)] = secret_digest(labels, instance.database.secret_env)
    return wanted


@dataclass(frozen=True)
class Found:
    """An object the cluster holds, as much of it as the decision needs."""

    kind: str
    name: str
    labels: Mapping[str, str]
    digest: str | None
    replicas: int | None = None  # a workload's spec.replicas

    @classmethod
    def of(cls, kind: str, obj: Mapping[str, Any]) -> Found:
        metadata = obj.get("metadata") or {}
        replicas = (obj.get("spec") or {}).get("replicas") if kind in WORKLOAD_KINDS else None
        return cls(kind, metadata.get("name", ""), metadata.get("labels") or {},
                   (metadata.get("annotations") or {}).get(DIGEST_ANNOTATION), replicas)

    @property
    def instance(self) -> str | None:
        return self.labels.get(INSTANCE_LABEL)

    @property
    def secret_key(self) -> SecretKey | None:
        if self.kind != "Secret" or self.instance is None:
            return None
        return self.instance, self.labels.get(COMPONENT_LABEL, "")


@dataclass(frozen=True)
class Plan:
    apply: tuple[Manifest, ...]  # stamped with their digest, in apply order
    secrets: tuple[SecretKey, ...]  # Secrets to render (decrypting their values) and apply
    delete: tuple[Found, ...]  # in reverse apply order: the route before the workload before its data
    delete_namespace: bool


def plan_changes(state: AccountState, rendered: Sequence[Manifest], secrets: Mapping[SecretKey, str],
                 found: Sequence[Found]) -> Plan:
    """`rendered`: the account's objects without Secrets (`render_account(..., include_secrets=False)`);
    `secrets`: `wanted_secrets(state)`; `found`: what the cluster holds with the account's labels."""
    if not state.instances:
        return Plan((), (), (), any(f.kind == "Namespace" for f in found))
    held = {(f.kind, f.name): f for f in found}
    apply = []
    for manifest in rendered:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        value = digest(manifest)
        there = held.get((kind, name))
        if (there is None or there.digest != value
                or (kind in WORKLOAD_KINDS and there.replicas != manifest["spec"]["replicas"])):
            apply.append(stamped(manifest, value))
    secret_digests = {f.secret_key: f.digest for f in found if f.secret_key is not None}
    to_write = tuple(key for key, value in secrets.items() if secret_digests.get(key) != value)

    account = str(state.account_id)
    desired = {str(i.id): i for i in state.instances}
    rendering = {str(i.id) for i in rendered_instances(state)}
    kept = {(m["kind"], m["metadata"]["name"]) for m in rendered}

    def unwanted(f: Found) -> bool:
        if f.kind == "Namespace" or (f.kind, f.name) in kept:
            return False
        if f.labels.get(MANAGED_BY[0]) != MANAGED_BY[1] or f.labels.get(ACCOUNT_LABEL) != account:
            return False  # not ours: never touched (the driver does not list such objects; this says it twice)
        if f.instance is None:
            return True  # an account-level object no longer rendered
        if f.instance not in desired:
            return True
        if f.kind in DATA_KINDS:
            return False
        return f.instance in rendering or not desired[f.instance].run

    delete = sorted((f for f in found if unwanted(f)), key=lambda f: (-APPLY_ORDER.index(f.kind), f.name))
    return Plan(tuple(apply), to_write, tuple(delete), False)
