"""What the manifests need to know about a cluster (the cluster registry keeps these per cluster, under the
same names). The defaults are K3s's own: Traefik in kube-system, CoreDNS labelled k8s-app=kube-dns, pod CIDR
10.42.0.0/16, service CIDR 10.43.0.0/16."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_DOMAIN = re.compile(r"^(?=.{1,200}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")
METADATA_ADDRESS = "169.254.169.254/32"  # the cloud's instance metadata (credentials): never reachable


@dataclass(frozen=True)
class ClusterSettings:
    base_domain: str  # instances are served at <slug>.<base_domain>
    # The cert-manager ClusterIssuer that signs their certificates; None: no TLS, instances are served on http.
    cert_issuer: str | None = "letsencrypt"
    ingress_class: str = "traefik"
    ingress_namespace: str = "kube-system"  # where the ingress controller runs: the only way in from outside
    dns_namespace: str = "kube-system"
    dns_pod_label: tuple[str, str] = ("k8s-app", "kube-dns")
    pod_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    # Not the internet either: node addresses (kubelet, the API server) and link-local. The pod and service
    # ranges and the metadata address are refused whatever this says.
    private_ranges: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16")
    storage_class: str | None = None  # None: the cluster's default (local-path on K3s)
    # The Pod Security policy version enforced, pinned: a cluster upgrade does not change what is admitted.
    pod_security_version: str = "v1.30"

    def __post_init__(self) -> None:
        if not _DOMAIN.match(self.base_domain):
            raise ValueError(f"base domain {self.base_domain!r} is not a lowercase DNS name")
        for cidr in (self.pod_cidr, self.service_cidr, *self.private_ranges):
            # Internet egress is allowed to 0.0.0.0/0 minus these: IPv4 only (IPv6 stays denied).
            if ipaddress.ip_network(cidr).version != 4:
                raise ValueError(f"{cidr} is not an IPv4 range")

    def instance_address(self, slug: str) -> tuple[str, str]:
        """(url, host) of an instance on this cluster: https://<slug>.<base domain>/ (http without an issuer)."""
        host = f"{slug}.{self.base_domain}"
        return f"{'https' if self.cert_issuer else 'http'}://{host}/", host

    def blocked_egress(self) -> list[str]:
        """The ranges internet egress excludes, each once, in a stable order."""
        return list(dict.fromkeys((self.pod_cidr, self.service_cidr, METADATA_ADDRESS, *self.private_ranges)))
