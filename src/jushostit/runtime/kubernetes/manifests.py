"""An account's desired state as Kubernetes objects. Pure and deterministic: the same state gives the same
objects, in apply order then by name, with names derived from the account's id and the instances' slugs.

Per account, a namespace and what fences it in: its ResourceQuota (the plan's), a LimitRange (normal, or
stricter while throttled), NetworkPolicies (deny everything, then allow DNS, the ingress controller, the
namespace itself and, for templates that need it, the internet minus the cluster's own ranges and the cloud's
metadata address) and the ServiceAccount its pods run as, which mounts no token. Per instance: a Secret, its
PVCs, a Deployment, a Service and an Ingress, and its database as a StatefulSet with its own Secret, PVC and
Service.

Levels: running; throttled (the CPU limit down to the request, and a LimitRange that allows no more);
stopped (every workload at 0 replicas and no Ingress: Secrets and PVCs, the data, are kept); deleted
(nothing: what the cluster holds once the instance is removed). An instance whose template cannot be read
renders nothing either: it is still in the desired state, so whoever applies these must keep what it has.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

from jushostit.catalog.spec import KubernetesForm, Probe, Resources
from jushostit.entitlement import Quotas
from jushostit.runtime.kubernetes.cluster import ClusterSettings
from jushostit.runtime.protocol import AccountState, DesiredInstance, Env, EnvPairs

Manifest = dict[str, Any]

MANAGED_BY = ("app.kubernetes.io/managed-by", "jushostit")
ACCOUNT_LABEL = "jushostit.io/account"
INSTANCE_LABEL = "jushostit.io/instance"
TEMPLATE_LABEL = "jushostit.io/template"
TIER_LABEL = "jushostit.io/tier"
COMPONENT_LABEL = "app.kubernetes.io/component"
INTERNET_LABEL = "jushostit.io/internet"  # pods of templates that need internet egress
POD_SECURITY_REASON = "jushostit.io/pod-security-reason"
SERVICE_ACCOUNT = "workload"
APP, DATABASE = "app", "database"

# The burstable model: what a container that names no resources of its own gets (the LimitRange's defaults),
# and what an instance runs with when its template no longer has its tier.
DEFAULT_RESOURCES = Resources(cpu_request_millicores=250, cpu_limit_millicores=1000, memory_request_mib=512,
                              memory_limit_mib=1024)
PODS_PER_INSTANCE = 2  # an app and its database
DATABASE_READINESS = Probe(tcp=True, initial_delay_seconds=5, period_seconds=10)
DATABASE_LIVENESS = Probe(tcp=True, initial_delay_seconds=30, period_seconds=10)
DATABASE_FORM = KubernetesForm()  # databases run restricted, with nothing added

# Namespaced objects after their namespace, what pods refer to before the pods, the route last.
APPLY_ORDER = ("Namespace", "ServiceAccount", "ResourceQuota", "LimitRange", "NetworkPolicy", "Secret",
               "PersistentVolumeClaim", "Service", "StatefulSet", "Deployment", "Ingress")

_MAX_NAME = 63
_HASH_LENGTH = 10


def object_name(*parts: str) -> str:
    """The parts joined by '-'. Over 63 characters (a DNS-1123 label's most), it keeps its start and ends with
    a hash of the whole, so it stays unique and the same on every render. The parts are slugs, codes and
    fixed words; check.violations refuses a name they would make invalid."""
    name = "-".join(parts)
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_LENGTH]
        name = f"{name[:_MAX_NAME - _HASH_LENGTH - 1].rstrip('-')}-{digest}"
    return name


def namespace_name(account_id: uuid.UUID) -> str:
    return object_name("jushostit", str(account_id))


# --- labels -------------------------------------------------------------------------------------------------


def account_labels(account_id: uuid.UUID) -> dict[str, str]:
    return dict(sorted({MANAGED_BY[0]: MANAGED_BY[1], ACCOUNT_LABEL: str(account_id)}.items()))


def instance_labels(account_id: uuid.UUID, instance: DesiredInstance, component: str) -> dict[str, str]:
    """What maps an object back to its account, instance, template and tier (metering reads them)."""
    return dict(sorted({
        **account_labels(account_id),
        COMPONENT_LABEL: component,
        "app.kubernetes.io/instance": instance.slug,
        "app.kubernetes.io/name": instance.template_code,
        INSTANCE_LABEL: str(instance.id),
        TEMPLATE_LABEL: instance.template_code,
        TIER_LABEL: instance.tier,
    }.items()))


def _selector(instance: DesiredInstance, component: str) -> dict[str, str]:
    return {COMPONENT_LABEL: component, INSTANCE_LABEL: str(instance.id)}


def _metadata(name: str, namespace: str | None, labels: dict[str, str],
              annotations: dict[str, str] | None = None) -> Manifest:
    metadata: Manifest = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(labels)  # every object its own: whoever applies them may add to one
    if annotations:
        metadata["annotations"] = annotations
    return metadata


# --- quantities ----------------------------------------------------------------------------------------------


def _cpu(millicores: int) -> str:
    return f"{millicores}m"


def _mib(mebibytes: int) -> str:
    return f"{mebibytes}Mi"


def _gib(gibibytes: int) -> str:
    return f"{gibibytes}Gi"


def container_resources(resources: Resources, *, throttled: bool) -> Manifest:
    """Requests and limits. Throttled, the CPU limit comes down to the request: no bursting, which the
    throttled LimitRange enforces too. Memory is left alone: a lower memory limit kills a process, it does not
    slow it down."""
    cpu_limit = resources.cpu_request_millicores if throttled else resources.cpu_limit_millicores
    return {
        "limits": {"cpu": _cpu(cpu_limit), "memory": _mib(resources.memory_limit_mib)},
        "requests": {"cpu": _cpu(resources.cpu_request_millicores), "memory": _mib(resources.memory_request_mib)},
    }


# --- the account ---------------------------------------------------------------------------------------------


def _namespace(state: AccountState, cluster: ClusterSettings, baseline_reasons: list[str]) -> Manifest:
    """Pod Security "restricted" is enforced unless one of its templates says why it cannot run so: then
    "baseline", with the reasons on the namespace; warnings and audit stay at "restricted" either way."""
    level = "baseline" if baseline_reasons else "restricted"
    version = cluster.pod_security_version
    labels = dict(sorted({
        **account_labels(state.account_id),
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/audit-version": version,
        "pod-security.kubernetes.io/enforce": level,
        "pod-security.kubernetes.io/enforce-version": version,
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": version,
    }.items()))
    annotations = {POD_SECURITY_REASON: "; ".join(baseline_reasons)} if baseline_reasons else None
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": _metadata(namespace_name(state.account_id), None, labels, annotations)}


def _service_account(namespace: str, labels: dict[str, str]) -> Manifest:
    # Tenants' pods never talk to the Kubernetes API: no token is mounted, and no Role is ever bound.
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(SERVICE_ACCOUNT, namespace, labels),
            "automountServiceAccountToken": False}


def _resource_quota(namespace: str, labels: dict[str, str], quotas: Quotas) -> Manifest:
    """The plan's quotas, summed over the account's entitled subscriptions (none entitled: all zero, nothing
    more may start). Limits are counted, as ordering counts them."""
    hard = {
        "limits.cpu": _cpu(quotas.cpu_millicores),
        "limits.memory": _mib(quotas.memory_mib),
        "pods": str(PODS_PER_INSTANCE * quotas.max_instances),
        "requests.storage": _gib(quotas.storage_gib),
    }
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": _metadata("plan", namespace, labels),
            "spec": {"hard": hard}}


def _limit_range(namespace: str, labels: dict[str, str], *, throttled: bool) -> Manifest:
    """Defaults for a container that names no resources (the quota needs limits on every pod). Throttled, no
    container may have a CPU limit above its request. It applies when a pod is admitted, which is why a
    throttled instance's own resources are lowered too."""
    defaults = container_resources(DEFAULT_RESOURCES, throttled=throttled)
    limits: Manifest = {"default": defaults["limits"], "defaultRequest": defaults["requests"]}
    if throttled:
        limits["maxLimitRequestRatio"] = {"cpu": "1"}
    return {"apiVersion": "v1", "kind": "LimitRange", "metadata": _metadata("containers", namespace, labels),
            "spec": {"limits": [{**limits, "type": "Container"}]}}


def _network_policy(name: str, namespace: str, labels: dict[str, str], spec: Manifest) -> Manifest:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _metadata(name, namespace, labels), "spec": spec}


def _in_namespace(name: str) -> Manifest:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def network_policies(namespace: str, labels: dict[str, str], cluster: ClusterSettings) -> list[Manifest]:
    """Deny everything in and out, then allow: DNS; the ingress controller to the apps (never the databases);
    the namespace's pods to each other; and the internet, for the pods of templates that need it, minus the
    cluster's pod and service ranges, private and link-local ranges and the metadata address."""
    # A podSelector of {} is every pod of the namespace.
    dns_key, dns_value = cluster.dns_pod_label
    dns_peer = {**_in_namespace(cluster.dns_namespace), "podSelector": {"matchLabels": {dns_key: dns_value}}}
    return [
        _network_policy("allow-dns", namespace, labels, {
            "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                        "to": [dns_peer]}],
            "podSelector": {}, "policyTypes": ["Egress"],
        }),
        _network_policy("allow-from-ingress-controller", namespace, labels, {
            "ingress": [{"from": [_in_namespace(cluster.ingress_namespace)]}],
            "podSelector": {"matchLabels": {COMPONENT_LABEL: APP}}, "policyTypes": ["Ingress"],
        }),
        _network_policy("allow-internet-egress", namespace, labels, {
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": cluster.blocked_egress()}}]}],
            "podSelector": {"matchLabels": {INTERNET_LABEL: "true"}}, "policyTypes": ["Egress"],
        }),
        _network_policy("allow-same-namespace", namespace, labels, {
            "egress": [{"to": [{"podSelector": {}}]}],
            "ingress": [{"from": [{"podSelector": {}}]}],
            "podSelector": {}, "policyTypes": ["Ingress", "Egress"],
        }),
        _network_policy("default-deny", namespace, labels, {
            "podSelector": {}, "policyTypes": ["Ingress", "Egress"],
        }),
    ]


# --- an instance ---------------------------------------------------------------------------------------------


def _secret(name: str, namespace: str, labels: dict[str, str], env: Env) -> Manifest:
    data = {key: base64.b64encode(value.encode()).decode() for key, value in sorted(env.values())}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _metadata(name, namespace, labels),
            "type": "Opaque", "data": data}


def _env(plain: EnvPairs, secret: Env, secret_name: str) -> list[Manifest]:
    """Plain values in the spec; secret ones referred to by name, their values only in the Secret."""
    return [{"name": name, "value": value} for name, value in plain] + [
        {"name": name, "valueFrom": {"secretKeyRef": {"key": name, "name": secret_name}}} for name in secret.names()
    ]


def _volume_claim(name: str, namespace: str, labels: dict[str, str], size_gib: int,
                  cluster: ClusterSettings) -> Manifest:
    spec: Manifest = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": _gib(size_gib)}}}
    if cluster.storage_class is not None:
        spec["storageClassName"] = cluster.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _metadata(name, namespace, labels),
            "spec": spec}


def _probe(probe: Probe, port: str, host: str) -> Manifest:
    if probe.http is not None:
        get: Manifest = {"path": probe.http.path, "port": port}
        if probe.http.host_header:  # sites that redirect to their canonical URL answer only for their host
            get["httpHeaders"] = [{"name": "Host", "value": host}]
        action: Manifest = {"httpGet": get}
    else:
        action = {"tcpSocket": {"port": port}}
    return {**action, "initialDelaySeconds": probe.initial_delay_seconds, "periodSeconds": probe.period_seconds}


def _container_security(form: KubernetesForm) -> Manifest:
    """Pod Security "restricted": no privilege escalation, every capability dropped (a template may add some
    back, which only "baseline" allows beyond NET_BIND_SERVICE), never root."""
    capabilities: Manifest = {"drop": ["ALL"]}
    if form.add_capabilities:
        capabilities["add"] = sorted(form.add_capabilities)
    return {"allowPrivilegeEscalation": False, "capabilities": capabilities, "privileged": False,
            "runAsNonRoot": True}


def _pod_spec(container: Manifest, uid: int, form: KubernetesForm, volumes: list[Manifest]) -> Manifest:
    security: Manifest = {
        "fsGroup": uid,  # the volumes are writable by the app's uid, whoever owned them before
        "fsGroupChangePolicy": "OnRootMismatch",
        "runAsNonRoot": True,
        "runAsUser": uid,  # numeric: an image whose USER is a name cannot prove it is not root
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if form.sysctls:
        security["sysctls"] = [{"name": name, "value": value} for name, value in sorted(form.sysctls.items())]
    spec: Manifest = {
        "automountServiceAccountToken": False,
        "containers": [container],
        "enableServiceLinks": False,  # no environment variables for every Service of the namespace
        "securityContext": security,
        "serviceAccountName": SERVICE_ACCOUNT,
    }
    if volumes:
        spec["volumes"] = volumes
    return spec


def _workload(kind: str, name: str, namespace: str, labels: dict[str, str], selector: dict[str, str],
              pod_labels: dict[str, str], pod_spec: Manifest, *, replicas: int, **spec: Any) -> Manifest:
    return {
        "apiVersion": "apps/v1", "kind": kind, "metadata": _metadata(name, namespace, labels),
        "spec": {
            "replicas": replicas, "revisionHistoryLimit": 2, "selector": {"matchLabels": dict(selector)}, **spec,
            "template": {"metadata": {"labels": dict(pod_labels)}, "spec": pod_spec},
        },
    }


def _service(name: str, namespace: str, labels: dict[str, str], selector: dict[str, str], port_name: str,
             port: int, *, headless: bool = False) -> Manifest:
    spec: Manifest = {"ports": [{"name": port_name, "port": port, "protocol": "TCP", "targetPort": port_name}],
                      "selector": dict(selector), "type": "ClusterIP"}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(name, namespace, labels), "spec": spec}


def _ingress(name: str, namespace: str, labels: dict[str, str], host: str, cluster: ClusterSettings) -> Manifest:
    """The instance's public route at its host, with a certificate from the cluster's cert-manager issuer."""
    backend = {"service": {"name": name, "port": {"name": "http"}}}
    spec: Manifest = {
        "ingressClassName": cluster.ingress_class,
        "rules": [{"host": host, "http": {"paths": [{"backend": backend, "path": "/", "pathType": "Prefix"}]}}],
    }
    annotations = None
    if cluster.cert_issuer is not None:
        annotations = {"cert-manager.io/cluster-issuer": cluster.cert_issuer}
        spec["tls"] = [{"hosts": [host], "secretName": object_name(name, "tls")}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": _metadata(name, namespace, labels, annotations), "spec": spec}


def _database(account_id: uuid.UUID, instance: DesiredInstance, namespace: str, cluster: ClusterSettings,
              *, replicas: int, include_secrets: bool) -> list[Manifest]:
    database = instance.database
    assert database is not None and instance.template is not None
    spec = database.spec
    labels = instance_labels(account_id, instance, DATABASE)
    selector = _selector(instance, DATABASE)
    name = object_name(instance.slug, "db")  # the host templates name as {slug}-db
    secret_name, claim_name = object_name(name, "secrets"), object_name(name, "data")
    container = {
        "env": _env(database.plain_env, database.secret_env, secret_name),
        "image": spec.image,
        "livenessProbe": _probe(DATABASE_LIVENESS, "db", instance.host),
        "name": DATABASE,
        "ports": [{"containerPort": spec.port, "name": "db", "protocol": "TCP"}],
        "readinessProbe": _probe(DATABASE_READINESS, "db", instance.host),
        "resources": container_resources(spec.resources, throttled=instance.throttled),
        "securityContext": _container_security(DATABASE_FORM),
        "volumeMounts": [{"mountPath": spec.data_path, "name": "data"}],
    }
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}]
    objects = [
        _volume_claim(claim_name, namespace, labels, spec.size_gib, cluster),
        _service(name, namespace, labels, selector, "db", spec.port, headless=True),
        _workload("StatefulSet", name, namespace, labels, selector, labels,
                  _pod_spec(container, spec.uid, DATABASE_FORM, volumes), replicas=replicas, serviceName=name),
    ]
    if include_secrets:
        objects.append(_secret(secret_name, namespace, labels, database.secret_env))
    return objects


def render_instance(account_id: uuid.UUID, instance: DesiredInstance, cluster: ClusterSettings, *,
                    include_secrets: bool = True) -> list[Manifest]:
    """One instance's objects at its level (see the module's docstring). `include_secrets=False` leaves its
    Secrets out and decrypts nothing."""
    template = instance.template
    if instance.deleted or template is None:
        return []
    namespace = namespace_name(account_id)
    replicas = 1 if instance.run else 0
    labels = instance_labels(account_id, instance, APP)
    selector = _selector(instance, APP)
    pod_labels = dict(sorted({**labels, INTERNET_LABEL: "true"}.items())) if template.needs_internet_egress else labels
    name = object_name(instance.slug)
    secret_name = object_name(name, "secrets")
    form = template.kubernetes
    mounts = [{"mountPath": volume.mount_path, "name": volume.name} for volume in template.volumes]
    claims = {volume.name: object_name(name, "data", volume.name) for volume in template.volumes}
    volumes = [{"name": volume, "persistentVolumeClaim": {"claimName": claim}} for volume, claim in claims.items()]
    if form.shared_memory_mib is not None:
        mounts.append({"mountPath": "/dev/shm", "name": "dshm"})
        volumes.append({"emptyDir": {"medium": "Memory", "sizeLimit": _mib(form.shared_memory_mib)}, "name": "dshm"})
    container: Manifest = {
        "env": _env(instance.plain_env, instance.secret_env, secret_name),
        "image": template.image,
        "livenessProbe": _probe(template.liveness, "http", instance.host),
        "name": APP,
        "ports": [{"containerPort": template.port, "name": "http", "protocol": "TCP"}],
        "readinessProbe": _probe(template.readiness, "http", instance.host),
        "resources": container_resources(instance.resources or DEFAULT_RESOURCES, throttled=instance.throttled),
        "securityContext": _container_security(form),
    }
    if mounts:
        container["volumeMounts"] = mounts
    objects = [
        *(_volume_claim(claims[volume.name], namespace, labels, volume.size_gib, cluster)
          for volume in template.volumes),
        _service(name, namespace, labels, selector, "http", template.port),
        # Recreate: its volumes are ReadWriteOnce, so the old pod lets go of them before the new one starts.
        _workload("Deployment", name, namespace, labels, selector, pod_labels,
                  _pod_spec(container, template.uid, form, volumes), replicas=replicas, strategy={"type": "Recreate"}),
    ]
    if include_secrets:
        objects.append(_secret(secret_name, namespace, labels, instance.secret_env))
    if instance.run:
        objects.append(_ingress(name, namespace, labels, instance.host, cluster))
    if instance.database is not None:
        objects += _database(account_id, instance, namespace, cluster, replicas=replicas,
                             include_secrets=include_secrets)
    return objects


def apply_order(manifest: Manifest) -> tuple[int, str]:
    """Where an object goes when objects are applied: by kind (APPLY_ORDER), then by name."""
    return APPLY_ORDER.index(manifest["kind"]), manifest["metadata"]["name"]


def rendered_instances(state: AccountState) -> list[DesiredInstance]:
    """The instances that have objects: not deleted, their template readable, their account not deleted. The
    others are still in the desired state (their data is kept) but render nothing."""
    if state.deleted:
        return []
    return [i for i in state.instances if not i.deleted and i.template is not None]


def render_account(state: AccountState, cluster: ClusterSettings, *, include_secrets: bool = True) -> list[Manifest]:
    """Every object of the account, in apply order then by name; nothing at all when the account itself is
    deleted (its namespace goes, PVCs included)."""
    if state.deleted:
        return []
    namespace = namespace_name(state.account_id)
    labels = account_labels(state.account_id)
    rendered = rendered_instances(state)
    baseline_reasons = sorted({
        f"{i.template_code}: {i.template.kubernetes.pod_security_reason}"
        for i in rendered if i.template is not None and i.template.kubernetes.pod_security == "baseline"
    })
    objects = [
        _namespace(state, cluster, baseline_reasons),
        _service_account(namespace, labels),
        _resource_quota(namespace, labels, state.quotas),
        _limit_range(namespace, labels, throttled=state.throttled),
        *network_policies(namespace, labels, cluster),
    ]
    for instance in rendered:
        objects += render_instance(state.account_id, instance, cluster, include_secrets=include_secrets)
    return sorted(objects, key=apply_order)
