"""Shared by the agent benchmarks (agent_footprint.py, agent_restart.py): a one-node lab
whose calico-node the benchmark starts and stops itself, the policy benchmarks' load
(``_policy.py``: WorkloadEndpoints of this node and NetworkPolicies) written to the
lab's etcd, a veth pair in the node's namespace for each endpoint, and what the agent
process costs, read from /proc.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _policy  # benchmarks/ is on sys.path (its own directory)
import attrs
from pycalico.core import config as cfg
from pycalico.core import health
from pycalico.core.lab import Lab
from pycalico.core.lab.netns import run_in_netns
from pycalico.core.lab.pods import with_datastore
from pycalico.core.resources.codec import load_resource

NODE = "node1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc/<pid>/stat counts CPU time in these
PASS_LINE = re.compile(r"pass (\d+) \((\w+)\) at revision \S+: (\d+) change\(s\)(?:; [^\n]*)? in ([\d.]+) ms")


def up(name: str, root: str, policy: str) -> Lab:
    """A one-node lab whose node runs no agent yet (the one ``up`` started is stopped)."""
    lab = Lab.up(name, nodes=1, state_root=root, routing="none", policy=policy)
    lab.stop(lab.agent_pid(NODE))
    return lab


def load_docs(endpoints: int, policies: int) -> list[dict]:
    """The namespaces' profiles, ``endpoints`` endpoints on this node, ``policies`` policies
    (the lab has its own IP pool)."""
    docs = [d for d in _policy.base_docs() if d["kind"] != "IPPool"]
    docs += [_policy.endpoint_doc(i, NODE) for i in range(endpoints)]
    return docs + [_policy.policy_doc(p) for p in range(policies)]


def write(lab: Lab, docs: list[dict], create: bool = True) -> None:
    """Create (or replace) ``docs`` in the lab's etcd."""

    def run(ds):
        for doc in docs:
            resource = load_resource(doc)
            ds.create(resource) if create else ds.update(resource)

    with_datastore(lab, NODE, run, timeout=600)


def add_veths(lab: Lab, endpoints: int) -> None:
    """The endpoints' host-side interfaces (``cali<11 digits>``), up, in the node's
    namespace (their peers stay there too: no pod namespaces are needed for rules)."""
    lines = []
    for i in range(endpoints):
        host, peer = _policy.endpoint_doc(i, NODE)["spec"]["interfaceName"], f"p{i:011d}"
        lines += [f"link add {host} type veth peer name {peer}", f"link set {peer} up", f"link set {host} up"]
    lab.exec(NODE, ["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True, capture_output=True)


def ready(lab: Lab) -> bool:
    node = lab.node(NODE)
    endpoint = cfg.read(node.config_path).health
    return run_in_netns(node.netns, lambda: health.probe(endpoint, "/readiness", timeout=1), timeout=5) is None


def start_until_ready(lab: Lab, timeout: float = 120.0) -> tuple[int, float]:
    """Start the agent; its pid and the seconds until its /readiness answered 200 (the
    process start included: interpreter, imports, first sync and pass)."""
    start = time.perf_counter()
    pid = lab.start_agent(NODE)
    while not ready(lab):
        if lab.agent_pid(NODE) is None:
            raise RuntimeError(f"calico-node exited: {agent_log(lab)[-2000:]}")
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"calico-node not ready within {timeout:.0f} s")
        time.sleep(0.02)
    return pid, time.perf_counter() - start


def agent_log(lab: Lab) -> str:
    return (lab.state_dir / "logs" / f"calico-node-{NODE}.log").read_text()


def passes(text: str) -> list[tuple[int, str, int, float]]:
    """(number, reason, changes, milliseconds) of every pass logged in ``text``."""
    return [(int(n), reason, int(c), float(ms)) for n, reason, c, ms in PASS_LINE.findall(text)]


@attrs.frozen
class Usage:
    """One reading of a process: resident memory now and at its peak (KiB), CPU time
    (ticks: its own and its reaped children's, the iptables-restore and nft it runs)."""

    rss: int
    hwm: int
    ticks: int
    at: float

    @classmethod
    def of(cls, pid: int) -> Usage:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        kib = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in status.splitlines())
               if k in ("VmRSS", "VmHWM")}
        # utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after the comm.
        return cls(kib["VmRSS"], kib["VmHWM"], sum(int(x) for x in fields[11:15]), time.monotonic())

    def cpu_percent(self, earlier: Usage) -> float:
        return 100.0 * (self.ticks - earlier.ticks) / CLOCK_TICKS / (self.at - earlier.at)


def arguments(doc: str) -> argparse.ArgumentParser:
    """The options every agent benchmark has: the load, and the policy plugin(s)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=250)
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--policy", choices=["iptables", "nftables", "all"], default="all")
    return parser


def run(args: argparse.Namespace, measure: Callable, report: Callable) -> int:
    """``report(policy, measure(policy, args, root), args)`` for each chosen policy
    plugin, the labs under a temporary state root."""
    _policy.require_namespaces()
    with tempfile.TemporaryDirectory(prefix="pycalico-bench-agent-") as root:
        for policy in ["iptables", "nftables"] if args.policy == "all" else [args.policy]:
            report(policy, measure(policy, args, root), args)
    return 0
