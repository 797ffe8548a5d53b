"""Desired states as Kubernetes manifests, built from the same facts and the same `build_desired` as a pass: an
account's (`jushostit render --account`), a template's sample (`--template`), and the check a template passes
before admins can install it."""

from __future__ import annotations

import uuid
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.catalog.spec import TemplateSpec
from jushostit.config import Settings
from jushostit.entitlement import Level
from jushostit.kit.crypto import SecretBox
from jushostit.kit.db import utcnow
from jushostit.kit.errors import AppError
from jushostit.reconcile.desired import build_desired, sample_desired
from jushostit.reconcile.service import snapshots
from jushostit.runtime.kubernetes.check import Violation, violations
from jushostit.runtime.kubernetes.cluster import ClusterSettings
from jushostit.runtime.kubernetes.manifests import Manifest, render_account

SAMPLE_LEVELS = (Level.running, Level.throttled, Level.stopped)
# Any cluster renders the same kinds and fields; only its names and ranges differ.
SAMPLE_CLUSTER = ClusterSettings(base_domain="example.com")


async def account_manifests(session: AsyncSession, settings: Settings, box: SecretBox, account_id: uuid.UUID,
                            cluster: ClusterSettings, *, include_secrets: bool) -> list[Manifest] | None:
    """The account's objects as a pass would see them now, addressed on `cluster`; None when there is no such
    account. Generated values are decrypted only with `include_secrets`."""
    snap = (await snapshots(session, settings, [account_id], utcnow())).get(account_id)
    if snap is None:
        return None
    inputs = []
    for instance in snap.inputs:  # addressed on the cluster, not on this process's runtime
        url, host = cluster.instance_address(instance.slug)
        inputs.append(replace(instance, url=url, host=host))
    desired = build_desired(account_id, inputs, snap.entitled, snap.templates, snap.ciphertexts, box.decrypt)
    return render_account(desired.state, cluster, include_secrets=include_secrets)


def sample_manifests(template: TemplateSpec, tier: str, level: Level, cluster: ClusterSettings) -> list[Manifest]:
    return render_account(sample_desired(template, tier, level, cluster.instance_address), cluster)


class TemplateNotDeployable(AppError):
    status_code = 422
    code = "template_not_deployable"


def template_violations(template: TemplateSpec) -> list[Violation]:
    """What would keep the template off a cluster: every object of its sample, at each tier and level, against
    the names and labels the API accepts, its schemas and the Pod Security level the template asks for. Each
    problem once."""
    found: dict[Violation, None] = {}
    for tier in template.tiers:
        for level in SAMPLE_LEVELS:
            found.update(dict.fromkeys(violations(sample_manifests(template, tier, level, SAMPLE_CLUSTER))))
    return list(found)


def refuse_undeployable(template: TemplateSpec) -> None:
    """422 `template_not_deployable` naming the first object and field at fault (and how many there are)."""
    found = template_violations(template)
    if found:
        first = found[0]
        raise TemplateNotDeployable(
            f"The template's Kubernetes manifests are refused: {first}",
            details={"object": first.object, "field": first.field, "problem": first.message,
                     "problems": [str(v) for v in found]},
        )
