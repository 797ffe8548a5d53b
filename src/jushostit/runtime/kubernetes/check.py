"""Every rendered object checked twice before it can reach a cluster: against the Kubernetes API's own schema
(kubernetes-validate, strict: an unknown field is an error) for the oldest version we support and the newest
the package knows, and every pod template against the Pod Security level its namespace enforces.

kubernetes-validate bundles every version's schemas in the package and reads them from disk; nothing is
fetched. Its `validate` builds a validator from those files on every call (about 8 ms an object); here one is
built per (kind, apiVersion, version) and kept (about 0.5 ms an object).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import jsonschema
from kubernetes_validate import utils
from referencing import Registry, Resource

from jushostit.runtime.kubernetes.pod_security import Level, pod_template, pod_violations

OLDEST_VERSION = "1.30"
VERSIONS = (OLDEST_VERSION, utils.major_minor(utils.latest_version()))
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
_DNS_1123_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_1035_LABEL = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Violation:
    object: str  # Kind/name
    field: str  # where in the object, e.g. spec.template.spec.containers[0].securityContext.runAsNonRoot
    message: str

    def __str__(self) -> str:
        return f"{self.object}: {self.field}: {self.message}"


def violations(manifests: list[dict[str, Any]], versions: tuple[str, ...] = VERSIONS) -> list[Violation]:
    """Names and labels the API server would refuse, schema problems (the first of each object, per version)
    and Pod Security problems."""
    found = []
    for manifest in manifests:
        found += metadata_violations(manifest)
        for version in versions:
            found += schema_violations(manifest, version)
    return found + pod_security_violations(manifests)


def metadata_violations(manifest: dict[str, Any]) -> list[Violation]:
    """What the schemas do not say: a name must be a DNS-1123 label (every kind we render needs one, Services
    starting with a letter) and label values at most 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends."""
    metadata = manifest["metadata"]
    found = []
    name_rule = _DNS_1035_LABEL if manifest["kind"] == "Service" else _DNS_1123_LABEL
    if not name_rule.match(metadata["name"]):
        found.append(Violation(_named(manifest), "metadata.name", "not a DNS label (at most 63 characters of a-z, "
                                                                  "0-9 and '-', alphanumeric at both ends)"))
    for key, value in metadata.get("labels", {}).items():
        if not _LABEL_VALUE.match(value):
            found.append(Violation(_named(manifest), f"metadata.labels.{key}", f"{value!r} is not a label value"))
    return found


def pod_security_violations(manifests: list[dict[str, Any]], default: Level = "restricted") -> list[Violation]:
    """Each pod template against the level its namespace enforces (the Namespace among `manifests`, else
    `default`)."""
    enforced: dict[str, Level] = {
        m["metadata"]["name"]: m["metadata"].get("labels", {}).get(ENFORCE_LABEL, default)
        for m in manifests if m["kind"] == "Namespace"
    }
    found = []
    for manifest in manifests:
        pod = pod_template(manifest)
        if pod is not None:
            level = enforced.get(manifest["metadata"].get("namespace", ""), default)
            found += [Violation(_named(manifest), f"spec.template.spec.{field}", message)
                      for field, message in pod_violations(pod, level)]
    return found


def schema_violations(manifest: dict[str, Any], version: str) -> list[Violation]:
    validator = _validator(manifest["kind"], manifest["apiVersion"], version)
    if validator is None:
        return [Violation(_named(manifest), "kind", f"Kubernetes {version} has no {manifest['kind']} in "
                                                    f"{manifest['apiVersion']}")]
    error = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
    if error is None:
        return []
    return [Violation(_named(manifest), _path(error.absolute_path) or "(the object)",
                      f"{error.message} (Kubernetes {version})")]


def _named(manifest: dict[str, Any]) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def _path(parts: Any) -> str:
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


@cache
def _schemas(version: str) -> str:
    """The folder of the strict schemas kubernetes-validate bundles for a major.minor version."""
    bundled = [v for v in utils.all_versions() if utils.major_minor(v) == version]
    if not bundled:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version}")
    return f"kubernetes-json-schema/v{bundled[-1]}-local-strict"


@cache
def _definitions(version: str) -> Registry[Any]:
    return Resource.from_contents(utils.schema_contents(f"{_schemas(version)}/_definitions.json", version)) @ Registry()


@cache
def _validator(kind: str, api_version: str, version: str) -> Any:
    # Files are named as kubernetes-validate names them: networking.k8s.io/v1 → networking-v1.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = utils.schema_contents(f"{_schemas(version)}/{kind.lower()}-{group_version}.json", version)
    except FileNotFoundError:
        return None
    return jsonschema.Draft202012Validator(schema, registry=Resource.from_contents(schema) @ _definitions(version))
