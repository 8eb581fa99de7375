"""calico-typha replicas in the lab's control-plane namespace (``calico-lab up --typha N``).

Every replica shares the cp namespace and address, so replica i (from 0) takes Typha's
default ports plus i: sync 5473+i, health 9098+i, metrics 9093+i.
"""

from __future__ import annotations

import http.client
import sys
from pathlib import Path

from pycalico.core import config as cfg
from pycalico.core import health

from . import netns
from .state import TyphaRecord

SYNC_PORT = 5473
HEALTH_PORT = 9098
METRICS_PORT = 9093
# One more and the metrics ports (9093+i) would reach the first health port (9098).
MAX_REPLICAS = HEALTH_PORT - METRICS_PORT


def plan(state_dir: Path, cp_ip: str, replicas: int) -> list[TyphaRecord]:
    """The replicas' names, ports and config paths."""
    records = []
    for i in range(replicas):
        name = f"calico-typha-{i + 1}"
        records.append(TyphaRecord(
            name=name, host=cp_ip, port=SYNC_PORT + i, health_port=HEALTH_PORT + i,
            metrics_port=METRICS_PORT + i, config_path=str(state_dir / "typha" / name / "calico.toml")))
    return records


def argv(typha: TyphaRecord) -> list[str]:
    return [sys.executable, "-m", "pycalico.core.typha.main", "--config", typha.config_path]


def readiness(netns_name: str, typha: TyphaRecord) -> str | None:
    """None when the replica answers /readiness with 200, else why not (from inside
    ``netns_name``, where its health listener is)."""
    endpoint = cfg.read(typha.config_path).typha.server.health
    return netns.run_in_netns(netns_name, lambda: health.probe(endpoint, "/readiness", timeout=2), timeout=10)


def metric(netns_name: str, typha: TyphaRecord, name: str) -> float | None:
    """The value of the unlabelled sample ``name`` on the replica's /metrics; None when
    it does not answer."""

    def scrape() -> str:
        connection = http.client.HTTPConnection(typha.host, typha.metrics_port, timeout=2)
        try:
            connection.request("GET", "/metrics")
            return connection.getresponse().read().decode()
        finally:
            connection.close()

    try:
        text = netns.run_in_netns(netns_name, scrape, timeout=10)
    except (OSError, TimeoutError):
        return None
    return next((float(line.split()[1]) for line in text.splitlines() if line.split(" ", 1)[0] == name), None)
