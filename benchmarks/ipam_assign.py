"""Benchmark calico-ipam's auto_assign / release_by_handle against the datastore writes
they cannot avoid.

    .venv/bin/python benchmarks/ipam_assign.py [--count 300] [--procs 4]

Starts its own etcd (loopback, free ports, temp dir removed afterwards) with one pool
(10.0.0.0/16, /26 blocks), then measures through the etcd plugin:

* the floor: what one allocation must do in Calico's design whatever the code around
  it: read the block, create the handle, compare-and-swap the block (three requests);
* ``auto_assign`` of one address, one process, one node: rate, and datastore requests
  per allocation (counted by a wrapper around the datastore);
* ``release_by_handle``: rate;
* ``--procs`` processes at once, each its own node (no shared block), and all on one
  node (every write races for the same block): aggregate rate, all addresses distinct.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter

import _etcd  # benchmarks/ is on sys.path (the script's own directory)

POOL = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bench}\nspec: {cidr: 10.0.0.0/16}\n"


class Counting:
    """The datastore, counting calls by method."""

    def __init__(self, ds):
        self.ds, self.calls = ds, Counter()

    def __getattr__(self, name):
        target = getattr(self.ds, name)
        if name in ("get", "list", "create", "update", "delete", "snapshot"):
            def counted(*a, **kw):
                self.calls[name] += 1
                return target(*a, **kw)
            return counted
        return target


def floor(ds, count: int) -> float:
    """Seconds per (get block, create handle, CAS block): the unavoidable requests."""
    import attrs

    from pycalico.core.resources.ipam import IPAMBlock, IPAMHandle, IPAMHandleSpec
    from pycalico.core.resources.meta import ObjectMeta

    block = ds.create(IPAMBlock.new("10.255.0.0/26", "host:floor"))
    began = time.perf_counter()
    for i in range(count):
        b = ds.get(IPAMBlock.KIND, block.metadata.name)
        ds.create(IPAMHandle(metadata=ObjectMeta(name=f"floor-{i}"),
                             spec=IPAMHandleSpec(handle_id=f"floor-{i}", block={"10.255.0.0/26": 1})))
        ds.update(attrs.evolve(b, spec=attrs.evolve(b.spec, sequence_number=i + 1)))
    took = (time.perf_counter() - began) / count
    for i in range(count):  # leave only what IPAM writes
        ds.delete(IPAMHandle.KIND, f"floor-{i}")
    ds.delete(IPAMBlock.KIND, block.metadata.name)
    return took


CHILD = r"""
import json, sys, time
from pycalico.plugins.datastore.etcd import Options, connect
from pycalico.plugins.ipam.calico_ipam import IPAM
endpoint, node, prefix, count = sys.argv[1:5]
ipam = IPAM(connect(Options(endpoints=(endpoint,), timeout_seconds=30)), node)
print("ready", flush=True)
sys.stdin.readline()
out = [str(i.ip) for n in range(int(count)) for i in ipam.auto_assign(f"{prefix}-{n}", {}).all]
print(json.dumps(out), flush=True)
"""


def parallel(endpoint: str, procs: int, count: int, same_node: bool) -> tuple[float, list[str]]:
    children = [subprocess.Popen([sys.executable, "-c", CHILD, endpoint, "shared" if same_node else f"n{p}",
                                  f"{'s' if same_node else 'd'}{p}", str(count)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for p in range(procs)]
    for c in children:
        assert c.stdout.readline().strip() == "ready"
    began = time.perf_counter()
    for c in children:
        c.stdin.write("go\n")
        c.stdin.flush()
    got: list[str] = []
    for c in children:
        got += json.loads(c.stdout.readline())
        c.wait(60)
    return time.perf_counter() - began, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="allocations per measurement")
    parser.add_argument("--procs", type=int, default=4)
    args = parser.parse_args()

    from pycalico.core.resources import load_resources
    from pycalico.plugins.ipam.calico_ipam import IPAM

    with _etcd.LocalEtcd("pycalico-ipam-bench-") as etcd:
        ds = _etcd.connect(etcd.endpoint, timeout_seconds=10)
        ds.create(load_resources(POOL)[0])
        per_floor = floor(ds, args.count)

        counting = Counting(ds)
        ipam = IPAM(counting, "node-0")
        ipam.auto_assign("warm-up", {})
        counting.calls.clear()
        began = time.perf_counter()
        for i in range(args.count):
            ipam.auto_assign(f"h{i}", {"pod": f"p{i}", "namespace": "default"})
        per_assign = (time.perf_counter() - began) / args.count
        calls = {k: v / args.count for k, v in sorted(counting.calls.items())}

        began = time.perf_counter()
        for i in range(args.count):
            ipam.release_by_handle(f"h{i}")
        per_release = (time.perf_counter() - began) / args.count

        each = max(args.count // args.procs, 1)
        spread, spread_ips = parallel(etcd.endpoint, args.procs, each, same_node=False)
        shared, shared_ips = parallel(etcd.endpoint, args.procs, each, same_node=True)
        report = IPAM(ds, "node-0").check()
        ds.close()

    total = args.procs * each
    print(f"floor (get block + create handle + CAS block): {per_floor * 1e3:.2f} ms = {1 / per_floor:,.0f}/s")
    print(f"auto_assign, 1 process:    {per_assign * 1e3:.2f} ms = {1 / per_assign:,.0f}/s, "
          f"{per_assign / per_floor:.2f}x the floor; requests per allocation: "
          + ", ".join(f"{k} {v:.1f}" for k, v in calls.items()) + f" (total {sum(calls.values()):.1f})")
    print(f"release_by_handle:         {per_release * 1e3:.2f} ms = {1 / per_release:,.0f}/s")
    print(f"{args.procs} processes, own nodes: {total / spread:,.0f} allocations/s, "
          f"{len(set(spread_ips))} distinct of {len(spread_ips)}")
    print(f"{args.procs} processes, one node:  {total / shared:,.0f} allocations/s, "
          f"{len(set(shared_ips))} distinct of {len(shared_ips)}")
    print(f"check afterwards: {'clean' if report.ok else f'{len(report.problems)} problems'}")


if __name__ == "__main__":
    main()
