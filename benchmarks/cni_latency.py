"""CNI ADD and DEL latency: pycalico's ``calico`` against the reference plugins, same run.

    .venv/bin/python benchmarks/cni_latency.py [--count 40] [--warmup 3] [--wheel PATH]

Builds a two-node lab (namespaces + etcd, removed afterwards) and times, inside a
node's namespace, what a runtime waits for: the wall time of one plugin execution.

* ``calico`` from a wheel install, through the node agent's socket (the agent runs
  beside the node, as calico-node would run it): what a runtime calls on a real node.
  The wheel is built from this checkout (or ``--wheel``) and installed, with
  ``pip install --target``, into a throwaway venv under the run's temp dir whose
  dependencies come from this venv's site-packages as a plain path;
* ``calico`` of this venv (an editable install: ``site`` imports setuptools' editable
  finder first, ~12 ms), through the socket;
* ``calico`` served in process (no agent: ``CALICO_CNI_SOCKET=""``), on the other node:
  on a real node one agent serves all of its pods, and a second writer to the same
  node's block would make the agent's remembered block stale every time;
* the reference: ``ptp`` with ``host-local`` IPAM from /usr/lib/cni (containernetworking
  plugins), a veth pair with a /32-style point-to-point address, IPAM in local files.

Each execution goes through ``ip netns exec <node>`` (the same few milliseconds for
all). The variants take turns, in a shuffled order per round, so load from the machine
hits them alike. Prints p50 and p95 per command and the ratios to the reference; then
where an ADD's time goes: the ``ip netns exec``, the executable's start (``calico -v``
through ``ip netns exec``: the interpreter and the fast path's imports, each install),
and the agent's own work (a request sent over its socket from this process).

What the two cannot share: calico keeps its state in etcd (through the agent, 3
requests per ADD once the agent remembers its node's blocks: the handle, the block's
compare-and-swap, the endpoint) where host-local writes a local file; and calico is a
Python process, whose interpreter start alone is ~8-10 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from pycalico.core.lab import Lab, pods

REF_DIR = "/usr/lib/cni"
REPO = Path(__file__).resolve().parents[1]
REF = "ptp + host-local (reference)"
GOAL = "calico, wheel (agent socket)"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return (ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)) * 1000


def wheel_install(root: Path, wheel: str | None) -> list[str]:
    """The argv that runs the ``calico`` of a wheel install in a throwaway venv: its
    console script run by its interpreter, as the kernel does for the script's
    ``#!`` line (pip wrote this venv's interpreter there, since pip runs here)."""
    if wheel is None:
        out = root / "wheel"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out,
                        REPO], check=True, capture_output=True)
        (found,) = out.glob("pycalico-*.whl")
        wheel = str(found)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --target installs into a directory of its own: never touches this venv's pycalico.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel],
                   check=True, capture_output=True)
    return [str(venv / "bin" / "python"), str(site / "bin" / "calico")]


def run(lab: Lab, node: str, argv: list[str], conf: dict, env: dict) -> float:
    started = time.perf_counter()
    proc = lab.exec(node, argv, env=env, input=json.dumps(conf).encode(), capture_output=True)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} {env['CNI_COMMAND']} failed: {proc.stdout.decode()} {proc.stderr.decode()}")
    return took


def timed(fn, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=40, help="timed ADD/DEL pairs per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--wheel", help="a pycalico wheel to install instead of building one from this checkout")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 1
    root = Path(tempfile.mkdtemp(prefix="pycalico-cni-bench-"))
    try:
        wheel_calico = wheel_install(root, args.wheel)
        lab = Lab.up(f"cb{os.getpid() % 100000}", nodes=2, state_root=root)
        try:
            timings, floors = measure(lab, root, wheel_calico, args.count, args.warmup)
        finally:
            lab.down()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(timings, floors, args)
    return 0


def measure(lab: Lab, root: Path, wheel_calico: list[str], count: int, warmup: int):
    pods.ensure_default_pool(lab)
    pods.start_cni_agent(lab, "node1")
    calico = [pods._find_plugin("calico")]
    conf = pods.calico_netconf(lab, "node1")
    variants = {
        GOAL: ("node1", wheel_calico, conf, {}),
        "calico, this venv (agent socket)": ("node1", calico, conf, {}),
        "calico, in process (no agent)": ("node2", calico, pods.calico_netconf(lab, "node2"),
                                          {"CALICO_CNI_SOCKET": ""}),
        REF: ("node1", [os.path.join(REF_DIR, "ptp")], {
            "cniVersion": "1.0.0", "name": "refnet", "type": "ptp", "mtu": 1500,
            "ipam": {"type": "host-local", "subnet": "10.70.0.0/16", "dataDir": str(root / "host-local")},
        }, {}),
    }
    total = count + warmup
    keys = list(variants)
    names = [f"{lab.name}-b{i}-{v}" for i in range(total) for v in range(len(keys))]
    paths = dict(zip(names, pods.create_netns_many(lab, names)))
    timings = {v: {"ADD": [], "DEL": []} for v in keys}
    ids: dict[str, str] = {}
    for command in ("ADD", "DEL"):
        for i in range(total):
            order = keys[:]
            random.shuffle(order)
            for v in order:
                node, argv, netconf, extra = variants[v]
                ns = f"{lab.name}-b{i}-{keys.index(v)}"
                cid = ids.setdefault(ns, secrets.token_hex(32))
                env = {**pods.cni_env(command, cid, paths[ns], "eth0", "bench", f"p{i}-{keys.index(v)}"), **extra}
                took = run(lab, node, argv, netconf, env)
                if i >= warmup:
                    timings[v][command].append(took)
    # Where an ADD through the agent spends its time: the exec into the node's
    # namespace, the interpreter's start, and the agent's own work (a request sent
    # over its socket straight from this process).
    floors = {
        "`ip netns exec`": timed(lambda: lab.exec("node1", ["true"], capture_output=True), count),
        "+ start (wheel)": timed(lambda: lab.exec("node1", [*wheel_calico, "-v"], capture_output=True), count),
        "+ start (this venv)": timed(lambda: lab.exec("node1", [*calico, "-v"], capture_output=True), count),
        "agent ADD": [], "agent DEL": [],
    }
    direct = [f"{lab.name}-d{i}" for i in range(count)]
    direct_paths = pods.create_netns_many(lab, direct)
    raw = json.dumps(conf).encode()
    from pycalico.core.cni.main import ask_agent

    for command in ("ADD", "DEL"):
        for i, path in enumerate(direct_paths):
            env = {**os.environ, **lab.node_env("node1"),
                   **pods.cni_env(command, f"direct{i:056d}", path, "eth0", "bench", f"d{i}")}
            started = time.perf_counter()
            reply = ask_agent(pods.socket_path(lab, "node1"), "calico",
                              {k.encode(): v.encode() for k, v in env.items()}, raw)
            floors[f"agent {command}"].append(time.perf_counter() - started)
            assert reply is not None and reply[0] == 0, reply
    pods.delete_netns_many(lab, names + direct)
    return timings, floors


def report(timings: dict, floors: dict, args) -> None:
    load = os.getloadavg()
    print(f"CNI latency, {args.count} ADD/DEL pairs per variant (after {args.warmup} warm-up), each run via "
          f"`ip netns exec` in a lab node; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{'variant':<34} {'ADD p50':>9} {'ADD p95':>9} {'DEL p50':>9} {'DEL p95':>9}   "
          f"{'ADD p50 / ref':>13} {'DEL p50 / ref':>13}")
    for v, t in timings.items():
        a50, a95, d50, d95 = pct(t["ADD"], .5), pct(t["ADD"], .95), pct(t["DEL"], .5), pct(t["DEL"], .95)
        ra = a50 / pct(timings[REF]["ADD"], .5)
        rd = d50 / pct(timings[REF]["DEL"], .5)
        print(f"{v:<34} {a50:>7.1f}ms {a95:>7.1f}ms {d50:>7.1f}ms {d95:>7.1f}ms   {ra:>12.2f}x {rd:>12.2f}x")
    print("where an agent-socket ADD goes (p50): " + ", ".join(
        f"{k} {pct(v, .5):.1f} ms" for k, v in floors.items()))
    goal = pct(timings[GOAL]["ADD"], .5) / pct(timings[REF]["ADD"], .5)
    print(f"goal ADD within 3x the reference ({GOAL}): {'met' if goal <= 3 else 'NOT met'} ({goal:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
