"""Programming 5,000 remote-block routes: the vxlan plugin against ``ip -batch``, same run.

    .venv/bin/python benchmarks/routes_program.py [--blocks 5000] [--nodes 100] [--rounds 5]

In a network namespace of its own (removed afterwards) with an ``eth0`` on
198.51.100.11/24, a desired state is built in memory: ``--nodes`` remote nodes with
VTEPs, ``--blocks`` /26 blocks affine to them in a VXLAN pool. Each round, from a table
without them, times:

* ``ip -batch`` of the same routes (``route replace <block> via <vtep> dev vxlan.calico
  onlink proto 80``): the floor, one netlink request per route written by C;
* ``routetable.sync`` of the routes: the plugin's kernel step alone (dump, diff, batched
  requests);
* ``vxlan.reconcile``: the whole routing pass (routes computed from the desired state,
  device, ARP and FDB entries checked, routes synced);
* a second ``vxlan.reconcile`` with nothing to change, against ``ip route show proto 80``
  (reading the table back) as its floor.

Prints the median of ``--rounds`` rounds of each and its ratio to its floor.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import subprocess
import tempfile
import time

from pycalico.core import calc
from pycalico.core.datastore import Snapshot
from pycalico.core.lab import netns as lab_netns
from pycalico.core.resources import load_resource
from pycalico.core.resources.ipam import IPAMBlock
from pycalico.plugins.routing import routes, routetable, vxlan

POOL = ipaddress.IPv4Network("10.64.0.0/10")


def resource(kind: str, name: str, spec: dict):
    return load_resource({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name}, "spec": spec})


def desired_state(blocks: int, nodes: int) -> calc.DesiredState:
    subnets = POOL.subnets(new_prefix=26)
    local = next(subnets)
    items = [
        resource("IPPool", "pool", {"cidr": str(POOL), "vxlanMode": "Always"}),
        resource("Node", "node0", {"bgp": {"ipv4Address": "198.51.100.11/24"}, "ipv4VXLANTunnelAddr": str(local[0])}),
        IPAMBlock.new(str(local), "host:node0"),
    ]
    firsts = {}
    for i in range(blocks):
        node = f"node{i % nodes + 1}"
        net = next(subnets)
        firsts.setdefault(node, net[0])
        items.append(IPAMBlock.new(str(net), f"host:{node}"))
    for k, (node, tunnel) in enumerate(firsts.items()):
        host = f"203.0.113.{k + 1}/24" if k < 250 else f"198.51.100.{k - 238}/24"
        items.append(resource("Node", node, {"bgp": {"ipv4Address": host}, "ipv4VXLANTunnelAddr": str(tunnel)}))
    cache = calc.Cache()
    cache.replace(Snapshot(revision=1, resources=tuple(items)))
    return calc.compute(cache, "node0")


def ip(ns: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, **kw)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: it creates a network namespace")
    state = desired_state(args.blocks, args.nodes)
    ns = f"pycalico-bench-{os.getpid()}"
    lab_netns.add(ns)
    try:
        ip(ns, "link", "set", "lo", "up")
        ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        ip(ns, "addr", "add", "198.51.100.11/24", "dev", "eth0")
        ip(ns, "link", "set", "eth0", "up")
        ip(ns, "link", "set", "peer0", "up")

        def inside(fn):
            return lab_netns.run_in_netns(ns, fn)

        inside(lambda: vxlan.reconcile(state))  # the device and neighbours, once
        wanted = inside(lambda: routes.routes(state, vxlan.MODE_FIELD, vxlan.tunnel_hop, "eth0"))
        remote = [r for r in wanted if r.kind == "unicast"]
        batch = "".join(f"route replace {r.dst} via {r.gateway} dev {r.dev} onlink proto 80\n" for r in remote)
        with tempfile.NamedTemporaryFile("w", suffix=".batch") as f:
            f.write(batch)
            f.flush()
            results: dict[str, list[float]] = {k: [] for k in ("batch", "sync", "pass", "noop", "show")}
            for _ in range(args.rounds):
                ip(ns, "route", "flush", "proto", "80")
                results["batch"].append(timed(lambda: ip(ns, "-batch", f.name)))
                ip(ns, "route", "flush", "proto", "80")
                results["sync"].append(timed(lambda: inside(lambda: routetable.sync(remote))))
                ip(ns, "route", "flush", "proto", "80")
                lines = []
                results["pass"].append(timed(lambda: lines.extend(inside(lambda: vxlan.reconcile(state)))))
                assert len(lines) == len(wanted), f"{len(lines)} changes for {len(wanted)} routes"
                results["noop"].append(timed(lambda: lines.extend(inside(lambda: vxlan.reconcile(state)))))
                assert len(lines) == len(wanted), "a pass with nothing to change changed something"
                results["show"].append(timed(lambda: ip(ns, "route", "show", "proto", "80")))
    finally:
        lab_netns.delete(ns)

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{len(remote)} remote-block routes over {args.nodes} VTEPs (+1 local blackhole), median of {args.rounds} rounds")
    rows = [
        ("ip -batch (floor)", med["batch"], med["batch"]),
        ("routetable.sync", med["sync"], med["batch"]),
        ("vxlan.reconcile, from empty", med["pass"], med["batch"]),
        ("ip route show proto 80 (floor)", med["show"], med["show"]),
        ("vxlan.reconcile, nothing to change", med["noop"], med["show"]),
    ]
    for name, value, floor in rows:
        print(f"{name:38s} {value * 1000:8.1f} ms   x{value / floor:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
