"""Tunnel addresses on the Node, against a real etcd and the real calico-ipam: what
calico-node's allocate-tunnel-addrs does, done by the routing plugins'
``pycalico_reconcile_node``."""

import ipaddress

import attrs
import pytest

from pycalico.core import calc
from pycalico.core.resources import load_resource
from pycalico.plugins.ipam.calico_ipam import IPAM, NoPool
from pycalico.plugins.routing import ipip, vxlan

NODE = "node1"


def resource(kind, name, spec, **meta):
    return load_resource({"apiVersion": "projectcalico.org/v3", "kind": kind,
                          "metadata": {"name": name, **meta}, "spec": spec})


def pool(ds, name="default-ipv4-ippool", cidr="10.65.0.0/16", **spec):
    return ds.create(resource("IPPool", name, {"cidr": cidr, "blockSize": 26, **spec}))


class Counting:
    """The datastore, counting the requests made through it."""

    def __init__(self, ds):
        self.ds, self.calls = ds, 0

    def __getattr__(self, name):
        self.calls += 1
        return getattr(self.ds, name)


@pytest.fixture
def ds(etcd_datastore):
    etcd_datastore.create(resource("Node", NODE, {"bgp": {"ipv4Address": "198.51.100.11/24", "asNumber": 64512}},
                                   labels={"zone": "a"}))
    return etcd_datastore


def passes(ds, plugin=vxlan, node=NODE):
    """One reconcile_node pass on a fresh snapshot, as the loop runs it."""
    cache = calc.Cache()
    cache.replace(ds.snapshot())
    counting = Counting(ds)
    lines = plugin.reconcile_node(calc.compute(cache, node), counting, IPAM(counting, node))
    return lines, counting.calls


def owner(ds, ip):
    return IPAM(ds, NODE).get_assignment_attributes(ip)


def test_vxlan_pool_gives_the_node_an_address_from_its_own_block_and_a_mac(ds):
    pool(ds, vxlanMode="Always")
    lines, _ = passes(ds)
    spec = ds.get("Node", NODE).spec
    addr = spec.ipv4_vxlan_tunnel_addr
    unset = attrs.evolve(spec, vxlan_tunnel_mac_addr=None)
    mac = vxlan.vtep_mac(attrs.evolve(ds.get("Node", NODE), spec=unset))
    assert spec.vxlan_tunnel_mac_addr == mac
    assert lines == [
        f"IPAM {addr} assigned to vxlan-tunnel-addr-node1",
        f"Node node1 ipv4VXLANTunnelAddr {addr}",
        f"Node node1 vxlanTunnelMACAddr {mac}",
    ]
    held = owner(ds, addr)
    assert held.handle_id == "vxlan-tunnel-addr-node1"
    # Calico stamps only workload addresses with a timestamp.
    assert held.attrs == {"node": NODE, "type": "vxlanTunnelAddress"}
    (affinity,) = [a for a in ds.list("BlockAffinity").items if a.spec.node == NODE]
    assert held.block == affinity.spec.cidr
    assert spec.bgp.as_number == 64512  # the rest of the Node is kept
    # Converged: the next pass reads nothing from the datastore and writes nothing.
    assert passes(ds) == ([], 0)


def test_a_pool_that_stops_encapsulating_takes_the_address_back(ds):
    p = pool(ds, vxlanMode="CrossSubnet")
    passes(ds)
    addr = ds.get("Node", NODE).spec.ipv4_vxlan_tunnel_addr
    ds.update(attrs.evolve(p, spec=attrs.evolve(p.spec, vxlan_mode="Never")))
    lines, _ = passes(ds)
    assert lines == [f"IPAM {addr} released from vxlan-tunnel-addr-node1", "Node node1 ipv4VXLANTunnelAddr (removed)"]
    spec = ds.get("Node", NODE).spec
    assert spec.ipv4_vxlan_tunnel_addr is None and spec.vxlan_tunnel_mac_addr  # the MAC is the node's for good
    assert IPAM(ds, NODE).ips_by_handle("vxlan-tunnel-addr-node1") == []
    assert passes(ds) == ([], 0)


def test_an_address_nobody_assigned_is_replaced(ds):
    pool(ds, vxlanMode="Always")
    node = ds.get("Node", NODE)
    ds.update(attrs.evolve(node, spec=attrs.evolve(node.spec, ipv4_vxlan_tunnel_addr="10.65.200.9")))
    lines, _ = passes(ds)
    addr = ds.get("Node", NODE).spec.ipv4_vxlan_tunnel_addr
    assert addr != "10.65.200.9" and owner(ds, addr).handle_id == "vxlan-tunnel-addr-node1"
    assert f"Node node1 ipv4VXLANTunnelAddr {addr}" in lines


def test_pools_that_do_not_select_the_node_or_forbid_tunnels_give_nothing(ds):
    pool(ds, "elsewhere", "10.65.0.0/16", vxlanMode="Always", nodeSelector="zone == 'b'")
    pool(ds, "workloads", "10.66.0.0/16", vxlanMode="Always", allowedUses=["Workload"])
    assert passes(ds) == ([], 0)
    assert ds.get("Node", NODE).spec.ipv4_vxlan_tunnel_addr is None


def test_a_tunnel_only_pool_gives_tunnel_addresses_and_no_workload_ones(ds):
    pool(ds, "tunnels", "10.67.0.0/16", vxlanMode="Always", allowedUses=["Tunnel"])
    lines, _ = passes(ds)
    addr = ds.get("Node", NODE).spec.ipv4_vxlan_tunnel_addr
    assert ipaddress.ip_address(addr) in ipaddress.ip_network("10.67.0.0/16") and f"IPAM {addr} assigned to vxlan-tunnel-addr-node1" in lines
    with pytest.raises(NoPool, match="allows Workload addresses"):
        IPAM(ds, NODE).auto_assign("pod-handle", {"pod": "p"})


def test_the_node_is_written_with_compare_and_swap_over_a_concurrent_change(ds):
    pool(ds, vxlanMode="Always")
    cache = calc.Cache()
    cache.replace(ds.snapshot())
    node = ds.get("Node", NODE)  # someone else changes the Node after our snapshot
    ds.update(attrs.evolve(node, metadata=attrs.evolve(node.metadata, labels={"zone": "a", "rack": "7"})))
    vxlan.reconcile_node(calc.compute(cache, NODE), ds, IPAM(ds, NODE))
    stored = ds.get("Node", NODE)
    assert stored.metadata.labels == {"zone": "a", "rack": "7"} and stored.spec.ipv4_vxlan_tunnel_addr


def test_ipip_address_lives_in_the_bgp_spec(etcd_datastore):
    ds = etcd_datastore
    ds.create(resource("Node", NODE, {}))
    p = pool(ds, ipipMode="Always")
    lines, _ = passes(ds, ipip)
    addr = ds.get("Node", NODE).spec.bgp.ipv4_ipip_tunnel_addr
    assert lines == [f"IPAM {addr} assigned to ipip-tunnel-addr-node1", f"Node node1 bgp.ipv4IPIPTunnelAddr {addr}"]
    held = owner(ds, addr)
    assert held.handle_id == "ipip-tunnel-addr-node1" and held.attrs["type"] == "ipipTunnelAddress"
    assert passes(ds, ipip) == ([], 0)
    ds.update(attrs.evolve(p, spec=attrs.evolve(p.spec, ipip_mode="Never")))
    assert passes(ds, ipip)[0][-1] == "Node node1 bgp.ipv4IPIPTunnelAddr (removed)"
    assert ds.get("Node", NODE).spec.bgp is None  # an empty bgp section is not allowed
