"""Benchmark the initial sync of the datastore plugins against a raw read of the same keys.

    .venv/bin/python benchmarks/datastore_sync.py [--count 10000] [--repeat 3]

Starts its own etcd (loopback, free ports, data in a temp dir that is removed
afterwards), writes ``--count`` realistic WorkloadEndpoints through the etcd plugin,
then measures, each in a fresh subprocess:

* the plugin's ``snapshot()`` (every synced kind at one revision, decoded into typed
  resources): wall time, peak RSS growth (``VmHWM``) and, in a second run, the peak of
  Python allocations (``tracemalloc``);
* ``etcdctl get --prefix`` of the same keys, output discarded: the floor (wall time).

Each backend is one function in ``BACKENDS`` taking the running datastore's
description and returning its measurements; a KDD plugin adds ``measure_kdd`` there.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
WEP_PREFIX = "/calico/resources/v3/projectcalico.org/workloadendpoints/"


# --- a local etcd ---------------------------------------------------------------------


class LocalEtcd:
    """A single-member etcd on free loopback ports in a temp dir; stopped by its pid."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pycalico-bench-etcd-"))
        socks = [socket.socket() for _ in range(2)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        self.client_port, self.peer_port = (s.getsockname()[1] for s in socks)
        for s in socks:
            s.close()
        self.endpoint = f"http://127.0.0.1:{self.client_port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LocalEtcd:
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = open(self.dir / "etcd.log", "wb")
        self.proc = subprocess.Popen(
            [ETCD, "--name", "bench", "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"bench={peer}", "--heartbeat-interval", "10", "--election-timeout", "100",
             "--quota-backend-bytes", str(4 * 2**30), "--logger", "zap", "--log-outputs", "stderr"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
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

    def etcdctl(self, *args: str) -> list[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        env["ETCDCTL_API"] = "3"
        return [ETCDCTL, f"--endpoints={self.endpoint}", *args], env


# --- realistic WorkloadEndpoints ------------------------------------------------------


def workload_endpoints(count: int, seed: int = 7) -> list:
    """``count`` WorkloadEndpoints as the CNI plugin writes them for Kubernetes pods,
    spread over 100 nodes and 20 namespaces."""
    from pycalico.core.resources import load_resources

    rng = random.Random(seed)
    apps = ["web", "api", "cache", "db", "worker", "frontend", "payments", "search"]
    docs = []
    for i in range(count):
        ns = f"team-{i % 20:02d}"
        app = apps[i % len(apps)]
        node = f"node-{i % 100:03d}"
        pod = f"{app}-{rng.getrandbits(40):010x}-{rng.getrandbits(20):05x}"
        name = f"{node}-k8s-{pod.replace('-', '--')}-eth0"
        ip = f"10.{64 + i // 65536}.{i // 256 % 256}.{i % 256}"
        docs.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "WorkloadEndpoint",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": {
                        "app": app,
                        "pod-template-hash": f"{rng.getrandbits(40):010x}",
                        "projectcalico.org/namespace": ns,
                        "projectcalico.org/orchestrator": "k8s",
                        "projectcalico.org/serviceaccount": "default",
                    },
                },
                "spec": {
                    "orchestrator": "k8s",
                    "node": node,
                    "containerID": f"{rng.getrandbits(256):064x}",
                    "pod": pod,
                    "endpoint": "eth0",
                    "serviceAccountName": "default",
                    "ipNetworks": [f"{ip}/32"],
                    "profiles": [f"kns.{ns}", f"ksa.{ns}.default"],
                    "interfaceName": f"cali{rng.getrandbits(44):011x}",
                    "mac": ":".join(f"{rng.getrandbits(8):02x}" for _ in range(6)),
                    "ports": [{"name": "http", "protocol": "TCP", "port": 8080, "hostPort": 0}],
                },
            }
        )
    return load_resources(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))


def populate(endpoint: str, count: int) -> float:
    """Write ``count`` WorkloadEndpoints through the plugin; returns the seconds taken."""
    from pycalico.plugins.datastore.etcd import Options, connect

    resources = workload_endpoints(count)
    store = connect(Options(endpoints=(endpoint,)))
    began = time.perf_counter()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(store.create, resources))
    finally:
        store.close()
    return time.perf_counter() - began


# --- measurements (each backend: one function) ----------------------------------------


def _subprocess_json(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_etcd(endpoint: str, repeat: int) -> dict:
    """The etcd plugin's snapshot(), each run in a fresh interpreter."""
    runs = [_subprocess_json(["--child", "etcd", "--endpoint", endpoint]) for _ in range(repeat)]
    traced = _subprocess_json(["--child", "etcd", "--endpoint", endpoint, "--tracemalloc"])
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "resources": runs[0]["resources"],
        "rss_growth_mb": statistics.median(r["rss_growth_mb"] for r in runs),
        "rss_peak_mb": statistics.median(r["rss_peak_mb"] for r in runs),
        "traced_peak_mb": traced["traced_peak_mb"],
    }


# A KDD plugin adds measure_kdd(endpoint, repeat) here, with its own populate step.
BACKENDS = {"etcd": measure_etcd}


def measure_etcdctl(etcd: LocalEtcd, repeat: int) -> dict:
    """``etcdctl get --prefix`` of the same keys, output discarded (wall time)."""
    cmd, env = etcd.etcdctl("get", "--prefix", WEP_PREFIX)
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True, timeout=300)
        times.append(time.perf_counter() - began)
    return {"seconds": statistics.median(times)}


def _peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM; getrusage's ru_maxrss would include
    the parent's, which a child inherits across fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(backend: str, endpoint: str, traced: bool) -> None:
    """Runs in the subprocess: one snapshot, measured; prints one JSON line."""
    import tracemalloc

    from pycalico.plugins.datastore.etcd import Options, connect

    store = connect(Options(endpoints=(endpoint,), timeout_seconds=60))
    store.ping()
    before = _peak_rss_kib()
    if traced:
        tracemalloc.start()
    began = time.perf_counter()
    snap = store.snapshot()
    seconds = time.perf_counter() - began
    out = {"seconds": seconds, "resources": len(snap.resources)}
    if traced:
        out["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    after = _peak_rss_kib()
    out["rss_growth_mb"] = (after - before) / 1024
    out["rss_peak_mb"] = after / 1024
    store.close()
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=sorted(BACKENDS), help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.endpoint, args.tracemalloc)
        return
    with LocalEtcd() as etcd:
        wrote = populate(etcd.endpoint, args.count)
        print(f"wrote {args.count} WorkloadEndpoints through the plugin in {wrote:.1f}s "
              f"({args.count / wrote:.0f}/s, 8 threads)")
        floor = measure_etcdctl(etcd, args.repeat)
        results = {name: fn(etcd.endpoint, args.repeat) for name, fn in BACKENDS.items()}
    print(f"\ninitial sync of {args.count} WorkloadEndpoints (median of {args.repeat}):")
    print(f"  {'etcdctl get --prefix (floor)':34} {floor['seconds']:7.3f} s")
    for name, r in results.items():
        assert r["resources"] == args.count, r
        ratio = r["seconds"] / floor["seconds"]
        print(f"  {name + ' plugin snapshot()':34} {r['seconds']:7.3f} s   x{ratio:.1f} the floor   "
              f"peak RSS {r['rss_peak_mb']:.0f} MB (+{r['rss_growth_mb']:.0f} MB), "
              f"traced peak {r['traced_peak_mb']:.0f} MB "
              f"({r['traced_peak_mb'] * 2**20 / args.count / 1024:.1f} KiB/resource)")


if __name__ == "__main__":
    main()
