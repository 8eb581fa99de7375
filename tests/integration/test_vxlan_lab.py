"""VXLAN routing in a lab: calico-node with ``routing = vxlan`` on every node, pods wired
by the real CNI, real packets between them; and a live switch from BGP (``routing =
bird``) to VXLAN by editing the IPPool and the BGPConfiguration, nothing restarted.

The kernel state each node should have is derived here straight from the Nodes and
IPAM blocks in etcd (Calico's rules, not the plugin's code): for every other node a
permanent ARP entry (its tunnel address to its VTEP MAC), a permanent FDB entry (the
MAC to its node address) and a route per block affine to it, and a blackhole per block
affine to this node."""

from __future__ import annotations

import itertools
import json
import subprocess
import time

import attrs
import pytest

from pycalico.core import calc
from pycalico.core.datastore import NotFound
from pycalico.core.lab.netns import run_in_netns
from pycalico.core.lab.pods import add_pod, exec_in_pod, with_datastore
from pycalico.core.resources import load_resource
from pycalico.plugins.ipam.calico_ipam import IPAM
from pycalico.plugins.routing import vxlan

from waiting import wait_for

pytestmark = pytest.mark.lab
POOL = "default-ipv4-ippool"


def ip_json(lab, node, *argv):
    out = lab.exec(node, list(argv), capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


def kernel(lab, node):
    """(routes of protocol 80, permanent ARP on vxlan.calico, permanent self FDB on it)."""
    routes = set()
    for r in ip_json(lab, node, "ip", "-j", "route", "show", "proto", "80"):
        if r.get("type") == "blackhole":
            routes.add(("blackhole", r["dst"]))
        else:
            routes.add((r["dst"], r.get("gateway"), r["dev"], "onlink" in r.get("flags", [])))
    has_device = lab.exec(node, ["ip", "link", "show", "vxlan.calico"], capture_output=True).returncode == 0
    arp = fdb = set()
    if has_device:
        try:
            arp = {(n["dst"], n["lladdr"]) for n in ip_json(lab, node, "ip", "-j", "neigh", "show", "dev", "vxlan.calico")
                   if "PERMANENT" in n.get("state", [])}
            fdb = {(f["mac"], f["dst"]) for f in ip_json(lab, node, "bridge", "-j", "fdb", "show", "dev", "vxlan.calico")
                   if f.get("state") == "permanent" and "self" in f.get("flags", [])}
        except subprocess.CalledProcessError:
            return None  # the agent replaced the device between two reads: look again
    return routes, arp, fdb


def expected(lab, node):
    """What ``node``'s kernel should hold, from the Nodes and blocks in the datastore."""

    def read(ds):
        return ds.list("Node").items, ds.list("IPAMBlock").items

    nodes, blocks = with_datastore(lab, lab.nodes[0], read)
    nodes = {n.metadata.name: n for n in nodes}
    routes, arp, fdb = set(), set(), set()
    for b in blocks:
        host = b.host
        if host == node:
            routes.add(("blackhole", b.spec.cidr))
        elif host in nodes and nodes[host].spec.ipv4_vxlan_tunnel_addr:
            routes.add((b.spec.cidr, nodes[host].spec.ipv4_vxlan_tunnel_addr, "vxlan.calico", True))
    for name, n in nodes.items():
        if name != node and n.spec.ipv4_vxlan_tunnel_addr:
            arp.add((n.spec.ipv4_vxlan_tunnel_addr, n.spec.vxlan_tunnel_mac_addr))
            fdb.add((n.spec.vxlan_tunnel_mac_addr, n.spec.bgp.ipv4_address.split("/")[0]))
    return routes, arp, fdb


def converged(lab, nodes):
    return all(kernel(lab, n) == expected(lab, n) for n in nodes)


def reaches(lab, src, dst_ip):
    return exec_in_pod(lab, src, ["ping", "-c1", "-W2", dst_ip], capture_output=True).returncode == 0


def ips(pods):
    return {p.key: p.ips[0].split("/")[0] for p in pods}


def set_pool(lab, **spec):
    def update(ds):
        pool = ds.get("IPPool", POOL)
        ds.update(attrs.evolve(pool, spec=attrs.evolve(pool.spec, **spec)))

    with_datastore(lab, lab.nodes[0], update)


def test_pods_on_every_node_reach_each_other_and_a_node_joins_without_restarts(make_lab):
    lab = make_lab(nodes=4, routing="vxlan")
    agents = {n.name: lab.agent_pid(n) for n in lab.nodes}
    names = [n.name for n in lab.nodes]
    # node4 leaves the cluster as kube-controllers would clean up after it.
    lab.stop(agents.pop("node4"))

    def forget(ds):
        ipam = IPAM(ds, "node4")
        ipam.release_by_handle("vxlan-tunnel-addr-node4")
        ipam.release_host_affinities("node4")
        ds.delete("Node", "node4")

    with_datastore(lab, "node1", forget)
    pods = [add_pod(lab, n, f"default/p-{n}") for n in names[:3]]
    wait_for(lambda: converged(lab, names[:3]), timeout=30, what="routes, ARP and FDB as the Nodes say")
    routes, arp, fdb = kernel(lab, "node1")
    assert len(arp) == len(fdb) == 2 and len(routes) == 3  # one block per node so far
    for a in pods:
        for key, ip in ips(pods).items():
            if key != a.key:
                assert reaches(lab, a.key, ip), f"{a.key} -> {key} ({ip})"

    # node4 joins: its agent registers it and takes a tunnel address; nobody restarts.
    lab.start_agent("node4")
    late = add_pod(lab, "node4", "default/p-node4")
    wait_for(lambda: converged(lab, names), timeout=30, what="every node knows node4")
    for a in pods:
        assert reaches(lab, a.key, ips([late])[late.key]) and reaches(lab, late.key, ips([a])[a.key])
    assert {n: lab.agent_pid(n) for n in names[:3]} == agents

    # Encapsulation off: every node drops the device, its routes and the tunnel addresses.
    set_pool(lab, vxlan_mode="Never")
    wait_for(lambda: all(kernel(lab, n) == (set(), set(), set()) for n in names), timeout=30, what="VXLAN state removed")
    nodes = with_datastore(lab, "node1", lambda ds: ds.list("Node").items)
    assert [n.spec.ipv4_vxlan_tunnel_addr for n in nodes] == [None] * 4


def test_cross_subnet_encapsulates_only_across_subnets(make_lab):
    lab = make_lab(nodes=3, subnets=2, routing="vxlan")  # node1, node2 in 198.51.100.0/24; node3 in 203.0.113.0/24
    set_pool(lab, vxlan_mode="CrossSubnet")
    p1, p2, p3 = (add_pod(lab, n, f"default/p{i}") for i, n in enumerate(("node1", "node2", "node3"), 1))

    def routes_of_node1():
        return {r["dst"]: (r.get("gateway"), r["dev"]) for r in ip_json(lab, "node1", "ip", "-j", "route", "show", "proto", "80")
                if r.get("type") != "blackhole"}

    def tunnel_of(node):
        return with_datastore(lab, "node1", lambda ds: ds.get("Node", node).spec.ipv4_vxlan_tunnel_addr)

    block2, block3 = (p.ips[0].rsplit(".", 1)[0] for p in (p2, p3))
    wait_for(lambda: {g for g, _ in routes_of_node1().values()} == {"198.51.100.12", tunnel_of("node3")}, timeout=30, what="routes")
    found = routes_of_node1()
    assert next(v for k, v in found.items() if k.startswith(block2)) == ("198.51.100.12", "eth0")
    assert next(v for k, v in found.items() if k.startswith(block3)) == (tunnel_of("node3"), "vxlan.calico")

    def tx_packets():
        stats = ip_json(lab, "node1", "ip", "-j", "-s", "link", "show", "vxlan.calico")[0]["stats64"]
        return stats["tx"]["packets"]

    before = tx_packets()
    for _ in range(10):
        assert reaches(lab, p1.key, ips([p2])[p2.key])
    # Same subnet: none of the 10 echo requests went through the tunnel (the slack is
    # for the IPv6 neighbour discovery the device may send on its own).
    assert tx_packets() - before <= 2
    before = tx_packets()
    for _ in range(10):
        assert reaches(lab, p1.key, ips([p3])[p3.key])
    assert tx_packets() - before >= 10


def test_reconcile_repairs_drift_and_follows_felix_configuration(make_lab):
    """The routing hook called directly in node1's namespace, its agent stopped."""
    lab = make_lab(nodes=2, routing="vxlan")
    add_pod(lab, "node2", "default/p2")
    wait_for(lambda: converged(lab, ["node1", "node2"]), timeout=30, what="first convergence")
    lab.stop(lab.agent_pid("node1"))
    netns = lab.node("node1").netns

    def reconcile():
        def run(ds):
            cache = calc.Cache()
            cache.replace(ds.snapshot())
            return run_in_netns(netns, lambda: vxlan.reconcile(calc.compute(cache, "node1")))

        return with_datastore(lab, "node1", run)

    assert reconcile() == []  # what the agent left is exactly what is wanted
    want = kernel(lab, "node1")
    (route,) = [r for r in want[0] if r[0] != "blackhole"]
    ((mac, dst),) = want[2]
    lab.exec("node1", ["ip", "route", "del", route[0]], check=True)
    lab.exec("node1", ["bridge", "fdb", "del", mac, "dev", "vxlan.calico", "dst", dst], check=True)
    lab.exec("node1", ["ip", "route", "add", "10.65.250.0/26", "via", "198.51.100.1", "proto", "80"], check=True)
    lab.exec("node1", ["ip", "link", "set", "vxlan.calico", "mtu", "1300"], check=True)
    assert sorted(reconcile()) == sorted([
        f"route {route[0]} via {route[1]} dev vxlan.calico onlink added",
        "route 10.65.250.0/26 via 198.51.100.1 dev eth0 removed",
        f"fdb {mac} dst {dst} dev vxlan.calico added",
        "vxlan.calico mtu 1450",
    ])
    assert kernel(lab, "node1") == want and reconcile() == []

    def felix(ds):
        ds.create(load_resource({"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
                                 "metadata": {"name": "node.node1"}, "spec": {"vxlanVNI": 4097, "vxlanMTU": 1400}}))

    with_datastore(lab, "node1", felix)
    lines = reconcile()
    assert lines[0] == "vxlan.calico removed: IFLA_VXLAN_ID 4096 (want 4097)"
    detail = ip_json(lab, "node1", "ip", "-j", "-d", "link", "show", "vxlan.calico")[0]
    assert (detail["linkinfo"]["info_data"]["id"], detail["mtu"]) == (4097, 1400)
    assert kernel(lab, "node1") == want  # routes and neighbours are back on the new device


# --- BGP to VXLAN, live ----------------------------------------------------------------
# Felix runs its VXLAN manager next to BIRD whenever a pool asks for VXLAN, so the bird
# routing plugin runs pycalico.plugins.routing.vxlan.ENCAP beside BGP.

SWITCH_SECONDS = 15.0


def all_reach(lab, pods) -> bool:
    addresses = ips(pods)
    return all(reaches(lab, a.key, addresses[b.key]) for a, b in itertools.permutations(pods, 2))


def bird_routes(lab, node) -> list[str]:
    return [r["dst"] for r in ip_json(lab, node, "ip", "-j", "route", "show", "proto", "bird")
            if r.get("type") != "blackhole"]


def switch_to_vxlan(ds) -> None:
    pool = ds.get("IPPool", POOL)
    ds.update(attrs.evolve(pool, spec=attrs.evolve(pool.spec, vxlan_mode="Always")))
    try:
        bgp = ds.get("BGPConfiguration", "default")
        ds.update(attrs.evolve(bgp, spec=attrs.evolve(bgp.spec, node_to_node_mesh_enabled=False)))
    except NotFound:
        ds.create(load_resource({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
                                 "metadata": {"name": "default"}, "spec": {"nodeToNodeMeshEnabled": False}}))


def test_bgp_to_vxlan_without_restarting_anything(make_lab):
    lab = make_lab(nodes=3, routing="bird")
    names = [n.name for n in lab.nodes]
    pods = [add_pod(lab, n, f"default/p-{n}") for n in names]
    wait_for(lambda: all_reach(lab, pods), timeout=30, what="pods reach each other over BGP routes")
    assert all(len(bird_routes(lab, n)) == 2 for n in names)  # the two other nodes' blocks
    agents = {n: lab.agent_pid(n) for n in names}

    started = time.monotonic()
    with_datastore(lab, "node1", switch_to_vxlan)
    # Reachable again once BGP's routes are gone: then it is VXLAN that carries them.
    wait_for(lambda: not any(bird_routes(lab, n) for n in names) and all_reach(lab, pods),
             timeout=SWITCH_SECONDS, what="pods reach each other over VXLAN alone")
    took = time.monotonic() - started
    wait_for(lambda: converged(lab, names), timeout=SWITCH_SECONDS, what="exactly the VXLAN state the Nodes describe")
    assert {n: lab.agent_pid(n) for n in names} == agents
    print(f"pods reached each other again {took:.1f} s after the switch")
