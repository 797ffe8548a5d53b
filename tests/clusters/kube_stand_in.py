"""A Kubernetes API stand-in on the API's documented wire format, served over real HTTPS on loopback (a CA of its
own signs its certificate for 127.0.0.1), so the product's own lightkube client (httpx2) talks to it as to a
cluster:

- `GET /version`; a bearer token checked on every request (401 `Status` otherwise);
- `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: `status.allowed`, false for `denied` labels;
- `GET /api/v1/nodes` and `GET /api/v1/pods` (every namespace), chunked by `limit` and `continue`;
- for `clusters verify`: namespaces, NetworkPolicies and pods created and deleted, pod status and logs. Probe pods
  finish as a cluster would run them: their destination (the `wget` URL, or DNS for `nslookup`) is reached or not
  by the NetworkPolicies of both ends, evaluated here, unless the cluster does not enforce NetworkPolicy (K3s
  without its ipset kernel modules), when everything is reached;
- the service proxy, `GET /api/v1/namespaces/{ns}/services/{[scheme:]name[:port]}/proxy/{path}`, in front of
  OpenCost (`OpenCost` below) when it is installed: 404 `Status` for a service that does not exist, 503 `Status`
  when it has no ready pod, 403 when `get services/proxy` is denied; otherwise OpenCost's own answer, passed through.

Errors are `Status` objects with `Content-Type: application/json`, as lightkube needs them to raise `ApiError`.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tests.loopback_server import LoopbackServer

TOKEN = "k3s-stand-in-token"
VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.4+k3s1", "gitCommit": "a1b2c3", "gitTreeState": "clean",
           "buildDate": "2024-12-13T10:30:00Z", "goVersion": "go1.22.9", "compiler": "gc", "platform": "linux/amd64"}
GIB_KI = 1024 * 1024
DNS_ADDRESS = "10.43.0.10"
METADATA_ADDRESS = "169.254.169.254"


def status(code: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                         "message": message, "reason": reason, "code": code}, status_code=code)


def k3s_node(name: str, *, cpu: str, memory_ki: int, allocatable_cpu: str | None = None,
             allocatable_memory_ki: int | None = None, ready: str = "True", pressure: tuple[str, ...] = (),
             unschedulable: bool = False, taints: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    conditions = [
        {"type": kind, "status": "True" if kind in pressure else "False", "reason": f"KubeletHas{kind}",
         "lastHeartbeatTime": "2026-11-29T09:00:00Z", "lastTransitionTime": "2026-11-01T09:00:00Z"}
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")
    ] + [{"type": "Ready", "status": ready, "reason": "KubeletReady", "lastHeartbeatTime": "2026-11-29T09:00:00Z",
          "lastTransitionTime": "2026-11-01T09:00:00Z"}]
    spec: dict[str, Any] = {"podCIDR": "10.42.0.0/24", "providerID": f"k3s://{name}"}
    if unschedulable:
        spec["unschedulable"] = True
    if taints:
        spec["taints"] = [{"key": key, "effect": effect} for key, effect in taints]
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "100",
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "spec": spec,
        "status": {
            "capacity": {"cpu": cpu, "memory": f"{memory_ki}Ki", "pods": "110", "ephemeral-storage": "479596204Ki"},
            "allocatable": {"cpu": allocatable_cpu or cpu, "memory": f"{allocatable_memory_ki or memory_ki}Ki",
                            "pods": "110", "ephemeral-storage": "466557658619"},
            "conditions": conditions,
            "nodeInfo": {"kubeletVersion": "v1.31.4+k3s1", "containerRuntimeVersion": "containerd://1.7.23-k3s2",
                         "architecture": "amd64", "bootID": "b", "kernelVersion": "6.8.0", "kubeProxyVersion": "",
                         "machineID": "m", "operatingSystem": "linux", "osImage": "Ubuntu 24.04.1 LTS",
                         "systemUUID": "s"},
        },
    }


def k8s_container(name: str, requests: dict[str, str] | None = None, limits: dict[str, str] | None = None) -> dict[str, Any]:
    resources = {key: value for key, value in (("requests", requests), ("limits", limits)) if value}
    return {"name": name, "image": "registry.example/app:1", "resources": resources}


def pod(name: str, namespace: str, node: str | None, containers: list[dict[str, Any]], *, phase: str = "Running",
        init: list[dict[str, Any]] | None = None, overhead: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if node:
        spec["nodeName"] = node
    if init:
        spec["initContainers"] = init
    if overhead:
        spec["overhead"] = overhead
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}"}, "spec": spec,
            "status": {"phase": phase}}


@dataclass
class ProbePod:
    manifest: dict[str, Any]
    ip: str
    polls: int = 0
    outcome: tuple[str, str] | None = None  # (phase, log) once decided


HOUR = datetime.timedelta(hours=1)


def _opencost_time(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # Go's time.RFC3339 of a UTC time


def _opencost_number(value: float | None) -> float | None:
    """OpenCost's JSON numbers: rounded to 5 decimals, NaN (and infinities) written as null."""
    return None if value is None or not math.isfinite(value) else round(value, 5)


@dataclass
class OpenCost:
    """OpenCost v1.112's `GET /allocation/compute` as its service answers it, for the service proxy to pass on.

    `costs` holds each hour's (UTC start) totalCost per allocation name, as `aggregate=namespace` names them:
    namespaces, `__idle__` and `__unallocated__`; a NaN is written as null, as OpenCost writes it. The window is
    parsed as OpenCost parses it (an RFC3339 pair or a unix-seconds pair here); one it cannot parse is a plain-text
    400. With `step` (and not `accumulate=true`), one allocation set per step, each allocation's `window` that
    step's; otherwise one set for the whole window."""

    namespace: str = "opencost"
    service: str = "opencost"
    port: int = 9003
    ready: bool = True  # False: no ready pod behind the service, the proxy answers 503
    costs: dict[datetime.datetime, dict[str, float | None]] = field(default_factory=dict)
    rejects_window: bool = False  # every window answered as one it cannot parse
    ignores_step: bool = False  # one set for the whole window, whatever the step
    body: str | None = None  # answered as it is (200, application/json) instead of the allocation sets
    requests: list[str] = field(default_factory=list)  # the query strings received, as sent

    def answer(self, path: str, query: str) -> Response:
        self.requests.append(query)
        if path != "allocation/compute":
            return PlainTextResponse("404 page not found\n", status_code=404)
        params = dict(parse_qsl(query))
        window = params.get("window", "")
        bounds = None if self.rejects_window else _opencost_window(window)
        if bounds is None:
            return PlainTextResponse(f"Invalid 'window' parameter: illegal window: {window}\n", status_code=400)
        if self.body is not None:
            return Response(self.body, media_type="application/json")
        start, end = bounds
        whole = self.ignores_step or "step" not in params or params.get("accumulate") == "true"
        step = end - start if whole else _opencost_step(params["step"])
        sets = []
        while start < end:
            step_end = min(start + step, end)
            sets.append(self._set(start, step_end))
            start = step_end
        return JSONResponse({"code": 200, "status": "success", "data": sets})

    def _set(self, start: datetime.datetime, end: datetime.datetime) -> dict[str, Any]:
        totals: dict[str, float | None] = {}
        hour = start
        while hour < end:
            for name, cost in self.costs.get(hour, {}).items():
                before = totals.get(name, 0.0)
                totals[name] = None if cost is None or before is None else before + cost
            hour += HOUR
        return {name: opencost_allocation(name, start, end, total) for name, total in sorted(totals.items())}


def _opencost_window(window: str) -> tuple[datetime.datetime, datetime.datetime] | None:
    first, comma, second = window.partition(",")
    if not comma:
        return None
    try:
        if first.isdigit() and second.isdigit():
            return (datetime.datetime.fromtimestamp(int(first), datetime.UTC),
                    datetime.datetime.fromtimestamp(int(second), datetime.UTC))
        if first.endswith("Z") and second.endswith("Z"):
            return datetime.datetime.fromisoformat(first), datetime.datetime.fromisoformat(second)
    except ValueError:
        pass
    return None


def _opencost_step(step: str) -> datetime.timedelta:
    units = {"m": 60, "h": 3600, "d": 86400}
    return datetime.timedelta(seconds=int(step[:-1]) * units[step[-1]])


def opencost_allocation(name: str, start: datetime.datetime, end: datetime.datetime,
                         total: float | None) -> dict[str, Any]:
    """One allocation of an `aggregate=namespace` set, with the fields OpenCost writes (those read here and
    enough others to be its shape). The total is split between CPU and RAM."""
    properties = {"cluster": "default-cluster"}
    if not name.startswith("__"):
        properties["namespace"] = name
    hours = (end - start) / HOUR
    cpu = None if total is None else total * 0.6
    ram = None if total is None or cpu is None else total - cpu
    return {
        "name": name, "properties": properties,
        "window": {"start": _opencost_time(start), "end": _opencost_time(end)},
        "start": _opencost_time(start), "end": _opencost_time(end), "minutes": _opencost_number(hours * 60),
        "cpuCores": 0.25, "cpuCoreRequestAverage": 0.25, "cpuCoreUsageAverage": 0.04123,
        "cpuCoreHours": _opencost_number(0.25 * hours), "cpuCost": _opencost_number(cpu), "cpuCostAdjustment": 0,
        "cpuEfficiency": 0.16492, "gpuCount": 0, "gpuHours": 0, "gpuCost": 0, "gpuCostAdjustment": 0,
        "networkTransferBytes": 0, "networkReceiveBytes": 0, "networkCost": 0, "networkCrossZoneCost": 0,
        "networkCrossRegionCost": 0, "networkInternetCost": 0, "networkCostAdjustment": 0, "loadBalancerCost": 0,
        "loadBalancerCostAdjustment": 0, "pvBytes": 0, "pvByteHours": 0, "pvCost": 0, "pvs": None,
        "pvCostAdjustment": 0, "ramBytes": 536870912, "ramByteRequestAverage": 536870912,
        "ramByteUsageAverage": 201326592, "ramByteHours": _opencost_number(536870912 * hours),
        "ramCost": _opencost_number(ram), "ramCostAdjustment": 0, "ramEfficiency": 0.375, "externalCost": 0,
        "sharedCost": 0, "totalCost": _opencost_number(total), "totalEfficiency": 0.24891,
        "proportionalAssetResourceCosts": {}, "lbAllocations": None, "sharedCostBreakdown": {},
    }


@dataclass
class KubeStandIn:
    token: str = TOKEN
    version: dict[str, Any] | str = field(default_factory=lambda: dict(VERSION))
    denied: set[str] = field(default_factory=set)  # permission labels, e.g. "create namespaces"
    outage: int | None = None  # every request answered with this status
    nodes: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    enforces_network_policy: bool = True
    images_pull: bool = True  # False: every pod stays Pending (an image that cannot be pulled)
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    policies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    created: dict[tuple[str, str], ProbePod] = field(default_factory=dict)
    pod_manifests: list[dict[str, Any]] = field(default_factory=list)  # every pod created, as it was sent
    deleted_namespaces: list[str] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    list_requests: list[dict[str, str]] = field(default_factory=list)
    opencost: OpenCost | None = None  # installed: its service, behind the service proxy
    _addresses: Iterator[int] = field(default_factory=lambda: itertools.count(10))

    # --- the API ------------------------------------------------------------------------------------------------

    async def answer(self, request: Request) -> Response:
        if self.outage is not None:
            return status(self.outage, "InternalError", "the stand-in is down")
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        path, method = request.url.path, request.method
        body = json.loads(await request.body() or b"null")
        parts = path.strip("/").split("/")
        if path == "/version":
            return JSONResponse(self.version) if isinstance(self.version, dict) else PlainTextResponse(self.version)
        if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" and method == "POST":
            return self._review(body)
        if path in ("/api/v1/nodes", "/api/v1/pods") and method == "GET":
            items = self.nodes if path.endswith("nodes") else [*self.pods, *self._probe_objects()]
            return self._list("NodeList" if path.endswith("nodes") else "PodList", items, dict(request.query_params))
        if parts[:3] == ["api", "v1", "namespaces"] and parts[4:5] == ["services"] and parts[6:7] == ["proxy"]:
            return self._service_proxy(parts[3], parts[5], "/".join(parts[7:]), request.url.query)
        if parts[:3] == ["api", "v1", "namespaces"]:
            return self._namespaced(method, parts[3:], body)
        if parts[:4] == ["apis", "networking.k8s.io", "v1", "namespaces"] and parts[5:] == ["networkpolicies"]:
            if parts[4] not in self.namespaces:
                return status(404, "NotFound", f'namespaces "{parts[4]}" not found')
            self.policies.setdefault(parts[4], []).append(body)
            return JSONResponse({**body, "metadata": {**body["metadata"], "namespace": parts[4]}}, status_code=201)
        return status(404, "NotFound", "the server could not find the requested resource")

    def _review(self, body: dict[str, Any]) -> JSONResponse:
        self.reviews.append(body)
        attributes = body["spec"]["resourceAttributes"]
        resource = attributes["resource"] + (f".{attributes['group']}" if attributes.get("group") else "")
        label = f"{attributes['verb']} {resource}" + (f"/{attributes['subresource']}" if attributes.get("subresource") else "")
        allowed = label not in self.denied
        return JSONResponse({**body, "metadata": {"creationTimestamp": None},
                             "status": {"allowed": allowed, **({} if allowed else {"reason": "no RBAC rule"})}},
                            status_code=201)

    def _service_proxy(self, namespace: str, segment: str, path: str, query: str) -> Response:
        """The API server's service proxy: `segment` is `[scheme:]name[:port]`."""
        if "get services/proxy" in self.denied:
            return status(403, "Forbidden", f'services "{segment}" is forbidden: User "system:serviceaccount:'
                          f'jushostit:jushostit" cannot get resource "services/proxy" in API group "" in the '
                          f'namespace "{namespace}"')
        pieces = segment.split(":")
        name = pieces[1] if len(pieces) == 3 else pieces[0]
        port = pieces[-1] if len(pieces) > 1 else ""
        opencost = self.opencost
        if opencost is None or (namespace, name) != (opencost.namespace, opencost.service):
            return status(404, "NotFound", f'services "{name}" not found')
        if port not in ("", str(opencost.port), "http"):
            return status(503, "ServiceUnavailable", f'no service port "{port}" found for service "{name}"')
        if not opencost.ready:
            return status(503, "ServiceUnavailable", f'no endpoints available for service "{segment}"')
        return opencost.answer(path, query)

    def _list(self, kind: str, items: list[dict[str, Any]], query: dict[str, str]) -> JSONResponse:
        self.list_requests.append(query)
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or len(items) or 1)
        chunk = items[start:start + limit]
        more = start + limit < len(items)
        return JSONResponse({"kind": kind, "apiVersion": "v1", "items": chunk, "metadata": {
            "resourceVersion": "4242", **({"continue": str(start + limit)} if more else {})}})

    def _namespaced(self, method: str, rest: list[str], body: Any) -> Response:
        if not rest and method == "POST":
            name = body["metadata"]["name"]
            if name in self.namespaces:
                return status(409, "AlreadyExists", f'namespaces "{name}" already exists')
            self.namespaces[name] = body
            return JSONResponse({**body, "status": {"phase": "Active"}}, status_code=201)
        namespace = rest[0]
        if namespace not in self.namespaces:
            return status(404, "NotFound", f'namespaces "{namespace}" not found')
        if len(rest) == 1 and method == "DELETE":
            del self.namespaces[namespace]
            self.deleted_namespaces.append(namespace)
            self.created = {key: value for key, value in self.created.items() if key[0] != namespace}
            return JSONResponse({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
        if rest[1:] == ["pods"] and method == "POST":
            name = body["metadata"]["name"]
            self.pod_manifests.append(body)
            self.created[(namespace, name)] = ProbePod(body, f"10.42.1.{next(self._addresses)}")
            return JSONResponse(self._pod_object(namespace, name), status_code=201)
        if len(rest) >= 3 and rest[1] == "pods" and (namespace, rest[2]) in self.created:
            probe = self.created[(namespace, rest[2])]
            if rest[3:] == ["log"]:
                return PlainTextResponse(self._decided(namespace, probe)[1])
            if method == "GET":
                probe.polls += 1
                return JSONResponse(self._pod_object(namespace, rest[2]))
        return status(404, "NotFound", "not found")

    # --- pods as a cluster runs them ----------------------------------------------------------------------------

    def _probe_objects(self) -> list[dict[str, Any]]:
        return [self._pod_object(namespace, name) for namespace, name in self.created]

    def _pod_object(self, namespace: str, name: str) -> dict[str, Any]:
        probe = self.created[(namespace, name)]
        manifest = probe.manifest
        if not self.images_pull:
            phase = "Pending"
        elif manifest["spec"].get("restartPolicy") != "Never":
            phase = "Running"  # a server
        elif probe.polls < 2:
            phase = "Pending"  # the image is being pulled: the caller must poll
        else:
            phase = self._decided(namespace, probe)[0]
        return {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace, "uid": f"uid-{name}"},
                "spec": {**manifest["spec"], "nodeName": "ryzen-3900x"},
                "status": {"phase": phase, "podIP": probe.ip}}

    def _decided(self, namespace: str, probe: ProbePod) -> tuple[str, str]:
        if probe.outcome is None:
            command = probe.manifest["spec"]["containers"][0]["command"]
            reached = self._reaches(namespace, probe.manifest["metadata"].get("labels", {}), command)
            if command[0] == "nslookup":
                log = f"Server:\t\t{DNS_ADDRESS}\nName:\tkubernetes.default.svc.cluster.local\nAddress: 10.43.0.1\n" \
                    if reached else ";; connection timed out; no servers could be reached\n"
            else:
                log = "ok\n" if reached else "wget: download timed out\n"
            probe.outcome = ("Succeeded" if reached else "Failed", log)
        return probe.outcome

    def _destination(self, command: list[str]) -> tuple[str, str | None, int]:
        """(ip, namespace of the pod there or None, port) a probe's command goes to."""
        if command[0] == "nslookup":
            return DNS_ADDRESS, "kube-system", 53
        url = urlsplit(command[-1])
        host = url.hostname or ""
        try:
            ip = str(ipaddress.ip_address(host))
        except ValueError:
            ip = "93.184.215.14"  # a name on the internet, resolved by DNS
        port = url.port or (443 if url.scheme == "https" else 80)
        namespace = next((ns for (ns, _), pod in self.created.items() if pod.ip == ip), None)
        return ip, namespace, port

    def _reaches(self, namespace: str, labels: dict[str, str], command: list[str]) -> bool:
        if not self.enforces_network_policy:
            return True
        ip, target_namespace, port = self._destination(command)
        if not _allowed(self.policies.get(namespace, []), "Egress", labels, ip, target_namespace, namespace, port):
            return False
        if target_namespace is None or target_namespace == "kube-system":
            return True
        target = next(p for (ns, _), p in self.created.items() if ns == target_namespace and p.ip == ip)
        return _allowed(self.policies.get(target_namespace, []), "Ingress",
                        target.manifest["metadata"].get("labels", {}), None, namespace, target_namespace, port)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def _peer_matches(peer: dict[str, Any], ip: str | None, peer_namespace: str | None, own_namespace: str) -> bool:
    if "ipBlock" in peer:
        if ip is None:
            return False
        address = ipaddress.ip_address(ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(excepted) for excepted in block.get("except", []))
    if "namespaceSelector" in peer:
        names = {"kubernetes.io/metadata.name": peer_namespace or ""}
        return peer_namespace is not None and _selects(peer["namespaceSelector"], names)
    return peer_namespace == own_namespace  # a podSelector alone: this namespace's pods


def _allowed(policies: list[dict[str, Any]], direction: str, labels: dict[str, str], ip: str | None,
             peer_namespace: str | None, own_namespace: str, port: int) -> bool:
    """NetworkPolicy's rule: isolated in a direction once a policy selecting the pod names it; then allowed only
    when a rule of such a policy matches the peer and the port."""
    selecting = [p for p in policies if direction in p["spec"].get("policyTypes", [])
                 and _selects(p["spec"].get("podSelector", {}), labels)]
    if not selecting:
        return True
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            ports = rule.get("ports")
            if ports and not any(entry.get("port") == port for entry in ports):
                continue
            peers = rule.get(peers_key)
            if not peers or any(_peer_matches(peer, ip, peer_namespace, own_namespace) for peer in peers):
                return True
    return False


@dataclass(frozen=True)
class Tls:
    ca_pem: bytes
    cert_file: Path
    key_file: Path


def make_tls(directory: Path) -> Tls:
    """A CA of the stand-in's own, and its certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k3s-server-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k3s")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Tls(ca.public_bytes(serialization.Encoding.PEM), cert_file, key_file)


class KubeServer(LoopbackServer):
    scheme = "https"

    def __init__(self, tls: Tls) -> None:
        self.tls = tls
        self.stand_in = KubeStandIn()
        super().__init__(ssl_certfile=str(tls.cert_file), ssl_keyfile=str(tls.key_file))

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        response = await self.stand_in.answer(Request(scope, receive))
        await response(scope, receive, send)


@pytest.fixture(scope="session")
def kube_server() -> Iterator[KubeServer]:
    with tempfile.TemporaryDirectory() as directory, KubeServer(make_tls(Path(directory))) as server:
        yield server


@pytest.fixture
def kube(kube_server: KubeServer) -> Iterator[KubeStandIn]:
    """The stand-in, fresh for each test: a healthy K3s cluster with no nodes yet."""
    kube_server.stand_in = KubeStandIn()
    yield kube_server.stand_in
