"""What an account's desired state renders to on a cluster (runtime.kubernetes.manifests): its fences (quota,
limits, network policies, a service account without a token), each instance's objects at its level, the labels
that map every object back, and secrets kept apart from the spec."""

from __future__ import annotations

import base64
import ipaddress
import json
import re

import pytest

from jushostit.entitlement import Level, Quotas
from jushostit.runtime.kubernetes.check import metadata_violations
from jushostit.runtime.kubernetes.cluster import ClusterSettings
from jushostit.runtime.kubernetes.manifests import (
    ACCOUNT_LABEL,
    APPLY_ORDER,
    INSTANCE_LABEL,
    TEMPLATE_LABEL,
    namespace_name,
    object_name,
    render_account,
)
from tests.runtime.kubernetes.states import (
    ACCOUNT,
    CLUSTER,
    STARTER,
    TEMPLATES,
    Decryptions,
    instance,
    named,
    of_kind,
    state,
)

FLOWS = instance("n8n", "flows", number=1)
BLOG = instance("wordpress", "blog", number=2)
SITE = instance("static-site", "site", number=3)
NAMESPACE = namespace_name(ACCOUNT)


def test_the_namespace_is_the_account_s_and_enforces_pod_security_restricted() -> None:
    [namespace] = of_kind(render_account(state(FLOWS), CLUSTER), "Namespace")

    assert namespace["metadata"]["name"] == NAMESPACE == f"jushostit-{ACCOUNT}"
    labels = namespace["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "jushostit" and labels[ACCOUNT_LABEL] == str(ACCOUNT)
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "v1.30"
    assert "annotations" not in namespace["metadata"]


def test_every_object_carries_the_labels_that_map_it_to_its_account_instance_and_template() -> None:
    manifests = render_account(state(FLOWS, BLOG, SITE), CLUSTER)
    by_instance = {str(i.id): i.template_code for i in (FLOWS, BLOG, SITE)}

    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "jushostit", manifest["metadata"]["name"]
        assert labels[ACCOUNT_LABEL] == str(ACCOUNT), manifest["metadata"]["name"]
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == NAMESPACE
        if INSTANCE_LABEL in labels:
            assert labels[TEMPLATE_LABEL] == by_instance[labels[INSTANCE_LABEL]]
            assert labels["jushostit.io/tier"] == "small"
        else:  # the account's own fences
            assert manifest["kind"] in {"Namespace", "ServiceAccount", "ResourceQuota", "LimitRange", "NetworkPolicy"}
        pod = manifest.get("spec", {}).get("template", {}).get("metadata", {}).get("labels")
        if pod is not None:  # pods are metered by the same labels
            assert {k: v for k, v in pod.items() if k != "jushostit.io/internet"} == labels
    instance_kinds = {(m["metadata"]["labels"][INSTANCE_LABEL], m["kind"]) for m in manifests
                      if INSTANCE_LABEL in m["metadata"]["labels"]}
    assert {kind for owner, kind in instance_kinds if owner == str(FLOWS.id)} == {
        "Secret", "PersistentVolumeClaim", "Service", "Deployment", "Ingress", "StatefulSet"}
    assert {kind for owner, kind in instance_kinds if owner == str(SITE.id)} == {
        "Secret", "PersistentVolumeClaim", "Service", "Deployment", "Ingress"}


def test_the_quota_is_the_plan_s_and_nothing_more_starts_without_one() -> None:
    [quota] = of_kind(render_account(state(FLOWS, quotas=STARTER), CLUSTER), "ResourceQuota")
    assert quota["spec"]["hard"] == {
        "limits.cpu": f"{STARTER.cpu_millicores}m", "limits.memory": f"{STARTER.memory_mib}Mi",
        "pods": str(2 * STARTER.max_instances), "requests.storage": f"{STARTER.storage_gib}Gi",
    }
    [none] = of_kind(render_account(state(FLOWS, level=Level.stopped, quotas=Quotas()), CLUSTER), "ResourceQuota")
    assert none["spec"]["hard"] == {"limits.cpu": "0m", "limits.memory": "0Mi", "pods": "0", "requests.storage": "0Gi"}


def test_network_policies_deny_all_then_allow_dns_the_ingress_controller_the_namespace_and_the_internet_only(
) -> None:
    cluster = ClusterSettings(base_domain="apps.example.net", ingress_namespace="traefik-system",
                              pod_cidr="100.64.0.0/16", service_cidr="100.65.0.0/16")
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(render_account(state(FLOWS), cluster), "NetworkPolicy")}

    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    [dns] = policies["allow-dns"]["egress"]
    assert policies["allow-dns"]["podSelector"] == {} and policies["allow-dns"]["policyTypes"] == ["Egress"]
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}

    ingress = policies["allow-from-ingress-controller"]
    assert ingress["ingress"] == [
        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik-system"}}}]}]
    assert ingress["podSelector"] == {"matchLabels": {"app.kubernetes.io/component": "app"}}  # never a database

    inside = policies["allow-same-namespace"]
    assert inside["ingress"] == [{"from": [{"podSelector": {}}]}] and inside["egress"] == [{"to": [{"podSelector": {}}]}]

    internet = policies["allow-internet-egress"]
    assert internet["podSelector"] == {"matchLabels": {"jushostit.io/internet": "true"}}
    [rule] = internet["egress"]
    [block] = [peer["ipBlock"] for peer in rule["to"]]
    assert block["cidr"] == "0.0.0.0/0"
    excepted = [ipaddress.ip_network(cidr) for cidr in block["except"]]

    def refused(address: str) -> bool:
        return any(ipaddress.ip_address(address) in network for network in excepted)

    assert refused("169.254.169.254") and refused("100.64.3.7") and refused("100.65.0.10")  # metadata, pods, services
    assert refused("10.0.0.5") and refused("192.168.1.1") and refused("172.16.0.1")  # nodes' private addresses
    assert not refused("1.1.1.1") and not refused("100.66.0.1")
    assert {"100.64.0.0/16", "100.65.0.0/16", "169.254.169.254/32"} <= set(block["except"])


def test_only_the_pods_of_templates_that_need_the_internet_may_reach_it() -> None:
    manifests = render_account(state(FLOWS, SITE), CLUSTER)

    def pod_labels(kind: str, name: str) -> dict[str, str]:
        return named(manifests, kind, name)["spec"]["template"]["metadata"]["labels"]

    assert TEMPLATES["n8n"].needs_internet_egress and not TEMPLATES["static-site"].needs_internet_egress
    assert pod_labels("Deployment", FLOWS.slug).get("jushostit.io/internet") == "true"
    assert "jushostit.io/internet" not in pod_labels("Deployment", SITE.slug)
    assert "jushostit.io/internet" not in pod_labels("StatefulSet", f"{FLOWS.slug}-db")  # databases never


def test_the_service_account_mounts_no_token_and_every_pod_runs_as_it() -> None:
    manifests = render_account(state(FLOWS), CLUSTER)
    [account] = of_kind(manifests, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    for workload in of_kind(manifests, "Deployment") + of_kind(manifests, "StatefulSet"):
        pod = workload["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False


def test_an_instance_runs_with_its_tier_s_resources_probes_volumes_and_public_host() -> None:
    large = instance("n8n", "flows", number=9, tier="large")
    manifests = render_account(state(large), CLUSTER)
    deployment = named(manifests, "Deployment", large.slug)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    tier = TEMPLATES["n8n"].tiers["large"]

    assert container["resources"] == {
        "limits": {"cpu": f"{tier.cpu_limit_millicores}m", "memory": f"{tier.memory_limit_mib}Mi"},
        "requests": {"cpu": f"{tier.cpu_request_millicores}m", "memory": f"{tier.memory_request_mib}Mi"},
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz/readiness", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["volumeMounts"] == [{"mountPath": "/home/node/.n8n", "name": "data"}]
    claim = named(manifests, "PersistentVolumeClaim", f"{large.slug}-data-data")
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert deployment["spec"]["template"]["spec"]["volumes"] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}

    ingress = named(manifests, "Ingress", large.slug)
    host = f"{large.slug}.apps.example.net"
    assert ingress["spec"]["ingressClassName"] == "traefik"
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    assert ingress["spec"]["tls"] == [{"hosts": [host], "secretName": f"{large.slug}-tls"}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == host
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": large.slug, "port": {"name": "http"}}}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["N8N_HOST"] == host and env["N8N_WEBHOOK_URL"] == f"https://{host}/"


def test_a_cluster_without_an_issuer_serves_plain_http_without_a_tls_section() -> None:
    cluster = ClusterSettings(base_domain="apps.example.net", cert_issuer=None, ingress_class="nginx")
    ingress = named(render_account(state(SITE), cluster), "Ingress", SITE.slug)
    assert "tls" not in ingress["spec"] and "annotations" not in ingress["metadata"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert cluster.instance_address(SITE.slug) == (f"http://{SITE.slug}.apps.example.net/", f"{SITE.slug}.apps.example.net")


def test_the_database_is_its_own_statefulset_service_secret_and_claim_at_the_host_the_app_names() -> None:
    decrypt = Decryptions()
    manifests = render_account(state(BLOG, decrypt=decrypt), CLUSTER)
    database = named(manifests, "StatefulSet", f"{BLOG.slug}-db")
    service = named(manifests, "Service", f"{BLOG.slug}-db")
    app = named(manifests, "Deployment", BLOG.slug)["spec"]["template"]["spec"]["containers"][0]

    assert database["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["ports"][0]["port"] == 3306
    assert {e["name"]: e.get("value") for e in app["env"]}["WORDPRESS_DB_HOST"] == service["metadata"]["name"]
    [container] = database["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "mariadb:11"
    assert container["volumeMounts"] == [{"mountPath": "/var/lib/mysql", "name": "data"}]
    claim = named(manifests, "PersistentVolumeClaim", f"{BLOG.slug}-db-data")
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    secret = named(manifests, "Secret", f"{BLOG.slug}-db-secrets")
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert values == {"MARIADB_PASSWORD": "plain:DB_PASSWORD", "MARIADB_ROOT_PASSWORD": "plain:DB_ROOT_PASSWORD"}
    assert database["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 999


def test_secret_values_are_only_in_secrets_and_left_out_without_decrypting_anything() -> None:
    decrypt = Decryptions()
    with_secrets = render_account(state(FLOWS, decrypt=decrypt), CLUSTER)
    secret = named(with_secrets, "Secret", f"{FLOWS.slug}-secrets")
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert values == {"DB_PASSWORD": "plain:DB_PASSWORD", "DB_POSTGRESDB_PASSWORD": "plain:DB_PASSWORD",
                      "N8N_ENCRYPTION_KEY": "plain:N8N_ENCRYPTION_KEY",
                      "N8N_RUNNERS_AUTH_TOKEN": "plain:N8N_RUNNERS_AUTH_TOKEN"}
    everything_else = json.dumps([m for m in with_secrets if m["kind"] != "Secret"])
    assert "plain:" not in everything_else and "cipher:" not in everything_else
    [container] = named(with_secrets, "Deployment", FLOWS.slug)["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs == {name: {"key": name, "name": f"{FLOWS.slug}-secrets"} for name in values}

    untouched = Decryptions()
    without = render_account(state(FLOWS, decrypt=untouched), CLUSTER, include_secrets=False)
    assert of_kind(without, "Secret") == [] and untouched.calls == []
    assert [m for m in with_secrets if m["kind"] != "Secret"] == without


def test_stopped_means_no_replicas_and_no_ingress_with_the_data_and_credentials_kept() -> None:
    running = render_account(state(FLOWS, BLOG), CLUSTER)
    stopped = render_account(state(FLOWS, BLOG, level=Level.stopped), CLUSTER)

    workloads = of_kind(stopped, "Deployment") + of_kind(stopped, "StatefulSet")
    assert len(workloads) == 4 and all(w["spec"]["replicas"] == 0 for w in workloads)
    assert all(w["spec"]["replicas"] == 1 for w in of_kind(running, "Deployment") + of_kind(running, "StatefulSet"))
    assert of_kind(stopped, "Ingress") == [] and len(of_kind(running, "Ingress")) == 2
    for kind in ("PersistentVolumeClaim", "Secret", "Service"):
        assert of_kind(stopped, kind) == of_kind(running, kind)


def test_throttled_means_the_stricter_limit_range_and_cpu_limits_down_to_the_requests() -> None:
    running = render_account(state(FLOWS, BLOG), CLUSTER)
    throttled = render_account(state(FLOWS, BLOG, level=Level.throttled), CLUSTER)

    [normal] = of_kind(running, "LimitRange")[0]["spec"]["limits"]
    [strict] = of_kind(throttled, "LimitRange")[0]["spec"]["limits"]
    assert "maxLimitRequestRatio" not in normal and strict["maxLimitRequestRatio"] == {"cpu": "1"}
    assert normal["default"] == {"cpu": "1000m", "memory": "1024Mi"}  # the burstable model's defaults
    assert normal["defaultRequest"] == strict["defaultRequest"] == {"cpu": "250m", "memory": "512Mi"}
    assert strict["default"] == {"cpu": "250m", "memory": "1024Mi"}

    def containers(manifests):
        return {(w["kind"], w["metadata"]["name"]): w["spec"]["template"]["spec"]["containers"][0]["resources"]
                for w in of_kind(manifests, "Deployment") + of_kind(manifests, "StatefulSet")}

    before, after = containers(running), containers(throttled)
    assert before.keys() == after.keys() and len(after) == 4
    for name, resources in after.items():
        assert resources["limits"]["cpu"] == resources["requests"]["cpu"] == before[name]["requests"]["cpu"]
        assert int(resources["limits"]["cpu"].removesuffix("m")) < int(before[name]["limits"]["cpu"].removesuffix("m"))
        assert resources["limits"]["memory"] == before[name]["limits"]["memory"]  # memory is never squeezed
    assert all(w["spec"]["replicas"] == 1 for w in of_kind(throttled, "Deployment"))  # still serving
    assert len(of_kind(throttled, "Ingress")) == 2


def test_deleted_renders_nothing_for_the_instance_and_nothing_at_all_for_the_account() -> None:
    manifests = render_account(state(FLOWS, SITE, levels={FLOWS.id: Level.deleted}), CLUSTER)

    assert not [m for m in manifests if m["metadata"]["labels"].get(INSTANCE_LABEL) == str(FLOWS.id)]
    assert named(manifests, "Deployment", SITE.slug)["spec"]["replicas"] == 1
    assert of_kind(manifests, "Namespace")
    assert render_account(state(FLOWS, SITE, level=Level.deleted), CLUSTER) == []


def test_an_instance_whose_template_cannot_be_read_renders_nothing_and_its_siblings_do() -> None:
    templates = {code: spec for code, spec in TEMPLATES.items() if code != "n8n"}
    desired = state(FLOWS, SITE, templates=templates)
    assert [i.problem is not None for i in desired.instances] == [True, False]

    manifests = render_account(desired, CLUSTER)
    assert not [m for m in manifests if m["metadata"]["labels"].get(INSTANCE_LABEL) == str(FLOWS.id)]
    assert named(manifests, "Deployment", SITE.slug)


def test_rendering_is_deterministic_in_apply_order_with_names_that_are_dns_labels() -> None:
    first = render_account(state(FLOWS, BLOG, SITE), CLUSTER)
    again = render_account(state(SITE, BLOG, FLOWS), CLUSTER)  # instances in another order

    assert json.dumps(first) == json.dumps(again)
    order = [(APPLY_ORDER.index(m["kind"]), m["metadata"]["name"]) for m in first]
    assert order == sorted(order) and first[0]["kind"] == "Namespace"
    assert [v for m in first for v in metadata_violations(m)] == []
    names = [(m["kind"], m["metadata"]["name"]) for m in first]
    assert len(names) == len(set(names))


def test_long_names_are_cut_to_63_characters_with_a_stable_hash() -> None:
    slug = "a-very-long-instance-name-that-goes-on-and-on-and-on-4f2a9c"
    volume = "uploads-of-the-site-with-a-long-volume-name"
    name = object_name(slug, "data", volume)

    assert len(name) == 63 and re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name)
    assert name == object_name(slug, "data", volume)  # the same on every render
    assert name != object_name(slug, "data", volume + "s")
    assert name.startswith(slug[:40])
    assert object_name("site-4f2a9c", "db") == "site-4f2a9c-db"  # short names are left alone


@pytest.mark.parametrize("cidr", ["10.42.0.0/33", "fd00::/8", "10.42.0.1/16"])
def test_cluster_settings_refuse_ranges_the_policies_cannot_use(cidr: str) -> None:
    with pytest.raises(ValueError):
        ClusterSettings(base_domain="apps.example.net", pod_cidr=cidr)


@pytest.mark.parametrize("domain", ["Apps.Example.net", "localhost", "apps..example.net", "-apps.example.net"])
def test_cluster_settings_refuse_a_base_domain_that_is_not_a_dns_name(domain: str) -> None:
    with pytest.raises(ValueError, match="base domain"):
        ClusterSettings(base_domain=domain)


def test_desired_state_carries_what_a_cluster_needs() -> None:
    decrypt = Decryptions()
    desired = state(FLOWS, level=Level.throttled, decrypt=decrypt)
    [flows] = desired.instances

    assert desired.quotas == STARTER and desired.throttled and not desired.deleted
    assert flows.tier == "small" and flows.resources == TEMPLATES["n8n"].tiers["small"]
    assert flows.host == f"{FLOWS.slug}.apps.example.net" and flows.throttled and flows.run
    assert dict(flows.plain_env)["DB_POSTGRESDB_HOST"] == f"{FLOWS.slug}-db"
    assert "DB_PASSWORD" not in dict(flows.plain_env) and "DB_POSTGRESDB_PASSWORD" not in dict(flows.plain_env)
    assert decrypt.calls == []  # building it decrypts nothing
    assert flows.secret_env.names() == ("N8N_ENCRYPTION_KEY", "N8N_RUNNERS_AUTH_TOKEN", "DB_POSTGRESDB_PASSWORD",
                                        "DB_PASSWORD")
    assert flows.database is not None and flows.database.spec.engine == "postgres"
    assert dict(flows.database.plain_env)["POSTGRES_USER"] == "n8n"
    assert dict(flows.database.secret_env.values()) == {"POSTGRES_PASSWORD": "plain:DB_PASSWORD"}
