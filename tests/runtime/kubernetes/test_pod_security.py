"""Pod Security, checked on every pod template before it reaches a cluster (admission would refuse the pods, not
the Deployment): each rule of "restricted" names the field that breaks it, and a template that says why it
cannot run restricted gets a "baseline" namespace, whose own rules still hold."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from jushostit.catalog.spec import KubernetesForm, TemplateSpec
from jushostit.entitlement import Level
from jushostit.reconcile.manifests import SAMPLE_CLUSTER, sample_manifests, template_violations
from jushostit.runtime.kubernetes.check import pod_security_violations, violations
from jushostit.runtime.kubernetes.manifests import POD_SECURITY_REASON, render_account
from tests.runtime.kubernetes.states import CLUSTER, TEMPLATES, instance, named, of_kind, state

Pod = dict[str, Any]
CONTAINER = "spec.template.spec.containers[0]"


def site_manifests() -> list[dict[str, Any]]:
    return sample_manifests(TEMPLATES["static-site"], "small", Level.running, SAMPLE_CLUSTER)


def with_pod(edit: Callable[[Pod], object]) -> list[dict[str, Any]]:
    """static-site's sample with its Deployment's pod spec edited."""
    manifests = copy.deepcopy(site_manifests())
    edit(next(m for m in manifests if m["kind"] == "Deployment")["spec"]["template"]["spec"])
    return manifests


def container(pod: Pod) -> Pod:
    return pod["containers"][0]


BREAKING = [
    (lambda p: p.update(hostNetwork=True), "spec.template.spec.hostNetwork"),
    (lambda p: p.update(hostPID=True), "spec.template.spec.hostPID"),
    (lambda p: p.update(hostIPC=True), "spec.template.spec.hostIPC"),
    (lambda p: p["volumes"].append({"name": "root", "hostPath": {"path": "/"}}), "spec.template.spec.volumes[1].hostPath"),
    (lambda p: container(p)["ports"][0].update(hostPort=8080), f"{CONTAINER}.ports[0].hostPort"),
    (lambda p: container(p)["securityContext"].update(privileged=True), f"{CONTAINER}.securityContext.privileged"),
    (lambda p: container(p)["securityContext"].update(allowPrivilegeEscalation=True),
     f"{CONTAINER}.securityContext.allowPrivilegeEscalation"),
    (lambda p: container(p)["securityContext"].pop("allowPrivilegeEscalation"),
     f"{CONTAINER}.securityContext.allowPrivilegeEscalation"),
    (lambda p: container(p)["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
     f"{CONTAINER}.securityContext.capabilities.drop"),
    (lambda p: container(p)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
     f"{CONTAINER}.securityContext.capabilities.add"),
    (lambda p: container(p)["securityContext"]["capabilities"].update(add=["CHOWN"]),
     f"{CONTAINER}.securityContext.capabilities.add"),
    (lambda p: container(p)["securityContext"].update(runAsNonRoot=False), f"{CONTAINER}.securityContext.runAsNonRoot"),
    (lambda p: (p["securityContext"].pop("runAsNonRoot"), container(p)["securityContext"].pop("runAsNonRoot")),
     f"{CONTAINER}.securityContext.runAsNonRoot"),
    (lambda p: p["securityContext"].update(runAsUser=0), "spec.template.spec.securityContext.runAsUser"),
    (lambda p: container(p)["securityContext"].update(runAsUser=0), f"{CONTAINER}.securityContext.runAsUser"),
    (lambda p: p["securityContext"].pop("seccompProfile"), f"{CONTAINER}.securityContext.seccompProfile.type"),
    (lambda p: p["securityContext"].update(seccompProfile={"type": "Unconfined"}),
     "spec.template.spec.securityContext.seccompProfile.type"),
    (lambda p: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
     "spec.template.spec.securityContext.sysctls[0].name"),
    (lambda p: p["volumes"].append({"name": "disk", "gcePersistentDisk": {"pdName": "x"}}),
     "spec.template.spec.volumes[1]"),
    (lambda p: container(p)["securityContext"].update(procMount="Unmasked"), f"{CONTAINER}.securityContext.procMount"),
]


def test_the_shipped_sample_passes_as_rendered() -> None:
    assert pod_security_violations(site_manifests()) == []


@pytest.mark.parametrize(("edit", "field"), BREAKING, ids=[field.rsplit(".", 1)[-1] + f"-{i}"
                                                          for i, (_, field) in enumerate(BREAKING)])
def test_a_pod_template_breaking_restricted_is_refused_naming_the_object_and_field(
    edit: Callable[[Pod], object], field: str
) -> None:
    found = pod_security_violations(with_pod(edit))

    assert found, field
    assert {v.object for v in found} == {"Deployment/static-site-sample"}
    assert field in {v.field for v in found}, [str(v) for v in found]


def baseline_template(**kubernetes: Any) -> TemplateSpec:
    """static-site as an operator's template that adds a capability restricted does not allow."""
    document = TEMPLATES["static-site"].model_dump(mode="json", exclude_none=True)
    document.pop("process")
    return TemplateSpec.model_validate({**document, "code": "chowner",
                                        "kubernetes": {"add_capabilities": ["CHOWN"], **kubernetes}})


def test_a_template_that_needs_more_than_restricted_is_refused_unless_it_says_why() -> None:
    found = template_violations(baseline_template())
    assert [(v.object, v.field) for v in found] == [
        ("Deployment/chowner-sample", f"{CONTAINER}.securityContext.capabilities.add")]
    assert "CHOWN" in found[0].message

    with pytest.raises(ValidationError, match="pod_security_reason"):
        KubernetesForm(pod_security="baseline")


def test_the_baseline_escape_hatch_namespace_says_why_and_baseline_still_holds() -> None:
    reason = "its entrypoint chowns the data directory before it starts"
    template = baseline_template(pod_security="baseline", pod_security_reason=reason)
    assert template_violations(template) == []

    site = instance("static-site", "site", number=3)
    chowner = instance("chowner", "owner", number=4, tier="small")
    manifests = render_account(state(site, chowner, templates={**TEMPLATES, "chowner": template}), CLUSTER)
    [namespace] = of_kind(manifests, "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert namespace["metadata"]["annotations"] == {POD_SECURITY_REASON: f"chowner: {reason}"}
    assert violations(manifests) == []
    # Everything else in that namespace is still rendered to restricted.
    site_pod = named(manifests, "Deployment", site.slug)["spec"]["template"]["spec"]
    assert site_pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}

    beyond = baseline_template(pod_security="baseline", pod_security_reason=reason, add_capabilities=["SYS_ADMIN"])
    [problem] = template_violations(beyond)
    assert problem.field == f"{CONTAINER}.securityContext.capabilities.add" and "SYS_ADMIN" in problem.message


def test_restricted_allows_net_bind_service_and_the_safe_sysctls() -> None:
    template = baseline_template(add_capabilities=["NET_BIND_SERVICE"],
                                 sysctls={"net.ipv4.ip_unprivileged_port_start": "0"})
    assert template_violations(template) == []
    template = baseline_template(add_capabilities=[], sysctls={"kernel.msgmax": "65536"})
    [problem] = template_violations(template)
    assert problem.field == "spec.template.spec.securityContext.sysctls[0].name"
