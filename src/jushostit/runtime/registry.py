"""Which runtime driver this process uses, and the address an instance is reached at."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from jushostit.config import Settings
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.protocol import RuntimeDriver


@cache
def _local(root: Path) -> LocalDriver:
    return LocalDriver(root)


def local_driver(settings: Settings) -> LocalDriver:
    """The local runtime of this data dir (one per process: it tracks the children it started)."""
    return _local(settings.data_dir.resolve() / "instances")


def driver_for(settings: Settings) -> RuntimeDriver:
    # Only the local runtime exists so far; the kubernetes driver plugs in here.
    return local_driver(settings)


def instance_address(settings: Settings, slug: str) -> tuple[str, str]:
    """(url, host) of an instance: on the local runtime `http://<slug>.localhost:<port>/`."""
    host = f"{slug}.localhost"
    return f"http://{host}:{settings.port}/", host
