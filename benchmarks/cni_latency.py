"""CNI ADD and DEL latency: pycalico's ``calico`` against the reference plugins, same run.

    .venv/bin/python benchmarks/cni_latency.py [--count 40] [--warmup 3]

Builds a one-node lab (namespaces + etcd, removed afterwards) and times, inside the
node's namespace, what a runtime waits for: the wall time of one plugin execution.

* ``calico`` through the node agent's socket (the agent runs beside the node, as
  calico-node would run it);
* ``calico`` served in process (no agent: ``CALICO_CNI_SOCKET=""``);
* the reference: ``ptp`` with ``host-local`` IPAM from /usr/lib/cni (containernetworking
  plugins), a veth pair with a /32-style point-to-point address, IPAM in local files.

Each execution goes through ``ip netns exec <node>`` (the same few milliseconds for
all three). The variants take turns, in a shuffled order per round, so load from the
machine hits them alike. Prints p50 and p95 per command and the ratios to the
reference; also the executable's own start-up (``CNI_COMMAND=VERSION``: Python, the
fast path's imports, nothing else).

What the two cannot share: calico keeps its state in etcd (through the agent, 9
requests per ADD over etcd's gRPC-JSON gateway: IPAM's reads and compare-and-swap
writes, the handle check, the endpoint) where host-local writes a local file; and
calico is a Python process, whose interpreter start alone is ~20 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pycalico.core.lab import Lab, pods

REF_DIR = "/usr/lib/cni"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return (ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)) * 1000


def run(lab: Lab, path: str, conf: dict, env: dict) -> float:
    started = time.perf_counter()
    proc = lab.exec("node1", [path], env=env, input=json.dumps(conf).encode(), capture_output=True)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{path} {env['CNI_COMMAND']} failed: {proc.stdout.decode()} {proc.stderr.decode()}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=40, help="timed ADD/DEL pairs per variant")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 1
    root = Path(tempfile.mkdtemp(prefix="pycalico-cni-bench-"))
    lab = Lab.up(f"cb{os.getpid() % 100000}", nodes=1, state_root=root)
    try:
        pods.ensure_default_pool(lab)
        pods.start_cni_agent(lab, "node1")
        calico = pods._find_plugin("calico")
        variants = {
            "calico (agent socket)": (calico, pods.calico_netconf(lab, "node1"), {}),
            "calico (in process)": (calico, pods.calico_netconf(lab, "node1"), {"CALICO_CNI_SOCKET": ""}),
            "ptp + host-local (reference)": (os.path.join(REF_DIR, "ptp"), {
                "cniVersion": "1.0.0", "name": "refnet", "type": "ptp", "mtu": 1500,
                "ipam": {"type": "host-local", "subnet": "10.70.0.0/16", "dataDir": str(root / "host-local")},
            }, {}),
        }
        total = args.count + args.warmup
        names = [f"{lab.name}-b{i}-{v}" for i in range(total) for v in range(len(variants))]
        paths = dict(zip(names, pods.create_netns_many(lab, names)))
        timings = {v: {"ADD": [], "DEL": []} for v in variants}
        keys = list(variants)
        ids = {}
        for command in ("ADD", "DEL"):
            for i in range(total):
                order = keys[:]
                random.shuffle(order)
                for v in order:
                    exe, conf, extra = variants[v]
                    ns = f"{lab.name}-b{i}-{keys.index(v)}"
                    cid = ids.setdefault(ns, secrets.token_hex(32))
                    env = {**pods.cni_env(command, cid, paths[ns], "eth0", "bench", f"p{i}-{keys.index(v)}"),
                           **extra}
                    took = run(lab, exe, conf, env)
                    if i >= args.warmup:
                        timings[v][command].append(took)
        # Where an ADD through the agent spends its time: the exec into the node's
        # namespace, the interpreter's start, and the agent's own work (a request sent
        # over its socket straight from this process).
        floors = {"exec": [], "python": [], "agent ADD": [], "agent DEL": []}
        for _ in range(args.count):
            started = time.perf_counter()
            lab.exec("node1", ["true"], capture_output=True)
            floors["exec"].append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            floors["python"].append(time.perf_counter() - started)
        direct = [f"{lab.name}-d{i}" for i in range(args.count)]
        direct_paths = pods.create_netns_many(lab, direct)
        conf = json.dumps(pods.calico_netconf(lab, "node1")).encode()
        from pycalico.core.cni.main import ask_agent

        for command in ("ADD", "DEL"):
            for i, path in enumerate(direct_paths):
                env = {**os.environ, **lab.node_env("node1"),
                       **pods.cni_env(command, f"direct{i:056d}", path, "eth0", "bench", f"d{i}")}
                started = time.perf_counter()
                reply = ask_agent(pods.socket_path(lab, "node1"), "calico",
                                  {k.encode(): v.encode() for k, v in env.items()}, conf)
                floors[f"agent {command}"].append(time.perf_counter() - started)
                assert reply is not None and reply[0] == 0, reply
        startup = []
        for _ in range(args.count):
            started = time.perf_counter()
            subprocess.run([calico], input=b'{"cniVersion": "1.0.0"}', env={"CNI_COMMAND": "VERSION"},
                           capture_output=True, check=True)
            startup.append(time.perf_counter() - started)
        pods.delete_netns_many(lab, names + direct)
    finally:
        lab.down()
        import shutil

        shutil.rmtree(root, ignore_errors=True)

    ref = "ptp + host-local (reference)"
    print(f"CNI latency, {args.count} ADD/DEL pairs per variant (after {args.warmup} warm-up), "
          "each run via `ip netns exec` in a lab node")
    print(f"{'variant':<30} {'ADD p50':>9} {'ADD p95':>9} {'DEL p50':>9} {'DEL p95':>9}   "
          f"{'ADD p50 / ref':>13} {'DEL p50 / ref':>13}")
    for v, t in timings.items():
        a50, a95, d50, d95 = pct(t["ADD"], .5), pct(t["ADD"], .95), pct(t["DEL"], .5), pct(t["DEL"], .95)
        ra = a50 / pct(timings[ref]["ADD"], .5)
        rd = d50 / pct(timings[ref]["DEL"], .5)
        print(f"{v:<30} {a50:>7.1f}ms {a95:>7.1f}ms {d50:>7.1f}ms {d95:>7.1f}ms   {ra:>12.2f}x {rd:>12.2f}x")
    print(f"calico start-up alone (CNI_COMMAND=VERSION, no netns exec): p50 {pct(startup, .5):.1f} ms, "
          f"p95 {pct(startup, .95):.1f} ms")
    print("where an agent-socket ADD goes (p50): `ip netns exec` {:.1f} ms, python start-up (this venv) {:.1f} ms, "
          "agent work ADD {:.1f} ms / DEL {:.1f} ms".format(*(pct(floors[k], .5) for k in
                                                              ("exec", "python", "agent ADD", "agent DEL"))))
    goal = pct(timings["calico (agent socket)"]["ADD"], .5) / pct(timings[ref]["ADD"], .5)
    print(f"goal ADD within 3x the reference (agent socket): {'met' if goal <= 3 else 'NOT met'} ({goal:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
