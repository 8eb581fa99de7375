"""The routes an encapsulation wants, from the desired state (no kernel involved):
Felix's rules for remote blocks, borrowed addresses, local blackholes, CrossSubnet,
and what is left out while something is missing."""

import attrs
import pytest

from pycalico.core import calc
from pycalico.core.datastore import Snapshot
from pycalico.core.resources import load_resource
from pycalico.core.resources.ipam import IPAMBlock
from pycalico.plugins.routing import ipip, routes, vxlan
from pycalico.plugins.routing.routetable import Route

NODES = {  # name: (address, VXLAN tunnel address)
    "node1": ("198.51.100.11/24", "10.65.0.0"),
    "node2": ("198.51.100.12/24", "10.65.1.0"),
    "node3": ("203.0.113.13/24", "10.65.2.0"),
}


def node(name, address, tunnel=None):
    spec = {"bgp": {"ipv4Address": address}}
    if tunnel:
        spec["ipv4VXLANTunnelAddr"] = tunnel
    return load_resource({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name}, "spec": spec})


def pool(name="default-ipv4-ippool", cidr="10.65.0.0/16", vxlan_mode="Never", ipip_mode="Never"):
    spec = {"cidr": cidr, "blockSize": 26, "vxlanMode": vxlan_mode, "ipipMode": ipip_mode}
    return load_resource({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name}, "spec": spec})


def block(cidr, host, deleted=False):
    b = IPAMBlock.new(cidr, affinity=f"host:{host}" if host else None)
    return attrs.evolve(b, spec=attrs.evolve(b.spec, deleted=deleted))


def wep(name, host, ip):
    spec = {"node": host, "orchestrator": "k8s", "pod": name, "endpoint": "eth0", "interfaceName": "cali0",
            "ipNetworks": [ip]}
    return load_resource({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                          "metadata": {"name": f"{host}-k8s-{name}-eth0", "namespace": "default"}, "spec": spec})


def state(*resources, me="node1"):
    cache = calc.Cache()
    cache.replace(Snapshot(revision=1, resources=resources))
    return calc.compute(cache, me)


def cluster(*extra, nodes=NODES):
    return [
        *(node(n, a, t) for n, (a, t) in nodes.items()),
        block("10.65.0.0/26", "node1"),
        block("10.65.1.0/26", "node2"),
        block("10.65.2.0/26", "node3"),
        block("10.65.2.64/26", "node3"),
        block("10.65.3.0/26", "node2", deleted=True),
        block("10.99.0.0/26", "node2"),  # in no pool
        block("10.65.4.0/26", None),  # affine to nobody
        wep("borrower", "node3", "10.65.1.7/32"),  # from node2's block
        wep("guest", "node2", "10.65.0.9/32"),  # from our own block
        wep("home", "node2", "10.65.1.5/32"),  # in its own node's block: covered by the block route
        *extra,
    ]


def vx(dst, gw):
    return Route(dst, gateway=gw, dev="vxlan.calico", onlink=True)


def test_vxlan_always_routes_every_remote_block_through_its_vtep():
    s = state(*cluster(pool(vxlan_mode="Always")))
    assert sorted(routes.routes(s, "vxlan_mode", vxlan.tunnel_hop, "eth0")) == sorted([
        Route("10.65.0.0/26", "blackhole"),
        vx("10.65.1.0/26", "10.65.1.0"),
        vx("10.65.2.0/26", "10.65.2.0"),
        vx("10.65.2.64/26", "10.65.2.0"),
        vx("10.65.1.7/32", "10.65.2.0"),
        vx("10.65.0.9/32", "10.65.1.0"),
    ])


def test_cross_subnet_goes_straight_to_nodes_of_this_subnet():
    s = state(*cluster(pool(vxlan_mode="CrossSubnet")))
    wanted = routes.routes(s, "vxlan_mode", vxlan.tunnel_hop, "eth0")
    assert Route("10.65.1.0/26", gateway="198.51.100.12", dev="eth0") in wanted
    assert Route("10.65.0.9/32", gateway="198.51.100.12", dev="eth0") in wanted
    assert vx("10.65.2.0/26", "10.65.2.0") in wanted  # node3 is in 203.0.113.0/24


def test_ipip_routes_go_to_the_node_address_through_tunl0():
    s = state(*cluster(pool(ipip_mode="Always")))
    wanted = routes.routes(s, "ipip_mode", ipip.tunnel_hop, "eth0")
    assert Route("10.65.2.0/26", gateway="203.0.113.13", dev="tunl0", onlink=True) in wanted
    assert Route("10.65.1.0/26", gateway="198.51.100.12", dev="tunl0", onlink=True) in wanted
    assert routes.routes(s, "vxlan_mode", vxlan.tunnel_hop, "eth0") == []


def test_without_a_local_tunnel_only_unencapsulated_routes_are_made():
    s = state(*cluster(pool(vxlan_mode="CrossSubnet")))
    assert sorted(routes.routes(s, "vxlan_mode", None, "eth0")) == sorted([
        Route("10.65.0.0/26", "blackhole"),
        Route("10.65.1.0/26", gateway="198.51.100.12", dev="eth0"),
        Route("10.65.0.9/32", gateway="198.51.100.12", dev="eth0"),
    ])


def test_a_node_without_vtep_or_address_gets_no_routes_yet():
    nodes = {**NODES, "node2": ("198.51.100.12/24", None)}
    s = state(*cluster(pool(vxlan_mode="Always"), nodes=nodes))
    dsts = {str(r.dst) for r in routes.routes(s, "vxlan_mode", vxlan.tunnel_hop, "eth0")}
    assert dsts == {"10.65.0.0/26", "10.65.2.0/26", "10.65.2.64/26", "10.65.1.7/32"}
    no_address = [r for r in cluster(pool(vxlan_mode="Always")) if r.kind != "Node" or r.name != "node3"]
    s = state(*no_address)
    dsts = {str(r.dst) for r in routes.routes(s, "vxlan_mode", vxlan.tunnel_hop, "eth0")}
    assert dsts == {"10.65.0.0/26", "10.65.1.0/26", "10.65.0.9/32"}


def test_only_pools_of_the_encapsulation_count():
    s = state(*cluster(pool(vxlan_mode="Always", cidr="10.65.0.0/24"), pool("other", "10.65.1.0/24")))
    dsts = {str(r.dst) for r in routes.routes(s, "vxlan_mode", vxlan.tunnel_hop, "eth0")}
    assert dsts == {"10.65.0.0/26", "10.65.0.9/32"}


def test_route_checks_its_shape_and_prints_like_ip_route():
    assert str(vx("10.65.1.0/26", "10.65.1.0")) == "10.65.1.0/26 via 10.65.1.0 dev vxlan.calico onlink"
    assert str(Route("10.65.0.0/26", "blackhole")) == "blackhole 10.65.0.0/26"
    with pytest.raises(ValueError, match="needs a device"):
        Route("10.65.0.0/26", gateway="10.0.0.1")
    with pytest.raises(ValueError, match="takes no gateway"):
        Route("10.65.0.0/26", "blackhole", dev="eth0")
