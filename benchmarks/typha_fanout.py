"""Benchmark Typha's fan-out: how long a datastore write takes to reach every agent
through one calico-typha, against every agent watching etcd itself.

    .venv/bin/python benchmarks/typha_fanout.py [--agents 500] [--direct-agents 500]
        [--writes 40] [--rate 4] [--resources 100]

One etcd (loopback, temp dir, removed afterwards) holds ``--resources``
GlobalNetworkSets. Two runs, each with its own agents in this process (one thread
each, the reading side calico-node's sync uses: a snapshot, then the watch):

* via Typha: ``calico-typha`` in its own process on that etcd; ``--agents``
  ``TyphaClient``s connect to it.
* reference: ``--direct-agents`` etcd plugin stores, each with its own snapshot and
  watch, as agents without Typha run.

Once every agent is in sync, a writer process creates ``--writes`` GlobalNetworkSets at
``--rate`` per second and records when it sent each; every agent notes when each one
arrived (``time.monotonic``, one clock for all processes). Printed: the latency of each
delivery (write sent -> one agent has it) and of each write to the last agent, p50 and
p99; the number of watches etcd holds (``etcd_debugging_mvcc_watcher_total``) in each
run; and the CPU etcd, Typha and the agents' process spent while the writes went out.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import requests

import _etcd  # benchmarks/ is on sys.path (the script's own directory)
from _machine import load_line

TYPHA = Path(sys.executable).parent / "calico-typha"
TICK = os.sysconf("SC_CLK_TCK")


def network_set(name: str):
    from pycalico.core.resources.codec import load_resources

    (resource,) = load_resources(f"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\n"
                                 f"metadata: {{name: {name}}}\nspec: {{nets: [198.51.100.0/28]}}\n")
    return resource


def writer(endpoint: str, prefix: str, count: int, rate: float, start_at: float, out) -> None:
    """Create ``count`` network sets on a fixed schedule; send back (name, sent at)."""
    store = _etcd.connect(endpoint)
    sent = []
    for i in range(count):
        time.sleep(max(0.0, start_at + i / rate - time.monotonic()))
        name = f"{prefix}{i}"
        resource = network_set(name)
        sent.append((name, time.monotonic()))
        store.create(resource)
    store.close()
    out.send(sent)
    out.close()


class Follower:
    """One agent: snapshot, then the watch; notes when each probe arrives."""

    def __init__(self, store, prefix: str):
        self.store = store
        self.prefix = prefix
        self.synced = threading.Event()
        self.stop = threading.Event()
        self.seen: dict[str, float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        snapshot = self.store.snapshot()
        self.synced.set()
        for event in self.store.watch(snapshot.revision, self.stop):
            name = event.resource.metadata.name
            if name.startswith(self.prefix):
                self.seen.setdefault(name, time.monotonic())

    def close(self) -> None:
        self.stop.set()
        self.store.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def watchers(endpoint: str) -> int:
    text = requests.get(f"{endpoint}/metrics", timeout=5).text
    return int(float(next(line.split()[1] for line in text.splitlines()
                          if line.startswith("etcd_debugging_mvcc_watcher_total "))))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(label: str, etcd: _etcd.LocalEtcd, stores, args, typha_pid: int | None = None) -> dict:
    prefix = f"probe-{label}-"
    began = time.monotonic()
    followers = [Follower(store, prefix) for store in stores]
    for f in followers:
        if not f.synced.wait(120):
            raise RuntimeError(f"{label}: an agent did not sync within 120 s")
    synced_in = time.monotonic() - began
    time.sleep(1.0)  # every watch is established
    held = watchers(etcd.endpoint)
    receiver, sender = multiprocessing.Pipe(duplex=False)
    start_at = time.monotonic() + 0.5
    cpu = {"etcd": cpu_seconds(etcd.proc.pid), "agents": time.process_time()}
    if typha_pid is not None:
        cpu["typha"] = cpu_seconds(typha_pid)
    proc = multiprocessing.get_context("spawn").Process(
        target=writer, args=(etcd.endpoint, prefix, args.writes, args.rate, start_at, sender))
    proc.start()
    sent = dict(receiver.recv())
    proc.join()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(len(f.seen) < len(sent) for f in followers):
        time.sleep(0.1)
    cpu["etcd"] = cpu_seconds(etcd.proc.pid) - cpu["etcd"]
    cpu["agents"] = time.process_time() - cpu["agents"]
    if typha_pid is not None:
        cpu["typha"] = cpu_seconds(typha_pid) - cpu["typha"]
    deliveries = [f.seen[name] - at for f in followers for name, at in sent.items() if name in f.seen]
    to_all = [max(f.seen[name] for f in followers) - at for name, at in sent.items()
              if all(name in f.seen for f in followers)]
    missing = len(sent) * len(followers) - len(deliveries)
    for f in followers:
        f.close()
    return {"label": label, "agents": len(followers), "synced_in": synced_in, "watchers": held,
            "deliveries": deliveries, "to_all": to_all, "missing": missing, "cpu": cpu}


def start_typha(etcd: _etcd.LocalEtcd) -> tuple[subprocess.Popen, str]:
    socks = [socket.socket() for _ in range(2)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    port, health = (s.getsockname()[1] for s in socks)
    for s in socks:
        s.close()
    config = etcd.dir / "calico.toml"
    config.write_text(f'[datastore]\ntype = "etcd"\n[datastore.etcd]\nendpoints = ["{etcd.endpoint}"]\n'
                      f'[logging]\nlevel = "warning"\n[typha.server]\nhost = "127.0.0.1"\nport = {port}\n'
                      f'[typha.server.health]\nhost = "127.0.0.1"\nport = {health}\n')
    with open(etcd.dir / "typha.log", "wb") as log:
        proc = subprocess.Popen([str(TYPHA), "--config", str(config)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/readiness", timeout=1):
                return proc, f"127.0.0.1:{port}"
        except (urllib.error.URLError, OSError):
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"calico-typha did not get ready: {(etcd.dir / 'typha.log').read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def via_typha(etcd: _etcd.LocalEtcd, args) -> dict:
    from pycalico.core import config as cfg
    from pycalico.core.typha.client import TyphaClient

    proc, address = start_typha(etcd)
    try:
        settings = cfg.Typha(addresses=(address,))
        return measure("typha", etcd, [TyphaClient(settings, f"node{i}") for i in range(args.agents)], args,
                       typha_pid=proc.pid)
    finally:
        stop(proc)


def direct(etcd: _etcd.LocalEtcd, args) -> dict:
    return measure("direct", etcd, [_etcd.connect(etcd.endpoint) for _ in range(args.direct_agents)], args)


def line(r: dict) -> str:
    ms = [1000 * d for d in r["deliveries"]]
    to_all = [1000 * d for d in r["to_all"]]
    cpu = ", ".join(f"{k} {v:.2f}s" for k, v in r["cpu"].items())
    return (f"{r['label']:>7}: {r['agents']} agents (in sync in {r['synced_in']:.1f}s), etcd watches {r['watchers']}; "
            f"write -> agent p50 {percentile(ms, 0.5):.1f} ms p99 {percentile(ms, 0.99):.1f} ms; "
            f"write -> all agents p50 {percentile(to_all, 0.5):.1f} ms p99 {percentile(to_all, 0.99):.1f} ms; "
            f"missing {r['missing']}; CPU while writing: {cpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=500, help="agents on Typha")
    parser.add_argument("--direct-agents", type=int, default=500, help="agents each watching etcd (reference)")
    parser.add_argument("--writes", type=int, default=40)
    parser.add_argument("--rate", type=float, default=4.0, help="writes per second")
    parser.add_argument("--resources", type=int, default=100, help="GlobalNetworkSets in the datastore")
    args = parser.parse_args()
    if not TYPHA.exists() or not shutil.which(_etcd.ETCD):
        sys.exit(f"needs {TYPHA} (pip install -e .) and {_etcd.ETCD}")
    began = time.perf_counter()
    print(f"start: {load_line()}")
    with _etcd.LocalEtcd() as etcd:
        store = _etcd.connect(etcd.endpoint)
        for i in range(args.resources):
            store.create(network_set(f"base-{i}"))
        store.close()
        typha = via_typha(etcd, args)
        print(line(typha), flush=True)
        reference = direct(etcd, args)
        print(line(reference), flush=True)
    print(f"end: {load_line()}; {time.perf_counter() - began:.0f}s in all")
    t, d = (statistics.median(r["deliveries"]) for r in (typha, reference))
    ta, da = (percentile(r["to_all"], 0.99) for r in (typha, reference))
    print(f"\nratios (Typha / direct): write -> agent p50 {t / d:.2f}x; write -> all agents p99 {ta / da:.2f}x; "
          f"etcd watches {typha['watchers']} vs {reference['watchers']}; "
          f"etcd CPU {typha['cpu']['etcd']:.2f}s vs {reference['cpu']['etcd']:.2f}s")


if __name__ == "__main__":
    main()
