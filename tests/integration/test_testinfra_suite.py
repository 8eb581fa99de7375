"""The operators' suite, ``pytest --pyargs pycalico.testinfra``, against lab nodes.

The suite runs as an operator runs it, in a pytest process of its own, inside each
node's network namespace with testinfra's local backend (one node through Ansible's
shell module: an inventory whose host is ``ansible_connection: local``, and
``--force-ansible``, since testinfra would otherwise run a local host itself), and its
JUnit report is read back. On a bird lab and a vxlan lab of three nodes with a pod each, it
passes on every node, skipping only the check of the other routing mode. Then things
are broken and the suite must fail the right check, naming the node and saying what
differs: a BGP session disabled in BIRD; with the agents of node1 and node2 stopped
first (so that no pass repairs anything), a remote block's route deleted and
cali-FORWARD flushed on node1, vxlan.calico's MTU changed on node2; an address
allocated in IPAM that nothing uses (every node reports it: the check is cluster-wide);
and on a node whose policy is nftables, its filter-FORWARD chain flushed.
The expected values are read from the datastore here, not from the suite's code.
"""

from __future__ import annotations

import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pycalico.core.ctl.node import socket_of
from pycalico.core.lab import pods
from pycalico.core.lab.pods import add_pod, with_datastore
from pycalico.plugins.ipam.calico_ipam import IPAM
from pycalico.plugins.routing.bird import READY_THRESHOLD
from pycalico.plugins.routing.bird.options import Options as BirdOptions

from waiting import wait_for

pytestmark = pytest.mark.lab

CHECKS = ("test_calico_node_running_and_ready", "test_config_valid", "test_cni_files", "test_bgp_sessions",
          "test_routes_to_remote_blocks", "test_vxlan_device", "test_policy_dataplane", "test_ipam_check_clean")
SUITE_TIMEOUT = 300


def suite_argv(lab, node: str, report: Path, hosts: str) -> list[str]:
    rec = lab.node(node)
    return [
        os.path.join(os.path.dirname(sys.executable), "pytest"), "-p", "no:cacheprovider", "-q",
        "--pyargs", "pycalico.testinfra", hosts, f"--junitxml={report}",
        "--calico-config", rec.config_path,
        "--cni-bin-dir", ":".join(pods.cni_path()),
        "--cni-conf-dir", str(pods.conflist_path(lab, node).parent),
    ]


def run_suite(lab, tmp: Path, nodes: list[str], ansible: str | None = None) -> dict[str, dict[str, tuple[str, str]]]:
    """The suite's verdict on each node, all at once: node -> test -> (outcome, message).
    ``ansible``: the node checked through testinfra's ansible backend."""
    tmp.mkdir(parents=True, exist_ok=True)

    def one(node: str) -> dict[str, tuple[str, str]]:
        report = tmp / f"{node}.xml"
        env = {}
        if node == ansible:
            inventory = tmp / "inventory.yml"
            inventory.write_text(f"all:\n  hosts:\n    {node}:\n      ansible_connection: local\n"
                                 f"      ansible_python_interpreter: {sys.executable}\n")
            hosts = f"--hosts=ansible://{node}"
            argv = suite_argv(lab, node, report, hosts) + [f"--ansible-inventory={inventory}", "--force-ansible"]
            env = {"ANSIBLE_HOME": str(tmp / "ansible-home"), "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp")}
        else:
            argv = suite_argv(lab, node, report, "--hosts=local://")
        done = lab.exec(node, argv, env=env, cwd=tmp, capture_output=True, text=True, timeout=SUITE_TIMEOUT)
        assert report.exists(), f"the suite wrote no report on {node}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
        return junit(report)

    with ThreadPoolExecutor(len(nodes)) as pool:
        return dict(zip(nodes, pool.map(one, nodes)))


def junit(path: Path) -> dict[str, tuple[str, str]]:
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name").split("[")[0]
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = child.get("message", "") + "\n" + (child.text or "")
        out[name] = (outcome, message)
    assert sorted(out) == sorted(CHECKS), f"{path}: {sorted(out)}"
    return out


def outcomes(verdict: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {name: outcome for name, (outcome, _) in verdict.items()}


def all_pass_but(skipped: str) -> dict[str, str]:
    return {name: "skipped" if name == skipped else "passed" for name in CHECKS}


def three_nodes_with_pods(make_lab, routing: str):
    lab = make_lab(nodes=3, routing=routing)
    for node in ("node1", "node2", "node3"):
        add_pod(lab, node, f"default/pod-{node}")
    return lab


def leak_an_address(lab) -> str:
    """An address of node3's block allocated to a pod that never existed."""
    result = with_datastore(lab, "node3", lambda ds: IPAM(ds, "node3").auto_assign(
        "k8s-pod-network.leaked-by-test", {"pod": "ghost", "namespace": "default"}))
    return str(result.v4[0].ip)


def datastore(lab):
    return with_datastore(lab, "node1", lambda ds: (
        {n.metadata.name: n for n in ds.list("Node").items}, ds.list("IPAMBlock").items))


def test_suite_on_vxlan_lab(make_lab, tmp_path):
    lab = three_nodes_with_pods(make_lab, "vxlan")
    clean = run_suite(lab, tmp_path / "clean", ["node1", "node2", "node3"], ansible="node3")
    for node, verdict in clean.items():
        assert outcomes(verdict) == all_pass_but("test_bgp_sessions"), (node, verdict)
        assert verdict["test_bgp_sessions"][1].startswith(f"{node}: routing is 'vxlan': BGP runs only with routing bird")

    nodes, blocks = datastore(lab)
    block2 = next(b.spec.cidr for b in blocks if b.host == "node2")
    tunnel2 = nodes["node2"].spec.ipv4_vxlan_tunnel_addr
    for node in ("node1", "node2"):
        lab.stop(lab.agent_pid(node))
    for node, argv in (("node1", ["ip", "route", "del", block2]), ("node1", ["iptables", "-F", "cali-FORWARD"]),
                       ("node2", ["ip", "link", "set", "vxlan.calico", "mtu", "1400"])):
        lab.exec(node, argv, check=True)
    leaked = leak_an_address(lab)
    broken = run_suite(lab, tmp_path / "broken", ["node1", "node2", "node3"])

    node1, node2, node3 = broken["node1"], broken["node2"], broken["node3"]
    assert outcomes(node1) == {**all_pass_but("test_bgp_sessions"), "test_calico_node_running_and_ready": "failed",
                               "test_routes_to_remote_blocks": "failed", "test_policy_dataplane": "failed",
                               "test_ipam_check_clean": "failed"}, node1
    assert "node1: calico/node is not ready: felix is not ready" in node1["test_calico_node_running_and_ready"][1]
    assert (f"node1: no route to node2's block {block2}, expected via {tunnel2} dev vxlan.calico (VXLAN)"
            in node1["test_routes_to_remote_blocks"][1])
    assert "node1: iptables filter chain cali-FORWARD has 0 rules, expected Felix's" in node1["test_policy_dataplane"][1]
    # The host MTU (the lab's eth0: 1500) less VXLAN's 50 bytes, as Felix sets it.
    assert outcomes(node2) == {**all_pass_but("test_bgp_sessions"), "test_calico_node_running_and_ready": "failed",
                               "test_vxlan_device": "failed", "test_ipam_check_clean": "failed"}, node2
    assert "node2: vxlan.calico MTU is 1400, expected 1450" in node2["test_vxlan_device"][1]
    assert outcomes(node3) == {**all_pass_but("test_bgp_sessions"), "test_ipam_check_clean": "failed"}, node3
    for name, verdict in broken.items():
        text = verdict["test_ipam_check_clean"][1]
        assert f"{name}: calicoctl ipam check found 1 problem(s): 1 IPs that are allocated in IPAM but not actually in use" in text
        assert f"{name}: {leaked} leaked; attrs Main:k8s-pod-network.leaked-by-test" in text


def test_suite_on_bird_lab(make_lab, tmp_path):
    lab = three_nodes_with_pods(make_lab, "bird")
    clean = run_suite(lab, tmp_path / "clean", ["node1", "node2", "node3"])
    for node, verdict in clean.items():
        assert outcomes(verdict) == all_pass_but("test_vxlan_device"), (node, verdict)
        assert "no IPv4 IP pool has vxlanMode Always or CrossSubnet" in verdict["test_vxlan_device"][1]

    nodes, blocks = datastore(lab)
    ip2, ip3 = (nodes[n].spec.bgp.ipv4_address.split("/")[0] for n in ("node2", "node3"))
    block3 = next(b.spec.cidr for b in blocks if b.host == "node3")
    socket = socket_of(Path(lab.node("node2").config_path))
    # Past BIRD's first 30 s, -bird-ready asks for one Established peer, not all: the
    # nodes stay ready and only the BGP check may fail.
    started = BirdOptions(config_dir=str(Path(socket).parent)).pid_file.stat().st_mtime
    time.sleep(max(0.0, READY_THRESHOLD + 1 - (time.time() - started)))
    lab.exec("node2", ["birdc", "-s", socket, "disable", f"Mesh_{ip3.replace('.', '_')}"], check=True, capture_output=True)

    def node3_sees_it_down() -> bool:
        status = lab.exec("node3", ["calicoctl", "node", "status"], capture_output=True, text=True).stdout
        return not re.search(rf"\| {re.escape(ip2)} .*\| Established", status)

    wait_for(node3_sees_it_down, timeout=30, what="node3's session with node2 to go down")
    broken = run_suite(lab, tmp_path / "broken", ["node1", "node2", "node3"])

    assert outcomes(broken["node1"]) == all_pass_but("test_vxlan_device"), broken["node1"]
    node2, node3 = broken["node2"], broken["node3"]
    for verdict in (node2, node3):
        assert outcomes(verdict) == {**all_pass_but("test_vxlan_device"), "test_bgp_sessions": "failed",
                                     "test_routes_to_remote_blocks": "failed"}, verdict
    assert f"node2: BGP peer {ip3} is down, expected Established" in node2["test_bgp_sessions"][1]
    assert re.search(rf"node3: BGP peer {re.escape(ip2)} is \w+.*, expected Established", node3["test_bgp_sessions"][1])
    assert (f"node2: no route to node3's block {block3}, expected via {ip3} dev eth0 (BGP)"
            in node2["test_routes_to_remote_blocks"][1])


def test_suite_on_nftables_node(make_lab, tmp_path):
    lab = make_lab(nodes=1, routing="vxlan", policy="nftables")
    add_pod(lab, "node1", "default/pod-node1")
    clean = run_suite(lab, tmp_path / "clean", ["node1"])["node1"]
    assert outcomes(clean) == all_pass_but("test_bgp_sessions"), clean

    lab.stop(lab.agent_pid("node1"))
    lab.exec("node1", ["nft", "flush", "chain", "inet", "calico", "filter-FORWARD"], check=True)
    broken = run_suite(lab, tmp_path / "broken", ["node1"])["node1"]
    assert outcomes(broken) == {**all_pass_but("test_bgp_sessions"), "test_calico_node_running_and_ready": "failed",
                                "test_policy_dataplane": "failed"}, broken
    assert ("node1: table inet calico chain filter-FORWARD has 0 rules, expected Felix's"
            in broken["test_policy_dataplane"][1])
