"""`jushostit clusters verify`: prove tenant isolation on the live cluster, because a cluster can accept
NetworkPolicies and enforce none (K3s does exactly that when the ipset kernel modules are missing).

Two throwaway namespaces, A and B, get the baseline every tenant namespace gets (Pod Security `restricted`,
default deny in and out, traffic inside the namespace, DNS to kube-system, ingress from the ingress controller's
namespace, internet egress for pods that need it except private ranges, link-local (the metadata address) and
the cluster's own ranges). A small web server runs in B. Short-lived probe pods then try, and each exits 0 only
when it got through:

- same namespace: B reaches B's server (the control: without it, "blocked" would prove nothing);
- cross-tenant: A, allowed internet egress, reaches B's server: must be blocked;
- metadata: A reaches 169.254.169.254: must be blocked;
- DNS: A resolves kubernetes.default;
- egress: A fetches an internet address (allowed egress works).

A probe's outcome is its pod's phase (Succeeded or Failed), polled until a deadline; its log is the detail. The
namespaces are deleted at the end, whatever happened. Everything goes through the API's wire format.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lightkube import codecs
from lightkube.resources.core_v1 import Namespace
from lightkube.resources.core_v1 import Pod as PodResource

from jushostit.clusters.kube import ClusterApi
from jushostit.kit.errors import AppError

DEFAULT_IMAGE = "busybox:1.37"
DEFAULT_EGRESS_URL = "http://example.com/"
METADATA_URL = "http://169.254.169.254/"
SERVER_PORT = 8080
NOT_ENFORCED = (
    "NetworkPolicy is NOT enforced on this cluster: tenants can reach each other. On K3s, the network policy "
    "controller runs without enforcing anything when the ipset kernel modules are missing: load them (modprobe "
    "ip_set ip_set_hash_ip ip_set_hash_net xt_set), make them load at boot, restart K3s, and verify again."
)


# A tenant namespace's NetworkPolicies, as the runtime renders them for a namespace (given its name and labels):
# the verification applies exactly those, so it proves the isolation tenants get, not a copy of it.
TenantPolicies = Callable[[str, dict[str, str]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Outcome:
    name: str
    title: str
    passed: bool | None  # None: inconclusive
    detail: str


@dataclass(frozen=True)
class Report:
    outcomes: tuple[Outcome, ...]

    @property
    def passed(self) -> bool:
        return all(outcome.passed is True for outcome in self.outcomes)

    @property
    def enforcement_missing(self) -> bool:
        return any(o.name == "cross-tenant" and o.passed is False for o in self.outcomes)

    def lines(self) -> list[str]:
        marks = {True: "PASS", False: "FAIL", None: "????"}
        found = [f"[{marks[o.passed]}] {o.title}: {o.detail}" for o in self.outcomes]
        if self.enforcement_missing:
            found.append(NOT_ENFORCED)
        found.append("Isolation verified." if self.passed else "Isolation NOT verified.")
        return found


def namespace_labels(run: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": "jushostit", "jushostit.io/verify": run}


def namespace_manifest(name: str, run: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {
        **namespace_labels(run),
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest",
    }}}


def pod_manifest(name: str, image: str, command: Sequence[str], *, internet_label: tuple[str, str] | None,
                 server: bool = False) -> dict[str, Any]:
    """A pod Pod Security `restricted` admits: non-root, no privilege escalation, no capabilities, seccomp.
    `internet_label`: the label tenant pods that may reach the internet carry, for a probe that plays one."""
    labels = {"app.kubernetes.io/managed-by": "jushostit", "jushostit.io/probe": name}
    if internet_label is not None:
        labels[internet_label[0]] = internet_label[1]
    container: dict[str, Any] = {
        "name": "probe", "image": image, "command": list(command),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True},
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Always" if server else "Never", "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    if server:
        container["volumeMounts"] = [{"name": "www", "mountPath": "/www"}]
        spec["volumes"] = [{"name": "www", "emptyDir": {"sizeLimit": "1Mi"}}]
    else:
        spec["activeDeadlineSeconds"] = 120
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def _fetch(url: str) -> list[str]:
    return ["wget", "-q", "-T", "5", "-O", "-", url]


class Verification:
    def __init__(self, api: ClusterApi, policies: TenantPolicies, internet_label: tuple[str, str], *, image: str,
                 egress_url: str, timeout: float, poll_seconds: float) -> None:
        self.api, self.policies, self.internet_label = api, policies, internet_label
        self.image, self.egress_url = image, egress_url
        self.timeout, self.poll_seconds = timeout, poll_seconds
        self.run = secrets.token_hex(3)
        self.a, self.b = f"jushostit-verify-{self.run}-a", f"jushostit-verify-{self.run}-b"

    async def report(self) -> Report:
        try:
            for namespace in (self.a, self.b):
                await self._create(namespace_manifest(namespace, self.run))
                for policy in self.policies(namespace, namespace_labels(self.run)):
                    await self._create(policy, namespace)
            server_ip = await self._server()
            if server_ip is None:
                return Report((Outcome("server", "Probe server", None,
                                       f"it did not start within {self.timeout:.0f} s (is {self.image} pullable?)"),))
            server_url = f"http://{server_ip}:{SERVER_PORT}/"
            same, cross, metadata, dns, egress = await asyncio.gather(
                self._probe(self.b, "same-namespace", _fetch(server_url), internet=False),
                self._probe(self.a, "cross-tenant", _fetch(server_url), internet=True),
                self._probe(self.a, "metadata", _fetch(METADATA_URL), internet=True),
                self._probe(self.a, "dns", ["nslookup", "kubernetes.default.svc.cluster.local"], internet=False),
                self._probe(self.a, "egress", _fetch(self.egress_url), internet=True),
            )
            return Report((
                _expect(same, "same-namespace", "A pod reaches a pod of its own namespace", reached=True),
                _expect(cross, "cross-tenant", "Cross-tenant traffic is blocked", reached=False, control=same),
                _expect(metadata, "metadata", f"The metadata address {METADATA_URL} is blocked", reached=False),
                _expect(dns, "dns", "DNS resolves kubernetes.default", reached=True),
                _expect(egress, "egress", f"Allowed egress reaches {self.egress_url}", reached=True),
            ))
        finally:
            for namespace in (self.a, self.b):
                await self._delete_namespace(namespace)

    async def _create(self, manifest: dict[str, Any], namespace: str | None = None) -> None:
        async with self.api.answers():
            await self.api.client.create(codecs.from_dict(manifest), namespace=namespace)  # type: ignore[call-overload]

    async def _server(self) -> str | None:
        command = ["sh", "-c", f"echo ok > /www/index.html && exec httpd -f -p {SERVER_PORT} -h /www"]
        await self._create(pod_manifest("server", self.image, command, internet_label=None, server=True), self.b)
        pod = await self._until(self.b, "server", lambda p: p.status is not None and p.status.phase == "Running"
                                and bool(p.status.podIP))
        return pod.status.podIP if pod is not None and pod.status is not None else None

    async def _probe(self, namespace: str, name: str, command: list[str], *, internet: bool) -> tuple[str | None, str]:
        """(phase, log): Succeeded when the probe got through, Failed when not, None when it did not finish."""
        await self._create(pod_manifest(name, self.image, command,
                                        internet_label=self.internet_label if internet else None), namespace)
        pod = await self._until(namespace, name, lambda p: p.status is not None
                                and p.status.phase in ("Succeeded", "Failed"))
        if pod is None or pod.status is None:
            return None, f"did not finish within {self.timeout:.0f} s"
        async with self.api.answers():
            log = [line async for line in self.api.client.log(name, namespace=namespace, tail_lines=5, newlines=False)]
        return pod.status.phase, " | ".join(line.strip() for line in log if line.strip())[:300]

    async def _until(self, namespace: str, name: str, done: Callable[[PodResource], bool]) -> PodResource | None:
        deadline = time.monotonic() + self.timeout
        while True:
            async with self.api.answers():
                pod = await self.api.client.get(PodResource, name, namespace=namespace)
            if done(pod):
                return pod
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self.poll_seconds)  # the pod's status is the condition; the deadline bounds it

    async def _delete_namespace(self, namespace: str) -> None:
        try:
            async with self.api.answers():
                await self.api.client.delete(Namespace, namespace)
        except AppError:  # never created, or already going: nothing to clean up
            return


def _expect(result: tuple[str | None, str], name: str, title: str, *, reached: bool,
            control: tuple[str | None, str] | None = None) -> Outcome:
    phase, log = result
    if phase is None:
        return Outcome(name, title, None, log)
    got_through = phase == "Succeeded"
    detail = ("reached" if got_through else "not reached") + (f" ({log})" if log else "")
    if not got_through and not reached and control is not None and control[0] != "Succeeded":
        return Outcome(name, title, None, f"{detail}, but the server was not reachable from its own namespace "
                                          "either: inconclusive")
    return Outcome(name, title, got_through == reached, detail)


async def verify_isolation(api: ClusterApi, policies: TenantPolicies, internet_label: tuple[str, str], *,
                           image: str = DEFAULT_IMAGE, egress_url: str = DEFAULT_EGRESS_URL, timeout: float = 120.0,
                           poll_seconds: float = 2.0) -> Report:
    return await Verification(api, policies, internet_label, image=image, egress_url=egress_url, timeout=timeout,
                              poll_seconds=poll_seconds).report()

