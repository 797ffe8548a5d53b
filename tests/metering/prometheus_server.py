"""A real Prometheus (Debian's `prometheus` package) on a free loopback port, serving synthetic series.

The series are written as OpenMetrics and turned into TSDB blocks by `promtool tsdb create-blocks-from
openmetrics` before the server starts, so a test knows every sample Prometheus holds. promtool drops
out-of-order and duplicate samples without failing, so the number of samples it reports is checked against
the number written.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

READY_SECONDS = 60.0
STOP_SECONDS = 10.0
MISSING = "Debian's prometheus package is not installed (apt-get install prometheus); .ci/run installs it"


@dataclass(frozen=True)
class Series:
    """One time series: its sample name (a counter's ends in `_total`), labels and (unix second, value) samples.
    Values are written as given, so `"NaN"` or `"+Inf"` reach Prometheus as such."""

    name: str
    kind: str  # counter | gauge
    labels: dict[str, str]
    samples: list[tuple[int, str]]


def binaries() -> tuple[str, str]:
    """The paths of `prometheus` and `promtool`, or skip the test when Debian's package is not installed."""
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        pytest.skip(MISSING)
    return prometheus, promtool


def openmetrics(series: Iterable[Series]) -> tuple[str, int]:
    """The OpenMetrics text of the series (second-resolution timestamps: promtool reads them as seconds, so
    milliseconds would land thousands of years ahead) and its number of samples."""
    families: dict[tuple[str, str], list[Series]] = {}
    for one in series:
        family = one.name.removesuffix("_total") if one.kind == "counter" else one.name
        families.setdefault((family, one.kind), []).append(one)
    lines: list[str] = []
    count = 0
    for (family, kind), members in families.items():
        lines.append(f"# TYPE {family} {kind}")
        for one in members:
            labels = ",".join(f'{key}="{value}"' for key, value in one.labels.items())
            for timestamp, value in one.samples:
                lines.append(f"{one.name}{{{labels}}} {value} {timestamp}")
                count += 1
    lines.append("# EOF")
    return "\n".join(lines) + "\n", count


def samples_in_blocks(promtool_output: str) -> int:
    """The sum of the NUM SAMPLES column of the blocks table promtool prints after writing them."""
    lines = [line for line in promtool_output.splitlines() if line.strip()]
    header_at = next(i for i, line in enumerate(lines) if line.startswith("BLOCK ULID"))
    column = re.split(r"\s{2,}", lines[header_at].strip()).index("NUM SAMPLES")
    return sum(int(line.split()[column]) for line in lines[header_at + 1 :])


def write_blocks(promtool: str, series: Iterable[Series], directory: Path) -> None:
    text, written = openmetrics(series)
    source = directory / "series.om"
    source.write_text(text)
    tsdb = directory / "tsdb"
    created = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)],
                             capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr
    stored = samples_in_blocks(created.stdout)
    assert stored == written, f"promtool stored {stored} of the {written} samples written:\n{created.stdout}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrometheusServer:
    """A Prometheus process over the blocks written in `directory`; its output goes to `directory/prometheus.log`."""

    def __init__(self, directory: Path, series: Iterable[Series]) -> None:
        self.directory = directory
        self.prometheus, promtool = binaries()
        write_blocks(promtool, series, directory)
        self.log = directory / "prometheus.log"
        self.base_url = f"http://127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.directory / "prometheus.yml"
        config.write_text("scrape_configs: []\n")
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [self.prometheus, f"--config.file={config}", f"--storage.tsdb.path={self.directory / 'tsdb'}",
                 f"--web.listen-address={self.base_url.removeprefix('http://')}",
                 "--storage.tsdb.retention.time=100y"],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        self._wait_until_ready()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.base_url}/-/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)  # the pace of the polling, not a stand-in for readiness
        self.stop()
        pytest.fail(f"prometheus was not ready within {READY_SECONDS:.0f} s:\n{self.log_tail()}")


@contextlib.contextmanager
def running_prometheus(directory: Path, series: Iterable[Series]) -> Iterator[PrometheusServer]:
    """A started Prometheus over `series`, stopped on leaving."""
    server = PrometheusServer(directory, series)
    server.start()
    try:
        yield server
    finally:
        server.stop()
