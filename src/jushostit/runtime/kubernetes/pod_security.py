"""Pod Security Standards, checked on rendered objects before they reach a cluster. Admission enforces them
only on Pods, so a Deployment the namespace's policy refuses would be accepted and never get a pod; checking
every pod template here turns that into an error that names the field.

The rules are those of Kubernetes' pod-security-admission ("baseline", then "restricted" on top of it),
for Linux pods.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

Level = Literal["restricted", "baseline"]

BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ping_group_range", "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_syncookies",
})
RESTRICTED_VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
})
SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def pod_template(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload (spec.template.spec: Deployment, StatefulSet, DaemonSet, Job), if it has one."""
    template = (manifest.get("spec") or {}).get("template") or {}
    spec = template.get("spec")
    return spec if isinstance(spec, dict) else None


def pod_violations(pod: dict[str, Any], level: Level) -> list[tuple[str, str]]:
    """(field, why) for each rule of `level` the pod spec breaks."""
    found = _baseline(pod)
    if level == "restricted":
        found += _restricted(pod)
    return found


def _containers(pod: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in CONTAINER_LISTS:
        for index, container in enumerate(pod.get(kind) or []):
            yield f"{kind}[{index}]", container


def _baseline(pod: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.append((field, "host namespaces are not allowed"))
    pod_security = pod.get("securityContext") or {}
    found += _security_context("securityContext", pod_security)
    for index, sysctl in enumerate(pod_security.get("sysctls") or []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append((f"securityContext.sysctls[{index}].name", f"sysctl {sysctl.get('name')} is not allowed"))
    for index, volume in enumerate(pod.get("volumes") or []):
        if "hostPath" in volume:
            found.append((f"volumes[{index}].hostPath", "hostPath volumes are not allowed"))
    for where, container in _containers(pod):
        security = container.get("securityContext") or {}
        if security.get("privileged"):
            found.append((f"{where}.securityContext.privileged", "privileged containers are not allowed"))
        found += _security_context(f"{where}.securityContext", security)
        for added in (security.get("capabilities") or {}).get("add") or []:
            if added not in BASELINE_CAPABILITIES:
                found.append((f"{where}.securityContext.capabilities.add", f"capability {added} is not allowed"))
        for index, port in enumerate(container.get("ports") or []):
            if port.get("hostPort"):
                found.append((f"{where}.ports[{index}].hostPort", "host ports are not allowed"))
    return found


def _security_context(where: str, security: dict[str, Any]) -> list[tuple[str, str]]:
    """The rules a pod's and a container's securityContext share."""
    found = []
    if (security.get("windowsOptions") or {}).get("hostProcess"):
        found.append((f"{where}.windowsOptions.hostProcess", "host processes are not allowed"))
    if (security.get("seccompProfile") or {}).get("type") == "Unconfined":
        found.append((f"{where}.seccompProfile.type", "seccomp must not be Unconfined"))
    if (security.get("appArmorProfile") or {}).get("type") == "Unconfined":
        found.append((f"{where}.appArmorProfile.type", "AppArmor must not be Unconfined"))
    selinux = security.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES:
        found.append((f"{where}.seLinuxOptions.type", f"SELinux type {selinux['type']} is not allowed"))
    for field in ("user", "role"):
        if selinux.get(field):
            found.append((f"{where}.seLinuxOptions.{field}", "custom SELinux users and roles are not allowed"))
    if security.get("procMount", "Default") != "Default":
        found.append((f"{where}.procMount", "only the default /proc mount is allowed"))
    return found


def _restricted(pod: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for index, volume in enumerate(pod.get("volumes") or []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            found.append((f"volumes[{index}]", f"volume type {', '.join(sorted(kinds))} is not allowed"))
    pod_security = pod.get("securityContext") or {}
    if pod_security.get("runAsUser") == 0:
        found.append(("securityContext.runAsUser", "must not be 0 (root)"))
    for where, container in _containers(pod):
        security = container.get("securityContext") or {}
        if security.get("allowPrivilegeEscalation") is not False:
            found.append((f"{where}.securityContext.allowPrivilegeEscalation", "must be false"))
        # Set on the container, or else on the pod.
        if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True:
            found.append((f"{where}.securityContext.runAsNonRoot", "must be true (here or on the pod)"))
        if security.get("runAsUser") == 0:
            found.append((f"{where}.securityContext.runAsUser", "must not be 0 (root)"))
        seccomp = (security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get("type")
        if seccomp not in SECCOMP_TYPES:
            found.append((f"{where}.securityContext.seccompProfile.type",
                          "must be RuntimeDefault or Localhost (here or on the pod)"))
        capabilities = security.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append((f"{where}.securityContext.capabilities.drop", "must include ALL"))
        for added in capabilities.get("add") or []:
            if added in BASELINE_CAPABILITIES - RESTRICTED_CAPABILITIES:  # the others are baseline's to name
                found.append((f"{where}.securityContext.capabilities.add",
                              f"capability {added} is not allowed (only NET_BIND_SERVICE)"))
    return found
