"""calico-kube-controllers' IPAM GC: one scan of every allocation, and the release of a
deleted node's addresses, against the reads a scan cannot do without.

    .venv/bin/python benchmarks/kube_controllers_gc.py [--pods 1000] [--nodes 10] [--rounds 5]

Starts its own etcd (loopback, free ports, a temp dir removed afterwards) and the
Kubernetes API stand-in (tests/kubeapi, in this process), then allocates ``--pods``
addresses with calico-ipam over ``--nodes`` nodes (the CNI plugin's handles and
attributes) and creates each pod in Kubernetes with its address in ``status.podIPs``.

Measured, ``--rounds`` times each, alternating:

* scan: a GC pass when nothing is leaked (what runs every ``leakGracePeriod / 2``): the
  Calico Nodes, the Kubernetes nodes and pods read, then ``IPAMGC.scan`` (which reads
  the IPAM settings and every block and judges every allocation);
* floor: the same reads alone.

Then node-0 is deleted from Kubernetes (with its pods) and one scan releases its
addresses, tunnel address and blocks; floor for that: releasing the same addresses with
one ``release_ips`` call per block plus ``release_host_affinities``, the writes it makes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import _etcd  # benchmarks/ is on sys.path (the script's own directory)
import _machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

POOL = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bench}\nspec: {cidr: 10.0.0.0/16}\n"


def populate(ds, api, pods: int, nodes: int) -> dict[str, list[str]]:
    """node -> its pods' addresses."""
    from pycalico.core.resources import load_resources
    from pycalico.plugins.ipam.calico_ipam import IPAM

    for res in load_resources(POOL):
        ds.create(res)
    by_node: dict[str, list[str]] = {}
    for n in range(nodes):
        node = f"node-{n}"
        (res,) = load_resources(f"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {node}}}\n"
                                f"spec: {{orchRefs: [{{nodeName: {node}, orchestrator: k8s}}]}}\n")
        ds.create(res)
        api.request("POST", "/api/v1/nodes", body={"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
        IPAM(ds, node).auto_assign(f"vxlan-tunnel-addr-{node}", {"type": "vxlanTunnelAddress"})
        ipam = IPAM(ds, node, remember_blocks=True)
        for i in range(n, pods, nodes):
            name = f"pod-{i}"
            ip = str(ipam.auto_assign(f"k8s-pod-network.{name}", {"namespace": "default", "pod": name}).v4[0].ip)
            by_node.setdefault(node, []).append(ip)
            pod = api.request("POST", "/api/v1/namespaces/default/pods", body={
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx:1.25"}]}})
            pod["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
            api.request("PUT", f"/api/v1/namespaces/default/pods/{name}/status", body=pod)
    return by_node


def inputs(ds, view):
    """What the node controller reads before the scan: Calico Nodes, Kubernetes nodes, pods."""
    return {n.name: n for n in ds.list("Node").items}, set(view.nodes()), view.pods()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from kubeapi import KubeAPIServer
    from pycalico.core.controllers.ipamgc import IPAMGC
    from pycalico.core.controllers.kube import KubeView, connect
    from pycalico.plugins.ipam.calico_ipam import IPAM, ReleaseOptions

    with _etcd.LocalEtcd() as etcd, KubeAPIServer(token="bench", bookmark_interval=1.0) as server:
        kubeconfig = server.write_kubeconfig(etcd.dir / "kubeconfig")
        ds, kube = _etcd.connect(etcd.endpoint), connect(str(kubeconfig))
        began = time.perf_counter()
        by_node = populate(ds, kube.api, args.pods, args.nodes)
        print(f"populated {args.pods} pods on {args.nodes} nodes in {time.perf_counter() - began:.1f}s; "
              f"{_machine.load_line()}")
        view = KubeView(kube)
        ipam = IPAM(ds, "kube-controllers")
        gc = IPAMGC(ipam, view, grace=900.0)
        scans, floors = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            result = gc.scan(*inputs(ds, view))
            scans.append(time.perf_counter() - t)
            assert not result.released and not result.candidates, result
            t = time.perf_counter()
            inputs(ds, view)
            ipam.store.config()
            ipam.store.blocks()
            floors.append(time.perf_counter() - t)
        scan, floor = statistics.median(scans), statistics.median(floors)
        print(f"scan of {args.pods} allocations: {scan * 1000:.0f} ms (median of {args.rounds}); "
              f"floor (its reads) {floor * 1000:.0f} ms; ratio {scan / floor:.2f}")

        # A deleted node: its pods go, then the node.
        gone = "node-0"
        for i in range(0, args.pods, args.nodes):
            kube.api.request("DELETE", f"/api/v1/namespaces/default/pods/pod-{i}")
        kube.api.request("DELETE", f"/api/v1/nodes/{gone}")
        t = time.perf_counter()
        result = gc.scan(*inputs(ds, view))
        release = time.perf_counter() - t
        assert len(result.released) == len(by_node[gone]) + 1 and result.nodes_released == (gone,), result
        # Floor: the same writes on node-1 made by hand (its pods gone too).
        floor_node = "node-1"
        by_block: dict[str, list] = {}
        blocks = ipam.store.blocks()
        for b in blocks:
            for o in b.in_use():
                a = b.attribute(o)
                if (a.secondary or {}).get("node") == floor_node:
                    by_block.setdefault(b.cidr, []).append(ReleaseOptions(str(b.ip(o)), a.handle,
                                                                          b.sequence_for.get(str(o))))
        t = time.perf_counter()
        for opts in by_block.values():
            ipam.release_ips(opts)
        ipam.release_host_affinities(floor_node)
        bare = time.perf_counter() - t
        print(f"deleted node ({len(result.released)} addresses, {len(by_block)} blocks): scan and release "
              f"{release * 1000:.0f} ms; floor (the release writes alone) {bare * 1000:.0f} ms; "
              f"ratio {release / bare:.2f}")
        ds.close()
        kube.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
