"""The ipip plugin in a lab node's namespace, with the desired state built in memory.

This machine's kernel has no ipip module: tunl0 cannot exist here, so the test of the
device itself skips, and what is tested instead is that a pass without it programs the
routes that need no tunnel and then fails, naming the missing kernel feature."""

import subprocess

import pytest

from pycalico.core import calc
from pycalico.core.datastore import Snapshot
from pycalico.core.lab.netns import run_in_netns
from pycalico.core.resources import load_resource
from pycalico.core.resources.ipam import IPAMBlock
from pycalico.plugins.routing import ipip, routetable

pytestmark = pytest.mark.lab


def resource(kind, name, spec):
    return load_resource({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name}, "spec": spec})


def state(mode):
    resources = [
        resource("Node", "node1", {"bgp": {"ipv4Address": "198.51.100.11/24", "ipv4IPIPTunnelAddr": "10.65.0.1"}}),
        resource("Node", "node2", {"bgp": {"ipv4Address": "198.51.100.12/24"}}),
        resource("Node", "node3", {"bgp": {"ipv4Address": "203.0.113.13/24"}}),
        resource("IPPool", "pool", {"cidr": "10.65.0.0/16", "ipipMode": mode}),
        IPAMBlock.new("10.65.0.0/26", "host:node1"),
        IPAMBlock.new("10.65.1.0/26", "host:node2"),
        IPAMBlock.new("10.65.2.0/26", "host:node3"),
    ]
    cache = calc.Cache()
    cache.replace(Snapshot(revision=1, resources=tuple(resources)))
    return calc.compute(cache, "node1")


def ipip_missing(netns):
    probe = subprocess.run(["ip", "-n", netns, "link", "add", "name", "probe0", "type", "ipip"],
                           capture_output=True, text=True)
    if probe.returncode == 0:
        subprocess.run(["ip", "-n", netns, "link", "del", "probe0"], check=True)
    return probe.returncode != 0


@pytest.fixture
def netns(make_lab):
    return make_lab(nodes=1).nodes[0].netns


def test_without_the_ipip_module_routes_needing_no_tunnel_are_still_programmed(netns):
    if not ipip_missing(netns):
        pytest.skip("this kernel has an ipip module: tunl0 is tested by the next test")
    with pytest.raises(ipip.NoIPIP, match="tunl0: this kernel has no ipip support"):
        run_in_netns(netns, lambda: ipip.reconcile(state("CrossSubnet")))
    assert [str(r) for r in run_in_netns(netns, routetable.routes)] == [
        "blackhole 10.65.0.0/26",
        "10.65.1.0/26 via 198.51.100.12 dev eth0",
    ]
    # No pool encapsulates any more: the routes go, and no tunl0 is needed.
    run_in_netns(netns, lambda: ipip.reconcile(state("Never")))
    assert run_in_netns(netns, routetable.routes) == []


def test_tunl0_carries_the_tunnel_address_and_the_remote_blocks(netns):
    if ipip_missing(netns):
        pytest.skip("this kernel has no ipip module (tunl0)")
    lines = run_in_netns(netns, lambda: ipip.reconcile(state("Always")))
    assert "tunl0 address 10.65.0.1/32 added" in lines and "tunl0 mtu 1480" in lines
    assert [str(r) for r in run_in_netns(netns, routetable.routes)] == [
        "blackhole 10.65.0.0/26",
        "10.65.1.0/26 via 198.51.100.12 dev tunl0 onlink",
        "10.65.2.0/26 via 203.0.113.13 dev tunl0 onlink",
    ]
    assert run_in_netns(netns, lambda: ipip.reconcile(state("Always"))) == []
