"""Benchmark watch delivery: each datastore plugin's watch() against a raw watch of the same data.

    .venv/bin/python benchmarks/watch_throughput.py [--backend etcd|kubernetes|all]
        [--rate 1000] [--seconds 5] [--endpoints 500]

A writer process updates ``--endpoints`` WorkloadEndpoints in turn at ``--rate``
writes/s for ``--seconds`` (from several threads on a fixed schedule) and records when
it sent each write and the revision the datastore gave it. The watcher (this process)
receives the updates and notes when each arrived; lag is arrival minus send time for
the same revision (``time.monotonic``, one clock for both processes). Each backend
makes two runs with a fresh writer each: the plugin's ``watch()`` (decoded into typed
resources), then the floor (nothing decoded beyond JSON):

* etcd: its own etcd (loopback, temp dir, removed afterwards); each write a put of
  the endpoint's Calico JSON with a new label, through etcd's gateway. Floor:
  ``etcdctl watch --prefix -w json``.
* kubernetes (KDD): the API server stand-in of ``tests/kubeapi`` (test code; a real
  kube-apiserver cannot be installed on these machines) in its own process, holding
  ``--endpoints`` Pods (see ``_kdd.py``); each write a JSON merge patch of one pod's
  annotation. The plugin watches WorkloadEndpoints (a watch of /api/v1/pods, each
  event converted); the floor is the ``kubernetes`` client's ``Watch().stream`` of
  /api/v1/pods with ``deserialize=False`` (JSON dicts, no model classes).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import statistics
import subprocess
import threading
import time

import requests

import _etcd  # benchmarks/ is on sys.path (the script's own directory)
import _kdd
from _machine import load_line
from datastore_sync import populate, workload_endpoints

WRITER_THREADS = 16


def _send_when_done(run, sent: list, out) -> None:
    """Run ``run(t)`` on every writer thread, then send what they recorded."""
    threads = [threading.Thread(target=run, args=(t,)) for t in range(WRITER_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.send(sent)
    out.close()


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

    _send_when_done(run, sent, out)


def kdd_writer(url: str, rate: float, seconds: float, count: int, start_at: float, out) -> None:
    """As ``writer``, against the API server stand-in: each write a JSON merge patch
    of one pod's annotation; the revision is the resourceVersion in the answer.
    Through ``http.client`` (a third of ``requests``' CPU per request: on 2 cores the
    writer competes with the Python server and the watcher)."""
    host, _, port = url.removeprefix("http://").partition(":")
    targets = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in _kdd.pods(count)]
    headers = {"Authorization": f"Bearer {_kdd.TOKEN}", "Content-Type": "application/merge-patch+json",
               "Accept": "application/json"}
    total = int(rate * seconds)
    sent: list[tuple[int, float]] = []
    lock = threading.Lock()

    def run(first: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        for i in range(first, total, WRITER_THREADS):
            ns, name = targets[i % len(targets)]
            body = json.dumps({"metadata": {"annotations": {"bench.pycalico.org/seq": str(i)}}})
            due = start_at + i / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            at = time.monotonic()
            conn.request("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}", body=body, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
            if reply.status != 200:
                raise RuntimeError(f"PATCH {ns}/{name}: {reply.status} {data[:300]!r}")
            with lock:
                sent.append((int(json.loads(data)["metadata"]["resourceVersion"]), at))
        conn.close()

    _send_when_done(run, sent, out)


def start_writer(endpoint: str, args, target=writer) -> tuple[multiprocessing.Process, object, float]:
    start_at = time.monotonic() + 1.0  # time for the writer to build its values
    receiver, sender = multiprocessing.Pipe(duplex=False)
    proc = multiprocessing.Process(
        target=target, args=(endpoint, args.rate, args.seconds, args.endpoints, start_at, sender), daemon=True
    )
    proc.start()
    return proc, receiver, start_at


def collect(receiver, proc, arrived: dict[int, float]) -> list[tuple[int, float]]:
    """The writer's [(revision, sent_at)], once it is done and the watcher has had up
    to 10 s to catch up."""
    sent = receiver.recv()
    proc.join(30)
    deadline = time.monotonic() + 10
    while sum(1 for rev, _ in sent if rev in arrived) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    return sent


def stats(name: str, arrived: dict[int, float], sent: list[tuple[int, float]], cpu: float) -> dict:
    """Delivery and lag of one run; ``cpu``: the watcher's CPU seconds over the run."""
    lags = [(arrived[rev] - at) * 1000 for rev, at in sent if rev in arrived]
    got = [arrived[rev] for rev, _ in sent if rev in arrived]
    span = (max(got) - min(got)) if len(got) > 1 else float("nan")
    written_span = max(at for _, at in sent) - min(at for _, at in sent)
    q = statistics.quantiles(lags, n=100) if len(lags) > 1 else [float("nan")] * 99
    return {"name": name, "updates": len(lags), "delivered": len(lags) / span, "p50": q[49], "p99": q[98],
            "max": max(lags, default=float("nan")), "missing": len(sent) - len(lags),
            "written": len(sent) / written_span, "cpu_ms": cpu * 1000 / max(len(lags), 1)}


def line(r: dict) -> str:
    return (f"{r['name']:46} {r['updates']:5d} updates {r['delivered']:6.0f} delivered/s  "
            f"lag p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  max {r['max']:6.1f} ms  missing {r['missing']}  "
            f"watcher CPU {r['cpu_ms']:.3f} ms/update   (writer: {r['written']:.0f} writes/s)")


def ratios(plugin: dict, floor: dict) -> str:
    return (f"{'  plugin / floor':46} delivered/s x{plugin['delivered'] / floor['delivered']:.2f}, "
            f"lag p50 x{plugin['p50'] / floor['p50']:.1f}, p99 x{plugin['p99'] / floor['p99']:.1f}, "
            f"watcher CPU per update x{plugin['cpu_ms'] / floor['cpu_ms']:.1f}")


def watch_while_writing(title: str, store, watch, stop: threading.Event, arrived: dict, writer) -> dict:
    """A plugin's ``watch`` run in a thread while ``writer()`` (a start_writer) writes:
    its delivery stats and the watching process's CPU; the store is closed after."""
    cpu = time.process_time()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    proc, receiver, _ = writer()
    sent = collect(receiver, proc, arrived)
    cpu = time.process_time() - cpu
    stop.set()
    thread.join(5)
    store.close()
    return stats(title, arrived, sent, cpu)


def run_plugin(etcd: _etcd.LocalEtcd, args) -> dict:
    from pycalico.plugins.datastore.etcd import Options, connect

    store = connect(Options(endpoints=(etcd.endpoint,)))
    snap = store.snapshot(kinds=("WorkloadEndpoint",))
    stop = threading.Event()
    arrived: dict[int, float] = {}

    def watch() -> None:
        for event in store.watch(snap.revision, stop, kinds=("WorkloadEndpoint",)):
            arrived[event.revision] = time.monotonic()

    return watch_while_writing("etcd plugin watch()", store, watch, stop, arrived, lambda: start_writer(etcd.endpoint, args))


def run_etcdctl(etcd: _etcd.LocalEtcd, args) -> dict:
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
    sent = collect(receiver, proc, arrived)
    watcher.kill()
    _, _, usage = os.wait4(watcher.pid, 0)  # etcdctl's own CPU time
    watcher.returncode = -9
    return stats("etcdctl watch --prefix (floor)", arrived, sent, usage.ru_utime + usage.ru_stime)


def run_kdd_plugin(api: _kdd.StandIn, args) -> dict:
    from pycalico.plugins.datastore.kubernetes import Options, connect

    store = connect(Options(kubeconfig=str(api.kubeconfig)))
    snap = store.snapshot(kinds=("WorkloadEndpoint",))
    assert len(snap.resources) == args.endpoints, len(snap.resources)
    stop = threading.Event()
    arrived: dict[int, float] = {}

    def watch() -> None:
        # A KDD event's revision is every source's position; the pod's own
        # resourceVersion is the one the writer got back.
        for event in store.watch(snap.revision, stop, kinds=("WorkloadEndpoint",)):
            arrived[int(event.resource.metadata.resource_version)] = time.monotonic()

    return watch_while_writing("KDD plugin watch(WorkloadEndpoint)", store, watch, stop, arrived,
                               lambda: start_writer(api.url, args, kdd_writer))


def run_kdd_raw(api: _kdd.StandIn, args) -> dict:
    from kubernetes import client, watch

    client_api = api.api_client()
    v1 = client.CoreV1Api(client_api)
    listed = json.loads(v1.list_pod_for_all_namespaces(limit=1, _preload_content=False).data)
    stream = watch.Watch()
    arrived: dict[int, float] = {}
    done = threading.Event()

    def read() -> None:
        try:
            for event in stream.stream(v1.list_pod_for_all_namespaces, allow_watch_bookmarks=True, deserialize=False,
                                       resource_version=listed["metadata"]["resourceVersion"]):
                now = time.monotonic()
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    arrived[int(event["object"]["metadata"]["resourceVersion"])] = now
        except Exception:
            if not done.is_set():
                raise

    cpu = time.process_time()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)  # the watch is established
    proc, receiver, _ = start_writer(api.url, args, kdd_writer)
    sent = collect(receiver, proc, arrived)
    cpu = time.process_time() - cpu
    done.set()
    stream.stop()  # seen at the next event: a bookmark within a second
    reader.join(3)
    client_api.close()
    return stats("kubernetes client Watch /api/v1/pods (floor)", arrived, sent, cpu)


def run_etcd(args) -> dict:
    with _etcd.LocalEtcd("pycalico-bench-etcd-", quota_backend_bytes=4 * 2**30) as etcd:
        populate(etcd.endpoint, args.endpoints)
        plugin, floor = run_plugin(etcd, args), run_etcdctl(etcd, args)
    return {"title": "etcd", "plugin": plugin, "floor": floor}


def run_kdd(args) -> dict:
    with _kdd.StandIn(args.endpoints) as api:
        plugin, floor = run_kdd_plugin(api, args), run_kdd_raw(api, args)
    return {"title": "kubernetes (KDD)", "plugin": plugin, "floor": floor, "notes": [_kdd.NOTE]}


BACKENDS = {"etcd": run_etcd, "kubernetes": run_kdd}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument("--rate", type=float, default=1000.0, help="writes per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--endpoints", type=int, default=500, help="WorkloadEndpoints (KDD: Pods) written in turn")
    args = parser.parse_args()
    began = time.perf_counter()
    print(f"start: {load_line()}")
    results = [BACKENDS[name](args) for name in (BACKENDS if args.backend == "all" else [args.backend])]
    print(f"end: {load_line()}; {time.perf_counter() - began:.0f}s in all")
    print(f"\n{args.rate:.0f} writes/s for {args.seconds:g} s over {args.endpoints} WorkloadEndpoints "
          "(watcher CPU: the watching process's user+sys over the run, per update delivered):")
    for r in results:
        print(f"  [{r['title']}]")
        for note in r.get("notes", ()):
            print(f"    note: {note}")
        print(f"    {line(r['plugin'])}")
        print(f"    {line(r['floor'])}")
        print(f"    {ratios(r['plugin'], r['floor'])}")


if __name__ == "__main__":
    main()
