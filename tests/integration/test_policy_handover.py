"""Moving a node between the iptables and nftables plugins leaves one dataplane: the
plugin that starts removes what the other left, once, and writes nothing when there is
nothing to remove. Real iptables, ipset and nft in a namespace of the test's own."""

from __future__ import annotations

import os
import subprocess

import pytest

from pycalico.core.config import Config, Slot
from pycalico.core.lab import netns
from pycalico.plugins.policy import iptables, nftables
from tests.policy_world import policy_yaml, yaml_state

pytestmark = pytest.mark.lab

STATE = yaml_state("""
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node1-k8s-web--0-eth0, namespace: web, labels: {app: api, projectcalico.org/namespace: web}}
spec: {node: node1, orchestrator: k8s, pod: web-0, endpoint: eth0, interfaceName: cali1234567890a,
       ipNetworks: [10.65.0.5/32], profiles: [kns.web]}
---
""" + policy_yaml("only-api", "app == 'api'", ingress="[{action: Allow, source: {selector: app == 'api'}}]"))


def config(plugin: str) -> Config:
    return Config(node_name="node1", policy=Slot(type=plugin))


def dumps(ns: str) -> dict[str, str]:
    argv = {"iptables": ["iptables-save"], "ip6tables": ["ip6tables-save"], "ipset": ["ipset", "list", "-n"],
            "nft": ["nft", "list", "ruleset"]}
    return {name: subprocess.run(netns.exec_argv(ns, a), capture_output=True, text=True, check=True).stdout
            for name, a in argv.items()}


@pytest.fixture
def node():
    ns = f"pcho{os.getpid()}"
    netns.add(ns)
    try:
        yield ns
    finally:
        netns.delete(ns)


def test_each_plugin_removes_the_others_leftovers_once(node):
    def pass_of(plugin, name):
        return netns.run_in_netns(node, lambda: plugin.pycalico_reconcile_policy(STATE, config(name)))

    ipt = iptables.IptablesPlugin()
    assert not any("removed" in line for line in pass_of(ipt, "iptables"))
    before = dumps(node)
    assert "cali-" in before["iptables"] and "cali40" in before["ipset"] and "calico" not in before["nft"]

    nft = nftables.NftablesPolicy()
    lines = pass_of(nft, "nftables")
    assert any(line.startswith("iptables plugin's ") for line in lines)
    after = dumps(node)
    assert "cali" not in after["iptables"] + after["ip6tables"] + after["ipset"]
    assert "table inet calico" in after["nft"]
    assert pass_of(nft, "nftables") == []  # once: the next pass finds nothing to do at all

    back = iptables.IptablesPlugin()
    lines = pass_of(back, "iptables")
    assert "table inet calico of the nftables plugin removed" in lines
    again = dumps(node)
    assert "table inet calico" not in again["nft"] and "cali-" in again["iptables"]
    assert pass_of(back, "iptables") == []

    # A restart with the same plugin: nothing of the other's to remove, nothing written.
    assert pass_of(iptables.IptablesPlugin(), "iptables") == []
    assert dumps(node)["ipset"] == again["ipset"]
