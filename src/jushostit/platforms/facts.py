"""What a seat is made of, as the reconciler reads it, and the project limit it gets: pure."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SeatFacts:
    """A seat's record: its platform, the platform user's email, and its holder's role in the account (None
    once they are no longer a member: the seat is then kept deactivated)."""

    platform_id: uuid.UUID
    email: str
    role: str | None
    platform_limits: Mapping[str, int]  # the platform's project limit per role


def project_limit(role: str, template_limits: Mapping[str, int], platform_limits: Mapping[str, int]) -> int:
    """The seat template's limit for the role, else the platform's, else none (0): members work in the owner's
    projects."""
    return template_limits.get(role, platform_limits.get(role, 0))


_NOT_IN_A_NAMESPACE = re.compile(r"[^a-z0-9-]")


def project_namespace(project_name: str) -> str:
    """The Kubernetes namespace Hopsworks runs a project in (`KubeClientService.getKubeProjectName`): the name
    lower-cased, every character a namespace may not hold made a dash (project names have `_`, never `-`)."""
    return _NOT_IN_A_NAMESPACE.sub("-", project_name.lower())
