"""Shared by the etcd benchmarks (datastore_sync.py, watch_throughput.py,
ipam_rates.py, ipam_density.py): a local etcd to measure against, and the etcd plugin's
datastore connected to it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


class LocalEtcd:
    """A single-member etcd on free loopback ports in a temp dir (``prefix``), with short
    election timers; ``__enter__`` waits until it has a leader, ``__exit__`` kills it by its
    pid (SIGKILL) and removes the dir. ``quota_backend_bytes``: etcd's
    ``--quota-backend-bytes``, if given (etcd's default otherwise)."""

    def __init__(self, prefix: str = "pycalico-bench-etcd-", quota_backend_bytes: int | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        socks = [socket.socket() for _ in range(2)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        self.client_port, self.peer_port = (s.getsockname()[1] for s in socks)
        for s in socks:
            s.close()
        self.endpoint = f"http://127.0.0.1:{self.client_port}"
        self.quota = [] if quota_backend_bytes is None else ["--quota-backend-bytes", str(quota_backend_bytes)]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LocalEtcd:
        peer = f"http://127.0.0.1:{self.peer_port}"
        with open(self.dir / "etcd.log", "wb") as log:
            self.proc = subprocess.Popen(
                [ETCD, "--name", "bench", "--data-dir", str(self.dir / "data"),
                 "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"bench={peer}", "--heartbeat-interval", "10", "--election-timeout", "100",
                 *self.quota, "--logger", "zap", "--log-outputs", "stderr"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + 20
        with requests.Session() as s:
            s.trust_env = False
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"etcd exited: {(self.dir / 'etcd.log').read_text()[-2000:]}")
                try:
                    if int(s.post(f"{self.endpoint}/v3/maintenance/status", json={}, timeout=0.5).json()["leader"]):
                        return self
                except (requests.RequestException, ValueError, KeyError):
                    pass
                time.sleep(0.02)
        self.__exit__(None, None, None)
        raise RuntimeError("etcd did not start")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def etcdctl(self, *args: str) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of ``etcdctl <args>`` against this etcd (v3 API,
        no ``ETCDCTL_*`` settings inherited)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        env["ETCDCTL_API"] = "3"
        return [ETCDCTL, f"--endpoints={self.endpoint}", *args], env


def connect(endpoint: str, timeout_seconds: float = 30):
    """The etcd plugin's datastore on ``endpoint``."""
    from pycalico.plugins.datastore.etcd import Options, connect as etcd_connect

    return etcd_connect(Options(endpoints=(endpoint,), timeout_seconds=timeout_seconds))
