"""The real calico-node in lab nodes: its probe flags and /readiness (BGP included),
/metrics counting real pods and policies, a refused calico.toml reported and recovered,
JSON logs, and a policy plugin swapped live while BIRD and its sessions stay up."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from pycalico.core.lab import kube
from pycalico.core.lab.netns import run_in_netns
from pycalico.core.lab.pods import add_pod
from unit.test_health import answer
from unit.test_metrics import parse
from waiting import wait_for

pytestmark = pytest.mark.lab

CALICO_NODE = str(Path(sys.executable).parent / "calico-node")
METRICS = '\n[metrics]\nenabled = true\nhost = "127.0.0.1"\nport = 9091\n'
POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]
"""


def probe(lab, node, *flags):
    """``calico-node FLAGS`` run in the node as the kubelet's exec probe would."""
    done = lab.exec(node, [CALICO_NODE, *flags], capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout


def scrape(lab, node):
    reply = run_in_netns(lab.node(node).netns, lambda: answer(9091, "/metrics"))
    return parse(reply[1]) if reply and reply[0] == 200 else None


def bird_pid(lab, node):
    return int((Path(lab.node(node).config_path).parent / "bird" / "bird.pid").read_text())


def mesh_since(lab, node):
    """BIRD's ``since`` of this node's mesh session (changes when the session restarts)."""
    done = lab.exec(node, ["calicoctl", "node", "status"], capture_output=True, text=True, timeout=30)
    return re.search(r"node-to-node mesh \| (\w+)\s+\| (\S+)", done.stdout).groups()


def test_calico_node_as_a_daemon_in_a_bird_cluster(make_lab):
    lab = make_lab(nodes=2, routing="bird", policy="iptables")
    for node in ("node1", "node2"):
        wait_for(lambda node=node: probe(lab, node, "-felix-live", "-felix-ready", "-bird-live", "-bird-ready") == (0, ""),
                 timeout=60, what=f"{node} ready")
    config = Path(lab.node("node1").config_path)
    good = config.read_text()

    # Metrics turned on live, in JSON logs; pods and a policy counted as Felix counts them.
    config.write_text(good + METRICS + '\n[logging]\nformat = "json"\n')
    wait_for(lambda: scrape(lab, "node1"), what="/metrics on node1")
    for key, node, labels in (("default/web", "node1", {"app": "web"}), ("default/client", "node1", {"app": "client"}),
                              ("default/other", "node2", {"app": "other"})):
        add_pod(lab, node, key, labels=labels)
    kube.apply(lab, POLICY, "policy")
    counted = wait_for(lambda: (m := scrape(lab, "node1")) and m.get("felix_active_local_policies") == 1 and m,
                       what="the policy counted")
    assert counted["felix_active_local_endpoints"] == 2
    assert counted["felix_cluster_num_workload_endpoints"] == 3
    assert counted["felix_cluster_num_hosts"] == 2
    assert counted["felix_cluster_num_policies"] == 1
    assert counted["felix_resyncs_started"] == 1
    assert counted["felix_iptables_restore_calls"] >= 1
    assert counted['pycalico_config_reloads_total{result="applied"}'] == 1
    assert counted["pycalico_ready"] == 1

    # The policy slot swapped live: nftables takes over, BIRD and its session stay, no resync.
    pid, since = bird_pid(lab, "node1"), mesh_since(lab, "node1")
    assert since[0] == "up"
    config.write_text(config.read_text().replace('type = "iptables"', 'type = "nftables"'))
    wait_for(lambda: (m := scrape(lab, "node1")) and "felix_nft_calls" in m and m["felix_nft_calls"] >= 1,
             what="nftables in charge")
    assert lab.exec("node1", ["nft", "list", "table", "inet", "calico"], capture_output=True).returncode == 0
    # ... and the iptables plugin's chains and sets are gone: one dataplane, not two.
    for save in (["iptables-save"], ["ip6tables-save"], ["ipset", "list", "-n"]):
        dump = lab.exec("node1", save, capture_output=True, text=True).stdout
        assert "cali" not in dump, save
    assert (bird_pid(lab, "node1"), mesh_since(lab, "node1")) == (pid, since)
    assert scrape(lab, "node1")["felix_resyncs_started"] == 1
    assert probe(lab, "node1", "-felix-ready") == (0, "")

    # A bad edit is refused and reported until the file is good again.
    swapped = config.read_text()
    config.write_text(swapped.replace("port = 9091", "port = 'x'"))
    _, out = wait_for(lambda: (r := probe(lab, "node1", "-felix-ready")) and r[0] == 1 and r, what="refusal")
    assert out == (
        "calico/node is not ready: felix is not ready: readiness probe reporting 503: "
        f"config refused: {config}: metrics.port: expected an integer, got a string 'x'\n"
    )
    assert scrape(lab, "node1")['pycalico_config_reloads_total{result="refused"}'] >= 1
    config.write_text(swapped)
    wait_for(lambda: probe(lab, "node1", "-felix-ready") == (0, ""), what="recovery")

    # BGP down on node1 when node2's agent (and its BIRD) goes: not ready, says why.
    lab.stop(lab.agent_pid("node2"))
    _, out = wait_for(lambda: (r := probe(lab, "node1", "-bird-ready")) and r[0] == 1 and r, timeout=30)
    assert out == "calico/node is not ready: BIRD is not ready: BGP not established with 198.51.100.12\n"
    body = run_in_netns(lab.node("node1").netns, lambda: answer(9099, "/readiness"))
    assert body == (503, "BIRD is not ready: BGP not established with 198.51.100.12\n")
    # calico-node --status: the same reason, then what each plugin says of itself.
    # (policy is nftables by now, which reports its table too)
    code, out = probe(lab, "node1", "--status")
    assert code == 1 and out.splitlines()[0] == "not ready: BIRD is not ready: BGP not established with 198.51.100.12"
    assert f"bird: BIRD pid {bird_pid(lab, 'node1')}: 0 of 1 BGP sessions Established" in out.splitlines()
    assert re.search(r"^nftables: table inet calico: \d+ chains, \d+ sets, \d+ maps$", out, re.M), out
    lab.start_agent("node2")
    wait_for(lambda: probe(lab, "node1", "-bird-ready", "-felix-ready") == (0, ""), timeout=60, what="BGP back")
    code, out = probe(lab, "node1", "--status")
    assert code == 0 and out.splitlines()[0] == "ready"
    assert f"bird: BIRD pid {bird_pid(lab, 'node1')}: 1 of 1 BGP sessions Established" in out.splitlines()

    # Every line the agent logged since JSON was on is one JSON object with level and logger.
    log = (lab.state_dir / "logs" / "calico-node-node1.log").read_text().splitlines()
    entries = [json.loads(line) for line in log[next(i for i, line in enumerate(log) if line.startswith("{")):]]
    assert all({"time", "level", "component", "logger", "msg"} <= set(e) for e in entries)
    assert {e["component"] for e in entries} == {"calico-node"}
    messages = [e["msg"] for e in entries]
    assert any(m.startswith("config reloaded from ") and "restarted: policy iptables -> nftables" in m for m in messages)
    assert any(m.startswith("config reload refused, keeping the last good config: ") for m in messages)
