"""`clusters verify` against the stand-in, which runs the probe pods as a cluster would: through the
NetworkPolicies the verification applied (evaluated by the stand-in), or through nothing at all on a cluster that
does not enforce NetworkPolicy. The report says which checks passed, and says plainly when isolation is missing."""

from __future__ import annotations

from jushostit.clusters.kube import connect
from jushostit.clusters.kubeconfig import accept_kubeconfig
from jushostit.clusters.verify import NOT_ENFORCED, Report, verify_isolation
from jushostit.runtime.kubernetes.cluster import ClusterSettings
from jushostit.runtime.kubernetes.manifests import INTERNET_LABEL, network_policies
from tests.clusters.conftest import kubeconfig_for

K3S = ClusterSettings(base_domain="apps.example.net")  # K3s's ranges, ingress controller and DNS


def tenant_policies(namespace: str, labels: dict[str, str]) -> list[dict]:
    return network_policies(namespace, labels, K3S)


async def verify(kube_server, **options) -> Report:
    async with connect(accept_kubeconfig(kubeconfig_for(kube_server)), timeout=5) as api:
        return await verify_isolation(api, tenant_policies, (INTERNET_LABEL, "true"), poll_seconds=0,
                                      **{"timeout": 5.0, **options})


def results(report: Report) -> dict[str, bool | None]:
    return {outcome.name: outcome.passed for outcome in report.outcomes}


async def test_a_cluster_that_enforces_network_policy_passes_every_check(kube, kube_server) -> None:
    report = await verify(kube_server)

    assert results(report) == {"same-namespace": True, "cross-tenant": True, "metadata": True, "dns": True,
                               "egress": True}
    assert report.passed and not report.enforcement_missing
    assert report.lines()[-1] == "Isolation verified."
    # Two throwaway namespaces, labelled as ours and Pod Security restricted, each with exactly the policies a
    # tenant namespace is rendered with.
    assert len(kube.deleted_namespaces) == 2 and kube.namespaces == {}
    for namespace in kube.deleted_namespaces:
        assert namespace.startswith("jushostit-verify-")
        assert {policy["metadata"]["name"] for policy in kube.policies[namespace]} == {
            "default-deny", "allow-same-namespace", "allow-dns", "allow-from-ingress-controller", "allow-internet-egress"}
        rendered = {p["metadata"]["name"]: p["spec"] for p in tenant_policies(namespace, {})}
        assert {p["metadata"]["name"]: p["spec"] for p in kube.policies[namespace]} == rendered
    # Probes were polled until they finished (the stand-in answers Pending first).
    outcome = next(o for o in report.outcomes if o.name == "cross-tenant")
    assert "not reached" in outcome.detail and "timed out" in outcome.detail


async def test_the_probe_pods_are_what_pod_security_restricted_admits(kube, kube_server) -> None:
    await verify(kube_server)
    pods = {manifest["metadata"]["name"]: manifest for manifest in kube.pod_manifests}
    assert set(pods) == {"server", "same-namespace", "cross-tenant", "metadata", "dns", "egress"}
    for name, manifest in pods.items():
        spec = manifest["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        (container,) = spec["containers"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, name
        assert container["image"] == "busybox:1.37" and container["resources"]["limits"], name
        assert (spec["restartPolicy"] == "Never") == (name != "server"), name
    internet = {name for name, m in pods.items() if m["metadata"]["labels"].get("jushostit.io/internet") == "true"}
    assert internet == {"cross-tenant", "metadata", "egress"}  # the hard case: allowed out, still not to them


async def test_a_cluster_that_does_not_enforce_network_policy_is_reported_plainly(kube, kube_server) -> None:
    kube.enforces_network_policy = False
    report = await verify(kube_server)

    assert results(report) == {"same-namespace": True, "cross-tenant": False, "metadata": False, "dns": True,
                               "egress": True}
    assert not report.passed and report.enforcement_missing
    lines = report.lines()
    assert "[FAIL] Cross-tenant traffic is blocked: reached (ok)" in lines
    assert NOT_ENFORCED in lines and "ipset" in NOT_ENFORCED
    assert lines[-1] == "Isolation NOT verified."
    assert kube.namespaces == {}


async def test_a_probe_image_that_never_starts_is_inconclusive_and_still_cleaned_up(kube, kube_server) -> None:
    kube.images_pull = False
    report = await verify(kube_server, timeout=0.2)
    assert [o.passed for o in report.outcomes] == [None]
    assert "did not start" in report.outcomes[0].detail
    assert not report.passed and kube.namespaces == {} and len(kube.deleted_namespaces) == 2
