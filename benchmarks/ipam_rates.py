"""Allocation rate of calico-ipam with 1, 4 and 16 concurrent allocators, against the
bare compare-and-swap writes one allocation cannot do without.

    .venv/bin/python benchmarks/ipam_rates.py [--count 100] [--allocators 1,4,16] [--mode processes]

Starts its own etcd (loopback, free ports, a temp dir removed afterwards) with one pool
(10.0.0.0/16, /26 blocks). Each allocator is an OS process by default (``--mode
threads``: threads of one process, sharing its interpreter), standing for one node: its
own node name, its own blocks, its own etcd connection, as the CNI plugins of N nodes
allocating at once. Every allocator waits until all are connected, then does
``--count`` ``auto_assign`` calls of one IPv4 address each; the rate is all the
allocations over the time from the start signal to the last one done.

Reference floor, same run, same concurrency, same mode: each worker does ``--count``
bare writes through the etcd plugin of what one allocation must write in Calico's
design: create the handle, then compare-and-swap the node's block (at the revision its
previous write returned, so no read). ``ratio`` is calico-ipam's rate over the floor's.

Each level runs calico-ipam twice: as a one-shot process would (every call reads the
IPAM settings, the node's affinities and block), and as the CNI agent's IPAM does (the
settings remembered for 2 s, ``remember_blocks``: the node's blocks kept between calls,
so a call writes the handle and the block and reads nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import _etcd  # benchmarks/ is on sys.path (the script's own directory)

POOL = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bench}\nspec: {cidr: 10.0.0.0/16}\n"


# --- one worker ----------------------------------------------------------------------------------


def prepare(kind: str, endpoint: str, node: str, prefix: str):
    """Connect (and for the floor, create the node's block); returns work(count) -> addresses."""
    ds = _etcd.connect(endpoint, timeout_seconds=30)
    if kind != "floor":
        from pycalico.plugins.ipam.calico_ipam import IPAM

        if kind == "agent":  # the CNI agent's: settings kept for a moment, blocks remembered
            from pycalico.core.cni.handler import CachedSettings
            from pycalico.core.cni.server import CACHE_SECONDS

            ipam = IPAM(CachedSettings(ds, CACHE_SECONDS), node, remember_blocks=True)
        else:
            ipam = IPAM(ds, node)

        def work(count: int) -> list[str]:
            return [str(i.ip) for n in range(count)
                    for i in ipam.auto_assign(f"{prefix}-{n}", {"pod": f"{prefix}-{n}", "namespace": "bench"}).all]

        return ds, work

    import attrs

    from pycalico.core.resources.ipam import IPAMBlock, IPAMHandle, IPAMHandleSpec
    from pycalico.core.resources.meta import ObjectMeta

    import ipaddress

    level, worker = (int(x) for x in node.removeprefix("floor").split("-"))
    cidr = f"{ipaddress.ip_address('10.254.0.0') + 64 * (level * level + worker)}/26"  # outside the pool, unique
    block = ds.create(IPAMBlock.new(cidr, f"host:{node}"))

    def work(count: int) -> list[str]:
        nonlocal block
        for n in range(count):
            ds.create(IPAMHandle(metadata=ObjectMeta(name=f"{prefix}-{n}"),
                                 spec=IPAMHandleSpec(handle_id=f"{prefix}-{n}", block={cidr: 1})))
            block = ds.update(attrs.evolve(block, spec=attrs.evolve(block.spec, sequence_number=n + 1)))
        return []

    return ds, work


CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from ipam_rates import prepare
kind, endpoint, node, prefix, count = sys.argv[2:7]
ds, work = prepare(kind, endpoint, node, prefix)
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps(work(int(count))), flush=True)
ds.close()
"""


def run_processes(kind: str, endpoint: str, workers: int, count: int, tag: str) -> tuple[float, list[str]]:
    here = str(Path(__file__).resolve().parent)
    children = [subprocess.Popen([sys.executable, "-c", CHILD, here, kind, endpoint, f"{tag}-{w}",
                                  f"{tag}-{w}-h", str(count)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for w in range(workers)]
    try:
        for c in children:
            if c.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker did not start")
        began = time.perf_counter()
        for c in children:
            c.stdin.write("go\n")
            c.stdin.flush()
        got: list[str] = []
        for c in children:
            got += json.loads(c.stdout.readline())
        took = time.perf_counter() - began
        for c in children:
            c.wait(60)
        return took, got
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait(10)


def run_threads(kind: str, endpoint: str, workers: int, count: int, tag: str) -> tuple[float, list[str]]:
    prepared = [prepare(kind, endpoint, f"{tag}-{w}", f"{tag}-{w}-h") for w in range(workers)]
    start = threading.Barrier(workers + 1)
    results: list[list[str]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def body(w: int) -> None:
        start.wait()
        try:
            results[w] = prepared[w][1](count)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    took = time.perf_counter() - began
    for ds, _ in prepared:
        ds.close()
    if errors:
        raise errors[0]
    return took, [ip for r in results for ip in r]


def remove_floor_records(ds) -> None:
    """The floor's handles and blocks are not IPAM's: gone before the check."""
    from pycalico.core.resources.ipam import IPAMBlock, IPAMHandle
    from pycalico.plugins.ipam.calico_ipam.store import Store

    store = Store(ds)
    for h in store.handles():
        if h.metadata.name.startswith("floor"):
            ds.delete(IPAMHandle.KIND, h.metadata.name)
    for b in store.blocks():
        if b.cidr.startswith("10.254."):
            ds.delete(IPAMBlock.KIND, b.resource.metadata.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100, help="allocations per allocator")
    parser.add_argument("--allocators", default="1,4,16", help="comma-separated concurrency levels")
    parser.add_argument("--mode", choices=("processes", "threads"), default="processes")
    args = parser.parse_args()
    levels = [int(x) for x in args.allocators.split(",")]
    run = run_processes if args.mode == "processes" else run_threads

    from pycalico.core.resources import load_resources
    from pycalico.plugins.ipam.calico_ipam import IPAM

    rows = []
    with _etcd.LocalEtcd("pycalico-ipam-rates-") as etcd:
        ds = _etcd.connect(etcd.endpoint, timeout_seconds=30)
        ds.create(load_resources(POOL)[0])
        for level in levels:
            total = level * args.count
            floor_took, _ = run("floor", etcd.endpoint, level, args.count, f"floor{level}")
            rates = []
            for kind in ("ipam", "agent"):
                took, ips = run(kind, etcd.endpoint, level, args.count, f"{kind}{level}")
                if len(ips) != total or len(set(ips)) != total:
                    raise SystemExit(f"{level} allocators ({kind}): {len(set(ips))} distinct addresses of {len(ips)}, "
                                     f"expected {total}")
                rates.append(total / took)
            rows.append((level, *rates, total / floor_took))
        remove_floor_records(ds)
        report = IPAM(ds, "bench").check()
        ds.close()

    print(f"calico-ipam auto_assign, one IPv4 address per call, {args.count} calls per allocator; "
          f"allocators are {args.mode} (one node each); etcd {_etcd.ETCD} on loopback; {os.cpu_count()} CPUs")
    print(f"{'allocators':>10}  {'calico-ipam':>12}  {'ratio':>6}  {'remembering':>12}  {'ratio':>6}  "
          f"{'floor (handle + CAS)':>20}")
    for level, rate, remembering, floor in rows:
        print(f"{level:>10}  {rate:>9,.0f} /s  {rate / floor:>6.2f}  {remembering:>9,.0f} /s  "
              f"{remembering / floor:>6.2f}  {floor:>17,.0f} /s")
    print(f"every address distinct; check afterwards: {'clean' if report.ok else str(report)}")


if __name__ == "__main__":
    main()
