"""``calico-lab up --typha 2``: a 3-node bird cluster whose agents all read through two
calico-typha replicas in the control-plane namespace. Pods talk, etcd serves only the
Typhas' watches, policies reach the kernels through Typha, and when the Typha serving
node1 is SIGKILLed the agents move to the other one without a restart."""

from __future__ import annotations

import os
import re
import signal
import time
from types import SimpleNamespace

import pytest

from integration.test_bird_lab import assert_all_reach, ping
from integration.test_lab import lab_namespaces
from integration.test_typha import etcd_watchers
from pycalico.core import config as cfg
from pycalico.core.lab import Lab, LabError, kube, node_config_text, pods
from pycalico.core.lab import typha as lab_typha
from pycalico.core.lab.cli import main as cli_main
from pycalico.core.lab.cluster import plan
from pycalico.core.lab.config import typha_config_text
from pycalico.core.lab.netns import run_in_netns
from waiting import wait_for

pytestmark = pytest.mark.lab


def deny_ingress(app: str) -> str:
    """A Kubernetes NetworkPolicy that selects pods ``app`` and allows them no ingress."""
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny-to-{app}, "
            f"namespace: default}}\nspec: {{podSelector: {{matchLabels: {{app: {app}}}}}, policyTypes: [Ingress]}}\n")


def watchers(lab) -> int:
    """etcd's open watches, read from its /metrics inside the cp namespace."""
    server = SimpleNamespace(endpoint=lab.etcd_endpoints[0])
    return run_in_netns(lab.cp_netns, lambda: etcd_watchers(server), timeout=10)


def typha_of(lab, node: str) -> str | None:
    """The Typha that holds the node's open connection, from the Typhas' logs: each one
    logs an agent's hello (``connection N from PEER: NODE ...``) and the close
    (``connection N (NODE, PEER) closed``)."""
    for t in lab.state.typhas:
        log = (lab.state_dir / "logs" / f"{t.name}.log").read_text()
        opened = set(re.findall(rf"connection (\d+) from \S+ \d+\): {node} ", log))
        closed = set(re.findall(rf"connection (\d+) \({node}, ", log))
        if opened - closed and lab.typha_pid(t.name) is not None:
            return t.name
    return None


def connections(lab) -> dict[str, int | None]:
    """Typha -> its typha_connections_active, as ``calico-lab status`` reports it."""
    return {t["name"]: t["connections"] for t in lab.status()["typha"]}


def test_replicas_get_ports_of_their_own_and_the_nodes_list_them_all(tmp_path):
    state = plan("t", 2, 1, tmp_path, routing="bird", typhas=3)
    assert [(t.name, t.address, t.health_port, t.metrics_port) for t in state.typhas] == [
        ("calico-typha-1", "198.51.100.2:5473", 9098, 9093),
        ("calico-typha-2", "198.51.100.2:5474", 9099, 9094),
        ("calico-typha-3", "198.51.100.2:5475", 9100, 9095),
    ]
    server = cfg.parse(typha_config_text(state.etcd_endpoints, state.typhas[1])).typha.server
    assert (server.host, server.port, server.health.host, server.health.port) == (
        "198.51.100.2", 5474, "localhost", 9099)
    assert (server.metrics.enabled, server.metrics.host, server.metrics.port) == (True, "198.51.100.2", 9094)
    node = cfg.parse(node_config_text("node1", state.etcd_endpoints, typha_addresses=[t.address for t in state.typhas]))
    assert node.typha.addresses == ("198.51.100.2:5473", "198.51.100.2:5474", "198.51.100.2:5475")
    assert not cfg.parse(node_config_text("node1", state.etcd_endpoints)).typha.addresses
    with pytest.raises(LabError, match="--typha must be between 0 and 5, not 6"):
        plan("t", 2, 1, tmp_path, typhas=6)


def test_a_typha_that_dies_at_start_rolls_the_lab_back(lab_state_root, lab_name, monkeypatch):
    monkeypatch.setattr(lab_typha, "argv", lambda typha: ["/bin/false"])
    with pytest.raises(LabError, match="calico-typha-1 exited during startup"):
        Lab.up(lab_name, nodes=1, state_root=lab_state_root, typha=1)
    assert lab_namespaces(lab_name) == []
    assert Lab.list(lab_state_root) == []


def test_agents_read_through_typha_and_fail_over(make_lab, capsys):
    lab = make_lab(nodes=3, routing="bird", policy="nftables", typha=2)
    agents = {n.name: lab.agent_pid(n) for n in lab.nodes}
    a, b, c = (pods.add_pod(lab, f"node{i}", f"default/{app}", labels={"app": app})
               for i, app in enumerate("abc", 1))
    for other in (b, c):
        wait_for(lambda: ping(lab, a, other.ip), timeout=30, what=f"BGP routes from node1 to {other.key}")
    assert_all_reach(lab, [a, b, c])

    # Every agent reads through a Typha and etcd serves one watch per Typha, none per agent.
    wait_for(lambda: sum(connections(lab).values()) == 3, what="the three agents connected to the Typhas")
    assert watchers(lab) == 2

    kube.apply(lab, deny_ingress("c"))
    wait_for(lambda: not ping(lab, a, c.ip), timeout=15, what="deny-to-c enforced on node3")
    assert not ping(lab, b, c.ip)
    assert ping(lab, c, a.ip) and ping(lab, a, b.ip)

    # The Typha node1 reads from dies; every agent it served moves to the other one.
    victim = typha_of(lab, "node1")
    survivor = next(t.name for t in lab.state.typhas if t.name != victim)
    pid = lab.typha_pid(victim)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    lab.stop(pid)  # reaps it; status now says it is not running
    wait_for(lambda: typha_of(lab, "node1") == survivor, timeout=15, what=f"node1's agent on {survivor}")
    moved = time.monotonic() - killed
    wait_for(lambda: connections(lab) == {victim: None, survivor: 3}, timeout=15,
             what=f"all three agents on {survivor}")
    wait_for(lambda: watchers(lab) == 1, timeout=10, what=f"etcd to drop {victim}'s watch")

    # A later change reaches node1's kernel through the survivor: a is now closed to b,
    # and c is open again.
    kube.delete(lab, deny_ingress("c"))
    kube.apply(lab, deny_ingress("a"))
    wait_for(lambda: not ping(lab, b, a.ip), timeout=15, what="deny-to-a enforced on node1")
    wait_for(lambda: ping(lab, b, c.ip), timeout=15, what="deny-to-c removed on node3")
    assert ping(lab, a, b.ip)
    assert {n.name: lab.agent_pid(n) for n in lab.nodes} == agents, "an agent restarted"

    assert cli_main(["status", "--name", lab.name, "--state-dir", str(lab.state_dir.parent)]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"^  {victim} +198\.51\.100\.2:547\d +not running ", text, re.MULTILINE), text
    assert re.search(rf"^  {survivor} +198\.51\.100\.2:547\d +pid {lab.typha_pid(survivor)} +ready, 3 agent\(s\)",
                     text, re.MULTILINE), text

    # The replica comes back in sync; the agents stay where they are.
    lab.start_typha(victim)
    assert connections(lab) == {victim: 0, survivor: 3}
    wait_for(lambda: watchers(lab) == 2, timeout=10, what=f"{victim}'s watch on etcd again")
    # down ends both Typhas by their recorded pids, with everything else.
    typha_pids = {lab.typha_pid(victim), lab.typha_pid(survivor)}
    assert typha_pids <= set(lab.down()["killed"])
    print(f"node1's agent on {survivor} {moved:.2f} s after {victim} was killed")
