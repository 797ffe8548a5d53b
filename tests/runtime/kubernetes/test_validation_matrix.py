"""Every object rendered for every shipped template, at each of its tiers and at running, throttled and stopped,
passes kubernetes-validate's strict schemas of Kubernetes 1.30 and of the newest version it bundles, and Pod
Security at the level its namespace enforces."""

from __future__ import annotations

import socket

import pytest

from jushostit.catalog.loader import load_templates
from jushostit.entitlement import Level
from jushostit.reconcile.manifests import SAMPLE_CLUSTER, sample_manifests
from jushostit.runtime.kubernetes import check
from jushostit.runtime.kubernetes.check import VERSIONS, schema_violations, violations

MATRIX = [
    (template, tier, level)
    for template in load_templates() for tier in template.tiers for level in (Level.running, Level.throttled, Level.stopped)
]


def test_the_matrix_covers_both_versions_and_every_shipped_template_tier_and_level() -> None:
    assert VERSIONS[0] == "1.30" and VERSIONS[1] > "1.30"
    assert {t.code for t, _, _ in MATRIX} == {"browserless", "chromium", "ghost", "n8n", "static-site", "wordpress"}
    assert len(MATRIX) == 3 * sum(len(t.tiers) for t in load_templates())


@pytest.mark.parametrize(("template", "tier", "level"), MATRIX,
                         ids=[f"{t.code}-{tier}-{level.name}" for t, tier, level in MATRIX])
def test_every_rendered_object_passes_the_strict_schemas_and_pod_security(template, tier, level) -> None:
    manifests = sample_manifests(template, tier, level, SAMPLE_CLUSTER)

    assert violations(manifests, VERSIONS) == []
    kinds = {m["kind"] for m in manifests}
    assert {"Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy", "ServiceAccount", "Deployment",
            "Service", "Secret"} <= kinds
    assert ("Ingress" in kinds) == (level != Level.stopped)
    assert ("StatefulSet" in kinds) == (template.database is not None)


def test_strict_validation_names_the_object_and_the_unknown_field() -> None:
    [template] = [t for t in load_templates() if t.code == "n8n"]
    deployment = next(m for m in sample_manifests(template, "small", Level.running, SAMPLE_CLUSTER)
                      if m["kind"] == "Deployment")
    deployment["spec"]["replicaz"] = 1
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = "yes"

    for version in VERSIONS:
        [problem] = schema_violations(deployment, version)
        assert problem.object == "Deployment/n8n-sample"
        assert problem.field in {"spec", "spec.template.spec.containers[0].securityContext.runAsNonRoot"}
        assert f"Kubernetes {version}" in problem.message


def test_validators_are_built_once_per_kind_and_version_from_the_bundled_files_without_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_network(*args: object) -> None:
        raise AssertionError("kubernetes-validate tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    check._validator.cache_clear()
    check._definitions.cache_clear()
    [template] = [t for t in load_templates() if t.code == "wordpress"]
    manifests = sample_manifests(template, "small", Level.running, SAMPLE_CLUSTER)

    assert violations(manifests) == []
    built = check._validator.cache_info()
    assert violations(manifests) == []  # again: every validator is found, none built

    kinds = {(m["kind"], m["apiVersion"]) for m in manifests}
    assert built.currsize == check._validator.cache_info().currsize == len(kinds) * len(VERSIONS)
    assert check._validator.cache_info().hits - built.hits == len(manifests) * len(VERSIONS)
    assert check._definitions.cache_info().currsize == len(VERSIONS)
