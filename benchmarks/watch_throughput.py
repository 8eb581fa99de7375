"""Benchmark watch delivery: the etcd plugin's watch against ``etcdctl watch --prefix``.

    .venv/bin/python benchmarks/watch_throughput.py [--rate 1000] [--seconds 5] [--endpoints 500]

Starts its own etcd (loopback, temp dir, removed afterwards) holding ``--endpoints``
WorkloadEndpoints. A writer process updates them at ``--rate`` writes/s for
``--seconds`` (each write a put of the endpoint's Calico JSON with a new label, through
etcd's gateway, from several threads on a fixed schedule), and records when it sent
each write and the revision etcd gave it. The watcher (this process) receives the
updates and notes when each arrived; lag is arrival minus send time for the same
revision (``time.monotonic``, one clock for both processes).

Two runs with a fresh writer each: the plugin's ``watch()`` (decoded into typed
resources), then ``etcdctl watch --prefix -w json`` (the floor: etcd's own client,
nothing decoded).
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import statistics
import subprocess
import threading
import time

import requests

from datastore_sync import LocalEtcd, populate, workload_endpoints  # noqa: E402 (benchmarks/ is on sys.path)

WRITER_THREADS = 16


def writer(endpoint: str, rate: float, seconds: float, count: int, start_at: float, out) -> None:
    """Put ``rate`` writes/s for ``seconds`` from ``WRITER_THREADS`` threads; sends
    [(revision, sent_at)] through ``out``."""
    from pycalico.plugins.datastore.etcd import keys

    values = []
    for res in workload_endpoints(count):
        key, value = keys.encode(res)
        values.append((key, json.loads(value)))
    total = int(rate * seconds)
    sent: list[tuple[int, float]] = []
    lock = threading.Lock()

    def run(first: int) -> None:
        session = requests.Session()
        session.trust_env = False
        for i in range(first, total, WRITER_THREADS):
            key, doc = values[i % len(values)]
            doc["metadata"]["labels"]["seq"] = str(i)
            body = {"key": base64.b64encode(key.encode()).decode(),
                    "value": base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()}
            due = start_at + i / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            at = time.monotonic()
            reply = session.post(f"{endpoint}/v3/kv/put", json=body, timeout=10).json()
            with lock:
                sent.append((int(reply["header"]["revision"]), at))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(WRITER_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.send(sent)
    out.close()


def start_writer(endpoint: str, args) -> tuple[multiprocessing.Process, object, float]:
    start_at = time.monotonic() + 1.0  # time for the writer to build its values
    receiver, sender = multiprocessing.Pipe(duplex=False)
    proc = multiprocessing.Process(
        target=writer, args=(endpoint, args.rate, args.seconds, args.endpoints, start_at, sender), daemon=True
    )
    proc.start()
    return proc, receiver, start_at


def report(name: str, arrived: dict[int, float], sent: list[tuple[int, float]], args) -> str:
    lags = [(arrived[rev] - at) * 1000 for rev, at in sent if rev in arrived]
    missing = len(sent) - len(lags)
    span = (max(arrived.values()) - min(arrived.values())) if len(arrived) > 1 else float("nan")
    written_span = max(at for _, at in sent) - min(at for _, at in sent)
    q = statistics.quantiles(lags, n=100) if len(lags) > 1 else [float("nan")] * 99
    return (f"  {name:28} {len(lags):6d} updates  {len(lags) / span:7.0f} delivered/s  "
            f"lag p50 {q[49]:6.1f} ms  p99 {q[98]:7.1f} ms  max {max(lags):7.1f} ms  missing {missing}"
            f"   (writer: {len(sent) / written_span:.0f} writes/s)")


def run_plugin(etcd: LocalEtcd, args) -> str:
    from pycalico.plugins.datastore.etcd import Options, connect

    store = connect(Options(endpoints=(etcd.endpoint,)))
    snap = store.snapshot(kinds=("WorkloadEndpoint",))
    stop = threading.Event()
    arrived: dict[int, float] = {}

    def watch() -> None:
        for event in store.watch(snap.revision, stop, kinds=("WorkloadEndpoint",)):
            arrived[event.revision] = time.monotonic()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    proc, receiver, _ = start_writer(etcd.endpoint, args)
    sent = receiver.recv()
    proc.join(30)
    deadline = time.monotonic() + 10
    while len(arrived) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(5)
    store.close()
    return report("etcd plugin watch()", arrived, sent, args)


def run_etcdctl(etcd: LocalEtcd, args) -> str:
    cmd, env = etcd.etcdctl("watch", "--prefix", "/calico/", "-w", "json")
    watcher = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    arrived: dict[int, float] = {}

    def read() -> None:
        for line in watcher.stdout:
            now = time.monotonic()
            try:
                response = json.loads(line)
            except ValueError:
                continue
            for event in response.get("Events") or []:
                arrived[int(event["kv"]["mod_revision"])] = now

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)  # the watch is established
    proc, receiver, _ = start_writer(etcd.endpoint, args)
    sent = receiver.recv()
    proc.join(30)
    deadline = time.monotonic() + 10
    while len(arrived) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    watcher.kill()
    watcher.wait(10)
    return report("etcdctl watch --prefix", arrived, sent, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="writes per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--endpoints", type=int, default=500, help="WorkloadEndpoints written in turn")
    args = parser.parse_args()
    with LocalEtcd() as etcd:
        populate(etcd.endpoint, args.endpoints)
        lines = [run_plugin(etcd, args), run_etcdctl(etcd, args)]
    print(f"\n{args.rate:.0f} writes/s for {args.seconds:g} s over {args.endpoints} WorkloadEndpoints:")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
