"""Benchmark the initial sync of the datastore plugins against a raw read of the same data.

    .venv/bin/python benchmarks/datastore_sync.py [--backend etcd|kubernetes|all]
        [--count 10000] [--repeat 3]

Each backend (``BACKENDS``) sets up its own datastore, fills it with ``--count``
WorkloadEndpoints and measures, each run in a fresh subprocess, the floor and the
plugin side by side (interleaved, so that a noisy machine hits both alike):

* etcd: its own etcd (loopback, free ports, data in a temp dir that is removed
  afterwards), the WorkloadEndpoints written through the etcd plugin. Floor:
  ``etcdctl get --prefix`` of the same keys, output discarded. Plugin: ``snapshot()``
  (every synced kind at one revision, decoded into typed resources).
* kubernetes (KDD): the API server stand-in of ``tests/kubeapi`` (test code; a real
  kube-apiserver cannot be installed on these machines) in its own process, holding
  ``--count`` realistic Pods, which KDD shows as WorkloadEndpoints (see ``_kdd.py``).
  Floor: a raw paged list of /api/v1/pods (limit 500, as the plugin pages) through
  the ``kubernetes`` client, JSON-decoded page by page, nothing converted. Plugin:
  ``snapshot(kinds=("WorkloadEndpoint",))`` (the same pages, converted to typed
  WorkloadEndpoints).

For every run: wall time, the measuring process's CPU time ("client CPU": the wall
time also holds the server's work, and for KDD the stand-in is slow Python), peak RSS
growth (``VmHWM``) and, in one more plugin run, the peak of Python allocations
(``tracemalloc``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import _etcd  # benchmarks/ is on sys.path (the script's own directory)
import _kdd
from _machine import load_line

WEP_PREFIX = "/calico/resources/v3/projectcalico.org/workloadendpoints/"


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


# --- measurements (each backend: one function in BACKENDS) --------------------------


def _subprocess_json(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float):
            out[key] = statistics.median(r[key] for r in runs)
    return out


def _side_by_side(floor, plugin, traced, repeat: int) -> tuple[dict, dict]:
    """``repeat`` runs of the floor and of the plugin, interleaved, then one traced
    plugin run; the medians, with the traced peak added to the plugin's."""
    floors, plugins = [], []
    for _ in range(repeat):
        floors.append(floor())
        plugins.append(plugin())
    result = _median(plugins)
    result["traced_peak_mb"] = traced()["traced_peak_mb"]
    return _median(floors), result


def run_etcdctl(etcd: _etcd.LocalEtcd) -> dict:
    """``etcdctl get --prefix`` of the same keys, output discarded: wall and CPU time."""
    cmd, env = etcd.etcdctl("get", "--prefix", WEP_PREFIX)
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # its own rusage: CPU time and peak RSS
    seconds = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"etcdctl exited {proc.returncode}")
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime, "rss_peak_mb": usage.ru_maxrss / 1024}


def run_etcd(args) -> dict:
    with _etcd.LocalEtcd("pycalico-bench-etcd-", quota_backend_bytes=4 * 2**30) as etcd:
        wrote = populate(etcd.endpoint, args.count)
        child = ["--child", "etcd", "--endpoint", etcd.endpoint]
        floor, plugin = _side_by_side(lambda: run_etcdctl(etcd), lambda: _subprocess_json(child),
                                      lambda: _subprocess_json([*child, "--tracemalloc"]), args.repeat)
    return {
        "title": "etcd",
        "setup": f"wrote {args.count} WorkloadEndpoints through the etcd plugin in {wrote:.1f}s "
                 f"({args.count / wrote:.0f}/s, 8 threads)",
        "floor_name": "etcdctl get --prefix",
        "floor": floor,
        "plugin_name": "etcd plugin snapshot()",
        "plugin": plugin,
    }


def run_kdd(args) -> dict:
    with _kdd.StandIn(args.count) as api:
        child = ["--child", "kubernetes", "--endpoint", str(api.kubeconfig)]
        floor_child = ["--child", "kubernetes-floor", "--endpoint", str(api.kubeconfig)]
        floor, plugin = _side_by_side(lambda: _subprocess_json(floor_child), lambda: _subprocess_json(child),
                                      lambda: _subprocess_json([*child, "--tracemalloc"]), args.repeat)
    return {
        "title": "kubernetes (KDD)",
        "setup": f"put {args.count} Pods ({floor['bytes'] / 2**20:.1f} MB as listed, "
                 f"{floor['bytes'] / args.count / 1024:.1f} KiB each) in the API server stand-in "
                 f"in {api.populate_seconds:.1f}s",
        "notes": [_kdd.NOTE],
        "floor_name": "raw paged list, kubernetes client",
        "floor": floor,
        "plugin_name": "KDD plugin snapshot(WorkloadEndpoint)",
        "plugin": plugin,
    }


BACKENDS = {"etcd": run_etcd, "kubernetes": run_kdd}


def _peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM; getrusage's ru_maxrss would include
    the parent's, which a child inherits across fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(backend: str, endpoint: str, traced: bool) -> None:
    """Runs in the subprocess: one read, measured; prints one JSON line. ``endpoint``
    is etcd's URL, or the kubeconfig of the API server stand-in."""
    import tracemalloc

    if backend == "kubernetes-floor":
        read, close = _kdd_raw_list(endpoint)
    else:
        if backend == "etcd":
            from pycalico.plugins.datastore.etcd import Options, connect

            store = connect(Options(endpoints=(endpoint,), timeout_seconds=60))
            kinds = None  # every synced kind (only WorkloadEndpoints are stored)
        else:
            from pycalico.plugins.datastore.kubernetes import Options, connect

            store = connect(Options(kubeconfig=endpoint, timeout_seconds=60))
            kinds = ("WorkloadEndpoint",)  # the other kinds need Calico's CRDs installed
        store.ping()

        def read() -> dict:
            return {"resources": len(store.snapshot(kinds=kinds).resources)}

        close = store.close
    before = _peak_rss_kib()
    if traced:
        tracemalloc.start()
    began, cpu = time.perf_counter(), time.process_time()
    out = read()
    out.update(seconds=time.perf_counter() - began, cpu_seconds=time.process_time() - cpu)
    if traced:
        out["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    after = _peak_rss_kib()
    out["rss_growth_mb"] = (after - before) / 1024
    out["rss_peak_mb"] = after / 1024
    close()
    print(json.dumps(out))


def _kdd_raw_list(kubeconfig: str):
    """The KDD floor: every pod, paged as the plugin pages (limit 500), through the
    ``kubernetes`` client's CoreV1Api without its model classes (raw response, one
    json.loads per page for the continue token); nothing kept but counts."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg, persist_config=False)
    api = client.ApiClient(cfg)
    v1 = client.CoreV1Api(api)
    client.VersionApi(api).get_code()  # connected, as the plugin's ping() is

    def read() -> dict:
        items = size = 0
        token = None
        while True:
            resp = v1.list_pod_for_all_namespaces(limit=500, _continue=token, _preload_content=False)
            data = resp.data
            size += len(data)
            page = json.loads(data)
            items += len(page["items"])
            token = page["metadata"].get("continue")
            if not token:
                return {"resources": items, "bytes": size}

    return read, api.close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=["etcd", "kubernetes", "kubernetes-floor"], help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.endpoint, args.tracemalloc)
        return
    began = time.perf_counter()
    print(f"start: {load_line()}")
    results = []
    for name in BACKENDS if args.backend == "all" else [args.backend]:
        r = BACKENDS[name](args)
        print(f"{r['title']}: {r['setup']}")
        for note in r.get("notes", ()):
            print(f"  note: {note}")
        results.append(r)
    print(f"end: {load_line()}; {time.perf_counter() - began:.0f}s in all")
    print(f"\ninitial sync of {args.count} WorkloadEndpoints (median of {args.repeat}; each run a fresh process, "
          "floor and plugin runs interleaved; CPU = the reading process's own, user+sys):")
    print(f"    {'':44} {'wall':>9} {'':8} {'CPU':>9} {'':8} {'peak RSS (growth)':>18}   traced peak")
    for r in results:
        floor, plugin = r["floor"], r["plugin"]
        assert plugin["resources"] == floor.get("resources", args.count) == args.count, (floor, plugin)
        print(f"  [{r['title']}]")
        print(_row(r["floor_name"] + " (floor)", floor))
        print(_row(r["plugin_name"], plugin, floor, args.count))


def _row(name: str, r: dict, floor: dict | None = None, count: int = 0) -> str:
    def ratio(key: str) -> str:
        return f"x{r[key] / floor[key]:<6.1f}" if floor else ""

    rss = f"{r['rss_peak_mb']:.0f} MB" + (f" (+{r['rss_growth_mb']:.0f} MB)" if "rss_growth_mb" in r else "")
    traced = (f"{r['traced_peak_mb']:.0f} MB ({r['traced_peak_mb'] * 2**20 / count / 1024:.1f} KiB/resource)"
              if "traced_peak_mb" in r else "")
    return (f"    {name:44} {r['seconds']:7.3f} s {ratio('seconds'):8} {r['cpu_seconds']:7.3f} s "
            f"{ratio('cpu_seconds'):8} {rss:>18}   {traced}").rstrip()


if __name__ == "__main__":
    main()
