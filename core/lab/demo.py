"""``calico-lab demo``: build a small cluster, show what it is, take it down again."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import netns
from .cluster import Lab

def reachable(lab: Lab, src_netns: str, ip: str) -> bool:
    argv = netns.exec_argv(src_netns, ["ping", "-c", "1", "-W", "1", ip])
    return subprocess.run(argv, capture_output=True).returncode == 0


def matrix(lab: Lab) -> str:
    """Who can ping whom on the underlay, checked with real packets."""
    nodes = lab.nodes
    pairs = [(a.name, b) for a in nodes for b in nodes if a is not b]
    with ThreadPoolExecutor(max_workers=8) as pool:
        ok = pool.map(lambda pair: reachable(lab, lab.node(pair[0]).netns, pair[1].ip), pairs)
        results = {(a, b.name): good for (a, b), good in zip(pairs, ok)}
    width = max(len(n.name) for n in nodes) + 2
    lines = [" " * width + "".join(f"{n.name:>{width}}" for n in nodes)]
    for a in nodes:
        cells = ("-" if a is b else ("ok" if results[(a.name, b.name)] else "FAIL") for b in nodes)
        lines.append(f"{a.name:<{width}}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


MANIFEST = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 10.65.0.0/16
  ipipMode: Never
  vxlanMode: Never
  natOutgoing: true
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: true
  asNumber: 64512
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: allow-dns
spec:
  selector: all()
  types: [Egress]
  egress:
    - action: Allow
      protocol: UDP
      destination:
        ports: [53]
"""


def run_on(lab: Lab, node: str, argv: list[str], stdin: str | None = None) -> str:
    """A command in a node's namespace, with its output indented for the transcript."""
    print(f"\n{node}$ {' '.join(argv)}")
    result = lab.exec(node, argv, input=stdin, capture_output=True, text=True)
    out = "\n".join(line for line in (result.stdout + result.stderr).splitlines() if line.strip())
    print("  " + out.replace("\n", "\n  "))
    return out


def datastore(lab: Lab) -> None:
    """Calico resources in through one node, out through another, stored in the lab's etcd."""
    first, last = lab.nodes[0].name, lab.nodes[-1].name
    run_on(lab, first, ["calicoctl", "apply", "-f", "-"], stdin=MANIFEST)
    run_on(lab, last, ["calicoctl", "get", "ippools", "-o", "wide"])
    run_on(lab, last, ["calicoctl", "get", "globalnetworkpolicies"])
    endpoints = ",".join(lab.etcd_endpoints)
    run_on(lab, last, ["etcdctl", f"--endpoints={endpoints}", "get", "--prefix", "--keys-only", "/calico/resources/"])


def workloads(lab: Lab) -> None:
    """Pods wired by the real calico CNI executable, with addresses from calico-ipam blocks."""
    from . import pods

    first, second = lab.nodes[0].name, lab.nodes[1].name
    print("\nPods, added through the calico CNI executable in each node's namespace:")
    for node, key in ((first, "shop/web-0"), (first, "shop/api-0"), (second, "shop/db-0")):
        pod = pods.add_pod(lab, node, key, labels={"app": key.split("/")[1][:-2]})
        print(f"  {pod.key:<12} on {pod.node:<6} {', '.join(pod.ips)}")
    run_on(lab, first, ["calicoctl", "ipam", "show", "--show-blocks"])
    web, api = (pods.get_pod(lab, k).ips[0].split("/")[0] for k in ("shop/web-0", "shop/api-0"))
    ok = pods.exec_in_pod(lab, "shop/web-0", ["ping", "-c", "1", "-W", "1", api], capture_output=True).returncode == 0
    print(f"\nshop/web-0 ({web}) -> shop/api-0 ({api}) on the same node: {'reachable' if ok else 'NOT reachable'}")


def show(lab: Lab) -> None:
    print(f"\nLab {lab.name!r}: {len(lab.nodes)} nodes on the underlay bridge in {lab.underlay_netns}")
    print(f"  etcd        {', '.join(lab.etcd_endpoints)} in {lab.cp_netns}: "
          f"{'healthy' if lab.etcd_healthy() else 'NOT healthy'}")
    for n in lab.nodes:
        print(f"  {n.name:<11} {n.cidr:<18} netns {n.netns:<14} config {n.config_path}")
    print("\nUnderlay reachability (ping from row to column):")
    print(matrix(lab))
    first = lab.nodes[0]
    print(f"\n{first.config_path}:")
    print("  " + Path(first.config_path).read_text().strip().replace("\n", "\n  "))


def run(name: str = "demo", keep: bool = False, nodes: int = 3, state_root: str | None = None) -> int:
    print(f"Building a {nodes}-node lab in network namespaces ...")
    lab = Lab.up(name, nodes=nodes, state_root=state_root, recreate=True)
    try:
        show(lab)
        datastore(lab)
        workloads(lab)
    finally:
        if keep:
            print(f"\nKept. Try:\n  calico-lab status --name {name}\n"
                  f"  calico-lab exec {lab.nodes[0].name} --name {name} -- ip addr\n"
                  f"  calico-lab down --name {name}")
        else:
            lab.down()
            print(f"\nLab {name!r} torn down: every namespace and process it made is gone.")
    sys.stdout.flush()
    return 0
