from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, field_validator

from jushostit.kit.schemas import RequestModel, ResponseModel

KUBECONFIG_MAX_LENGTH = 65_536
DEFAULT_CPU_OVERCOMMIT = 3.0
DEFAULT_MEMORY_OVERCOMMIT = 1.0
DEFAULT_HEADROOM_PERCENT = 30

# A DNS label, as Kubernetes names namespaces and as we name clusters.
DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length=63)]
# A DNS subdomain: node names, ingress classes, cert-manager issuers.
DnsSubdomain = Annotated[
    str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$", max_length=253)
]
# Instances are served at <slug>.<base domain>: the base leaves room for a slug within DNS's 253.
BaseDomain = Annotated[
    str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$", max_length=190,
               description="Instances are served at <slug>.<base domain>; lower case", examples=["apps.example.com"])
]
Cidr = Annotated[str, Field(max_length=43, pattern=r"^[0-9./]+$", description="An IPv4 range, e.g. 10.42.0.0/16")]
Overcommit = Annotated[float, Field(ge=1, le=10, description="How far the sum of limits may exceed allocatable")]


class ClusterCreate(RequestModel):
    """A K3s (or any Kubernetes) cluster to place accounts on. Its kubeconfig is stored encrypted and never
    returned; it must hold inline credentials (a token, or client certificate data) and an https server."""

    name: DnsLabel
    kubeconfig: str = Field(min_length=1, max_length=KUBECONFIG_MAX_LENGTH,
                            description="The kubeconfig's text (YAML or JSON); its current context is used")
    base_domain: BaseDomain
    ingress_class: DnsSubdomain = "traefik"
    cert_issuer: DnsSubdomain | None = Field(default="letsencrypt", description="A cert-manager ClusterIssuer")
    ingress_namespace: DnsLabel = Field(default="kube-system", description="Where the ingress controller runs")
    pod_cidr: Cidr = "10.42.0.0/16"
    service_cidr: Cidr = "10.43.0.0/16"
    cpu_overcommit: Overcommit = DEFAULT_CPU_OVERCOMMIT
    memory_overcommit: Overcommit = DEFAULT_MEMORY_OVERCOMMIT
    headroom_percent: int = Field(default=DEFAULT_HEADROOM_PERCENT, ge=0, le=90,
                                  description="Share of every node's budget kept free")

    @field_validator("pod_cidr", "service_cidr")
    @classmethod
    def ipv4_range(cls, value: str) -> str:
        try:
            network = ipaddress.IPv4Network(value)
        except ValueError:
            raise ValueError("must be an IPv4 range with its host bits zero, e.g. 10.42.0.0/16") from None
        return str(network)


class PolicyRead(ResponseModel):
    cpu_overcommit: float
    memory_overcommit: float
    headroom_percent: int


class Utilisation(ResponseModel):
    """What is placed against what the policy allows (the budget: allocatable x overcommit for limits,
    allocatable for requests, each less the headroom)."""

    cpu_requested_millicores: int
    cpu_requests_budget_millicores: int
    memory_requested_mib: int
    memory_requests_budget_mib: int
    cpu_limits_millicores: int
    cpu_limits_budget_millicores: int
    memory_limits_mib: int
    memory_limits_budget_mib: int
    pods: int
    pods_allocatable: int
    burstable_pods_left: int = Field(
        description="How many more pods of the default shape (0.25 vCPU / 512 MiB requested, 1 vCPU / 1 GiB "
        "limits) fit")


class NodeRead(ResponseModel):
    name: str
    ready: bool
    conditions: dict[str, str]
    unschedulable: bool
    no_schedule_taints: list[str]
    cordoned: bool
    takes_placements: bool
    refusal: str | None = Field(description="Why the node takes no placements; null when it does")
    cpu_capacity_millicores: int
    memory_capacity_mib: int
    cpu_allocatable_millicores: int
    memory_allocatable_mib: int
    utilisation: Utilisation
    observed_at: datetime


class ClusterRead(ResponseModel):
    id: uuid.UUID
    name: str
    api_server: str
    tls_verified: bool = Field(description="False when the kubeconfig skips TLS verification")
    kubernetes_version: str
    base_domain: str
    ingress_class: str
    cert_issuer: str | None
    ingress_namespace: str
    pod_cidr: str
    service_cidr: str
    policy: PolicyRead
    cordoned: bool
    accounts: int = Field(description="Accounts placed on the cluster")
    observed_at: datetime | None = Field(description="The last node observation that succeeded")
    observe_error: str | None
    utilisation: Utilisation = Field(description="Sums over the nodes that take placements")
    nodes: list[NodeRead]
    created_at: datetime


class ClusterList(ResponseModel):
    items: list[ClusterRead]
