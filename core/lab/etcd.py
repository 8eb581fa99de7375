"""Running a single-member etcd inside the lab's control-plane namespace."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from . import netns

ETCD_BIN = "/usr/bin/etcd"
CLIENT_PORT = 2379
PEER_PORT = 2380

# Lab traffic must never go through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def client_url(ip: str) -> str:
    return f"http://{ip}:{CLIENT_PORT}"


def argv(member: str, ip: str, data_dir: Path) -> list[str]:
    peer = f"http://{ip}:{PEER_PORT}"
    client = client_url(ip)
    return [
        ETCD_BIN,
        "--name", member,
        "--data-dir", str(data_dir),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"{member}={peer}",
        "--initial-cluster-state", "new",
        "--logger", "zap",
        "--log-outputs", "stderr",
    ]


def http(netns_name: str, method: str, url: str, body: dict | None = None,
         timeout: float = 2.0) -> dict:
    """A JSON request made from inside `netns_name` (etcd's v3 gateway, /health)."""

    def call() -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with _opener.open(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")

    return netns.run_in_netns(netns_name, call, timeout=timeout + 5)


def healthy(netns_name: str, endpoint: str, timeout: float = 1.0) -> bool:
    try:
        reply = http(netns_name, "GET", f"{endpoint}/health", timeout=timeout)
    except (OSError, ValueError, TimeoutError):
        return False
    return str(reply.get("health")) == "true"
