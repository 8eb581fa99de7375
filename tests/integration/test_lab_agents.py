"""The lab runs calico-node on every node when asked: registration, restarts, teardown."""

from __future__ import annotations


import pytest

from pycalico.core.lab import LabError, node_config_text
from pycalico.core.lab import netns as lab_netns
from pycalico.core.lab.cluster import plan
from pycalico.core.lab.pods import with_datastore
from waiting import wait_for

pytestmark = pytest.mark.lab


def nodes_in_datastore(lab):
    return with_datastore(lab, lab.nodes[0], lambda ds: {n.metadata.name: n for n in ds.list("Node").items})


def test_agents_register_their_nodes_with_autodetected_addresses(make_lab):
    lab = make_lab(nodes=2, policy="nftables")
    registered = nodes_in_datastore(lab)
    assert {name: n.spec.bgp.ipv4_address for name, n in registered.items()} == {
        n.name: n.cidr for n in lab.nodes
    }
    pools = with_datastore(lab, lab.nodes[0], lambda ds: ds.list("IPPool").items)
    assert [(p.metadata.name, p.spec.vxlan_mode, p.spec.ipip_mode) for p in pools] == [
        ("default-ipv4-ippool", "Never", "Never")
    ]
    # The policy plugin the lab chose runs in the node's namespace, not in the root one.
    wait_for(lambda: lab.exec("node1", ["nft", "list", "table", "inet", "calico"], capture_output=True).returncode == 0)

    # An agent stopped and started again re-registers nothing and carries on.
    old = lab.agent_pid("node1")
    assert lab.stop(old)
    assert lab.agent_pid("node1") is None
    new = lab.start_agent("node1")
    assert new != old and lab.agent_pid("node1") == new
    with pytest.raises(LabError, match="calico-node already runs on node1"):
        lab.start_agent("node1")

    # down ends every agent and deletes every node's namespace.
    agents = {n.name: lab.agent_pid(n) for n in lab.nodes}
    summary = lab.down()
    assert set(agents.values()) <= set(summary["killed"])
    assert {n.netns for n in lab.nodes} <= set(summary["deleted_netns"])
    assert not [n for n in lab.nodes if lab_netns.exists(n.netns)]


def test_routing_mode_sets_the_pool_encapsulation_and_the_node_config(tmp_path):
    state = plan("p", 2, 1, tmp_path, routing="vxlan")
    assert (state.routing, state.policy, state.agents) == ("vxlan", "iptables", True)
    assert not plan("p", 2, 1, tmp_path).agents
    with pytest.raises(LabError, match="--routing must be one of none, bird, vxlan, ipip, not 'bgp'"):
        plan("p", 2, 1, tmp_path, routing="bgp")
    text = node_config_text("node1", ["http://198.51.100.2:2379"], "bird", "nftables", tmp_path / "node1")
    assert f'config_dir = "{tmp_path}/node1/bird"' in text
    assert f'socket = "{tmp_path}/node1/bird/bird.ctl"' in text
