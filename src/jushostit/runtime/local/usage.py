"""What the local runtime's instances use, read off the machine: the CPU seconds and memory of each running
instance's processes (psutil), the disk its directory holds, and the bytes the router relayed to and from it.

CPU seconds and bytes are cumulative counters, each with an identity (a process and its start time; the
router's boot): metering stores the difference between two readings, and a new identity is a counter that
started again from zero.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psutil

from jushostit.runtime.local.driver import read_run_record


@dataclass(frozen=True)
class InstanceUsage:
    account_id: uuid.UUID
    instance_id: uuid.UUID
    disk_bytes: int
    process: str | None = None  # "<pid>:<start time>" while running, else None
    started: float | None = None  # the process's start (seconds since the epoch)
    cpu_seconds: Decimal | None = None  # user + system, the process and its children (live and reaped)
    memory_bytes: int | None = None  # resident set of the process and its children


def directory_bytes(directory: Path) -> int:
    """The space the files under a directory take on disk (allocated blocks, as `du` counts them)."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue  # removed while we walked
    return total


def _process_usage(pid: int, started: float) -> tuple[Decimal, int] | None:
    """(CPU seconds, resident bytes) of a process and its children; None when it is gone or not the one
    that started at `started` (a reused pid)."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) >= 0.01:
            return None
        with process.oneshot():
            times = process.cpu_times()
            cpu = times.user + times.system + times.children_user + times.children_system
            memory = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                child_times = child.cpu_times()
                cpu += child_times.user + child_times.system
                memory += child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return Decimal(str(round(cpu, 6))), memory


def read_usage(root: Path) -> list[InstanceUsage]:
    """Every instance directory under the runtime's root (`<account>/<instance>`): its disk, and its process's
    usage while it runs. Blocking: call it in a thread."""
    found = []
    for account_dir in sorted(root.iterdir()) if root.exists() else []:
        if not account_dir.is_dir():
            continue
        for directory in sorted(account_dir.iterdir()):
            try:
                account_id, instance_id = uuid.UUID(account_dir.name), uuid.UUID(directory.name)
            except ValueError:
                continue
            usage = InstanceUsage(account_id, instance_id, directory_bytes(directory))
            record = read_run_record(directory)
            if record is not None and (measured := _process_usage(record.pid, record.started)) is not None:
                usage = InstanceUsage(account_id, instance_id, usage.disk_bytes, f"{record.pid}:{record.started}",
                                      record.started, *measured)
            found.append(usage)
    return found

