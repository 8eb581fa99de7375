"""The calico CNI executable under load and under SIGKILL, in a 4-node lab with the CNI
agent running on every node.

* 200 ADDs at once across the 4 nodes (the agent's socket path): 200 distinct
  addresses, IPAM consistent; then 200 DELs: every address released (the blocks stay
  affine to their nodes, as Calico keeps them).
* 50 ADDs (the in-process path) each killed with SIGKILL at a random point: before any
  write, or inside one of the pauses the test seam ``PYCALICO_CNI_CHECKPOINTS`` puts
  between two writes (IPAM's and the plugin's own). IPAM ``check()`` must report every
  half-written record those kills leave, ``repair()`` must fix them; addresses left
  assigned to a container that never got its endpoint are found by CNI GC (and would
  be by the runtime's DEL); DEL of every container then leaves nothing.
"""

from __future__ import annotations

import os
import random
import secrets
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from lab_fixtures import lab_for

from pycalico.core.lab import netns, pods

pytestmark = pytest.mark.lab

NODES = ("node1", "node2", "node3", "node4")
CONCURRENCY = 200  # every request in flight at once


@pytest.fixture(scope="module")
def slab(tmp_path_factory):
    with lab_for(tmp_path_factory, "cni-stress", nodes=4) as lab:
        pods.ensure_default_pool(lab)
        for node in NODES:
            pods.start_cni_agent(lab, node)
        yield lab


def ipam(lab, fn, node="node1"):
    from pycalico.plugins.ipam.calico_ipam import IPAM

    return pods.with_datastore(lab, node, lambda ds: fn(IPAM(ds, node)))


def weps(lab):
    return pods.with_datastore(lab, "node1", lambda ds: ds.list("WorkloadEndpoint").items)


def cali_links(lab, node):
    out = lab.exec(node, ["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ": cali" in line]


def test_200_concurrent_adds_across_4_nodes_then_del_all(slab):
    n = 200
    names = [f"{slab.name}-m{i}" for i in range(n)]
    paths = pods.create_netns_many(slab, names)
    work = [(NODES[i % 4], secrets.token_hex(32), paths[i], f"load/p{i}") for i in range(n)]

    def run(item, command):
        node, cid, nspath, pod = item
        return pods.calico(slab, node, command, cid, nspath, pod=pod)

    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(lambda item: run(item, "ADD"), work))
    add_seconds = time.monotonic() - started
    addresses = [r["ips"][0]["address"] for r in results]
    assert len(set(addresses)) == n
    report = ipam(slab, lambda i: i.check())
    assert report.ok, str(report)
    assert report.in_use == n
    mine = [w for w in weps(slab) if w.metadata.namespace == "load"]
    assert len(mine) == n and {w.spec.node for w in mine} == set(NODES)
    assert sorted(w.spec.ip_networks[0] for w in mine) == sorted(addresses)
    # every address comes from a block affine to the node that asked
    def affinities(i):
        out = {}
        for (node, *_), r in zip(work, results):
            block = i.get_assignment_attributes(r["ips"][0]["address"].split("/")[0]).block
            out.setdefault(node, set()).add(i.store.block(block).affinity)
        return out

    assert ipam(slab, affinities) == {node: {f"host:{node}"} for node in NODES}

    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        assert list(pool.map(lambda item: run(item, "DEL"), work)) == [None] * n
    del_seconds = time.monotonic() - started
    report = ipam(slab, lambda i: i.check())
    assert report.ok, str(report)
    assert report.in_use == 0 and report.handles == 0
    assert report.blocks >= 4 and report.affinities == report.blocks  # kept affine, as Calico does
    assert [w for w in weps(slab) if w.metadata.namespace == "load"] == []
    for node in NODES:
        assert cali_links(slab, node) == []
    pods.delete_netns_many(slab, names)
    print(f"\n200 ADDs in {add_seconds:.1f} s, 200 DELs in {del_seconds:.1f} s")


KILLS = 50
PAUSE = 0.5  # seconds the seam waits at each checkpoint: long enough for a kill to land inside it on a loaded machine


def test_adds_killed_at_random_points_are_found_by_check_and_gc(slab):
    from pycalico.core.resources import load_resources

    # small blocks, so that block claims (two writes each) happen during the run too
    (pool,) = load_resources("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: killpool}\n"
                             "spec: {cidr: 10.67.0.0/24, blockSize: 29, ipipMode: Never, nodeSelector: '!all()'}\n")
    pods.with_datastore(slab, "node1", lambda ds: ds.create(pool))
    rng = random.Random(int(os.environ.get("CNI_KILL_SEED", time.time())))
    calico = pods._find_plugin("calico")
    outcomes: dict[str, dict] = {}
    lock = threading.Lock()

    def one(i: int) -> None:
        node = NODES[i % 4]
        cid = secrets.token_hex(32)
        nspath = pods.create_netns(slab, f"{slab.name}-k{i}")
        pod = f"kill/k{i}"
        conf = pods.calico_netconf(slab, node, ipam={"type": "calico-ipam", "ipv4_pools": ["killpool"]})
        env = {**os.environ, **slab.node_env(node),
               **pods.cni_env("ADD", cid, nspath, "eth0", "kill", f"k{i}"),
               "CALICO_CNI_SOCKET": "", "PYCALICO_CNI_CHECKPOINTS": str(PAUSE)}
        target = rng.randrange(0, 5)  # 0: during start-up; k: inside the k-th pause
        proc = subprocess.Popen(netns.exec_argv(slab.node(node).netns, [calico]), stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        import json

        proc.stdin.write(json.dumps(conf).encode())
        proc.stdin.close()
        seen: list[str] = []
        if target == 0:
            time.sleep(rng.uniform(0, 0.4))
        else:
            while len(seen) < target:
                line = proc.stderr.readline().decode()
                if not line:
                    break  # finished before that many checkpoints
                if line.startswith("checkpoint "):
                    seen.append(line.split()[1])
            time.sleep(rng.uniform(0, PAUSE * 0.4))
        proc.kill()
        rc = proc.wait()
        proc.stderr.close()
        with lock:
            outcomes[cid] = {"node": node, "netns": nspath, "pod": pod, "seen": seen, "completed": rc == 0,
                             "conf": conf}

    started = time.monotonic()
    with ThreadPoolExecutor(4) as workers:
        list(workers.map(one, range(KILLS)))
    kill_seconds = time.monotonic() - started
    killed = {cid: o for cid, o in outcomes.items() if not o["completed"]}
    # A run whose chosen checkpoint never comes (no new block to claim) finishes: 40-46
    # of 50 are killed in a typical run.
    assert len(killed) >= KILLS * 0.6, "most runs must have been killed"

    # 1. every half-written IPAM record is reported, and repaired
    report = ipam(slab, lambda i: i.check())
    reported = {(p.kind, p.subject) for p in report.problems}
    for cid, o in killed.items():
        handle = f"k8s-pod-network.{cid}"
        if o["seen"] and o["seen"][-1] == "handle-counted":  # killed between handle and block write
            assert ("handle-count", handle) in reported, f"{handle}: {report}"
    kinds = sorted({p.kind for p in report.problems})
    assert set(kinds) <= {"handle-count", "affinity-without-block", "unconfirmed-affinity"}, str(report)
    ipam(slab, lambda i: i.repair(report))
    assert ipam(slab, lambda i: i.check()).ok

    # 2. addresses assigned to containers that never got an endpoint: CNI GC finds them
    done = {cid for cid, o in outcomes.items() if o["completed"]}
    leaked = {cid for cid, o in killed.items()
              if ipam(slab, lambda i, c=cid: i.ips_by_handle(f"k8s-pod-network.{c}"))}
    for node in NODES:
        gc = pods.calico_netconf(slab, node, cniVersion="1.1.0", **{
            "cni.dev/valid-attachments": [{"containerID": c, "ifname": "eth0"} for c in done]})
        pods.calico(slab, node, "GC", "", netconf=gc)
    for cid in leaked:
        assert ipam(slab, lambda i, c=cid: i.ips_by_handle(f"k8s-pod-network.{c}")) == []
    final = ipam(slab, lambda i: i.check())
    assert final.ok and final.in_use == len(done), str(final)

    # 3. the runtime's DEL of every container leaves nothing
    for cid, o in outcomes.items():
        assert pods.calico(slab, o["node"], "DEL", cid, o["netns"], pod=o["pod"], netconf=o["conf"]) is None
    final = ipam(slab, lambda i: i.check())
    assert final.ok and final.in_use == 0, str(final)
    assert [w for w in weps(slab) if w.metadata.namespace == "kill"] == []
    for node in NODES:
        assert cali_links(slab, node) == []
    stages = sorted(o["seen"][-1] if o["seen"] else "start-up" for o in killed.values())
    print(f"\n{len(killed)} of {KILLS} ADDs killed in {kill_seconds:.1f} s, at: "
          + ", ".join(f"{s} x{stages.count(s)}" for s in sorted(set(stages)))
          + f"; check() reported {kinds or 'nothing'}; GC released {len(leaked)} leaked handle(s)")
