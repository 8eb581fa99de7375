"""The calico_node role provisions three bare lab nodes as it would bare-metal hosts.

One lab for the module (``Lab.up(..., bare=True)``): ansible-playbook runs the role
through the calico_lab connection plugin with the lab's inventory (bird routing, node1
a route reflector, nftables policy, the worked host-gw plugin installed but unused).
Then: the testinfra suite passes on all three through the same inventory, pods on
different nodes reach each other, a second run changes nothing, and a bad AS number
stops the play before anything on the nodes changes. The wheels are built once from
this checkout; pycalico's dependencies come from a wheelhouse, since the nodes have no
route to a package index.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from itertools import permutations
from pathlib import Path

import pytest
import yaml

from pycalico.core.lab import Lab
from pycalico.core.lab import pods as lab_pods
from pycalico.core.lab.inventory import inventory
from lab_fixtures import lab_for
from waiting import wait_for

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(sys.executable).parent
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
RR_CLUSTER_ID = "244.0.0.1"
PLAYBOOK = """
- name: Provision the lab's bare nodes
  hosts: calico_lab_nodes
  gather_facts: false
  roles:
    - role: calico_node
"""
# Files the role writes, read back to prove a failed play left them alone.
WATCHED = ["/etc/calico/calico.toml", "/etc/cni/net.d/10-calico.conflist", "/usr/local/sbin/calico-node-supervisor",
           "/opt/cni/bin/calico", "/usr/local/bin/calico-node", "/run/calico/calico-node-supervisor.pid",
           "/run/calico/calico-node.pid"]


def group_vars(lab: Lab, wheel: Path, wheelhouse: Path, plugin: Path) -> dict:
    return {
        "calico_node_wheel": str(wheel),
        "calico_node_wheelhouse": str(wheelhouse),
        "calico_node_plugin_wheels": [str(plugin)],
        "calico_toml_datastore": {"type": "etcd", "etcd": {"endpoints": list(lab.etcd_endpoints)}},
        "calico_toml_routing": {"type": "bird"},
        "calico_toml_policy": {"type": "nftables"},
        "calico_toml_node": {"ip": "{{ calico_lab_ip }}"},
        "calico_node_resources": [
            {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "default-ipv4-ippool"},
             "spec": {"cidr": "10.65.0.0/16", "ipipMode": "Never", "vxlanMode": "Never", "natOutgoing": True}},
            {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
             "metadata": {"name": "peer-with-route-reflectors"},
             "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}},
            {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
             "spec": {"asNumber": 64512, "nodeToNodeMeshEnabled": False}},
        ],
    }


@pytest.fixture(scope="module")
def bare_lab(tmp_path_factory):
    with lab_for(tmp_path_factory, "ansible-lab", nodes=3, bare=True) as lab:
        yield lab


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> tuple[Path, Path, Path]:
    """pycalico's wheel built from this checkout, a wheelhouse of its dependencies, and
    the worked third-party plugin's wheel (docs/plugin-example)."""
    out = tmp_path_factory.mktemp("wheels")
    for source in (REPO, REPO / "docs" / "plugin-example"):
        subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out / "dist"), str(source)],
                       check=True, capture_output=True, timeout=600)
    (wheel,) = (out / "dist").glob("pycalico-*.whl")
    (plugin,) = (out / "dist").glob("pycalico_hostgw-*.whl")
    house = out / "wheelhouse"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(house), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    (house / wheel.name).unlink()
    return wheel, house, plugin


@pytest.fixture(scope="module")
def play(bare_lab, wheels, tmp_path_factory):
    """``play(*extra_args)``: one ansible-playbook run of the role on the lab's nodes;
    returns (result, seconds)."""
    work = tmp_path_factory.mktemp("play")
    inv = inventory(bare_lab)
    nodes = inv["all"]["children"]["calico_lab_nodes"]
    nodes["vars"].update(group_vars(bare_lab, *wheels))
    nodes["hosts"]["node1"].update({"calico_node_route_reflector_cluster_id": RR_CLUSTER_ID,
                                    "calico_node_labels": {"route-reflector": "true"}})
    (work / "inventory.yml").write_text(yaml.safe_dump(inv))
    (work / "site.yml").write_text(PLAYBOOK)
    env = {**os.environ, "ANSIBLE_HOME": str(work / "ah"), "ANSIBLE_LOCAL_TEMP": str(work / "ah" / "tmp"),
           "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{TOOLS}:{os.environ['PATH']}"}

    def run(*args: str) -> tuple[subprocess.CompletedProcess, float]:
        began = time.monotonic()
        res = subprocess.run([str(TOOLS / "ansible-playbook"), "-i", str(work / "inventory.yml"), *args,
                              str(work / "site.yml")], capture_output=True, text=True, env=env, timeout=1200)
        return res, time.monotonic() - began

    run.inventory, run.env = work / "inventory.yml", env
    return run


def recap(res: subprocess.CompletedProcess) -> dict[str, dict[str, int]]:
    rows = {m[0]: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m[1:])))
            for m in RECAP.findall(res.stdout)}
    assert set(rows) == {"node1", "node2", "node3"}, res.stdout[-3000:]
    return rows


@pytest.fixture(scope="module")
def provisioned(play):
    res, seconds = play()
    print(f"\nfirst run: {seconds:.1f} s")
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    return recap(res)


def sh(lab: Lab, node: str, script: str) -> str:
    res = lab.exec(node, ["sh", "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, f"{node}: {script}: {res.stdout}{res.stderr}"
    return res.stdout


def test_the_play_provisions_every_node(bare_lab, provisioned):
    assert all(row["failed"] == 0 and row["unreachable"] == 0 and row["changed"] > 0 for row in provisioned.values())
    for node in ("node1", "node2", "node3"):
        assert sh(bare_lab, node, "stat -c %a /etc/calico/calico.toml").strip() == "640"
        assert sh(bare_lab, node, "calico-node --check-config").strip() == "/etc/calico/calico.toml: ok"
        assert "calico-node pid" in sh(bare_lab, node, "calico-node-supervisor status")
        sh(bare_lab, node, "calico-node -felix-live -felix-ready")
        assert sh(bare_lab, node, "readlink /opt/cni/bin/calico /opt/cni/bin/portmap").split() == \
            ["/opt/pycalico/venv/bin/calico", "/usr/lib/cni/portmap"]
    # The third-party plugin is installed beside pycalico, found through its entry point.
    found = sh(bare_lab, "node2", "/opt/pycalico/venv/bin/python -c 'from importlib.metadata import entry_points; "
                                  "print(*sorted(e.name for e in entry_points(group=\"pycalico.routing\")))'")
    assert found.split() == ["bird", "host-gw", "ipip", "vxlan"]
    # node1 reflects routes: its Node carries the cluster ID and the label the BGPPeer selects.
    node1 = json.loads(sh(bare_lab, "node1", "CALICO_CONFIG=/etc/calico/calico.toml calicoctl get node node1 -o json"))
    assert node1["spec"]["bgp"]["routeReflectorClusterID"] == RR_CLUSTER_ID
    assert node1["metadata"]["labels"]["route-reflector"] == "true"
    # Nothing of it reached the host.
    assert not os.path.exists("/opt/pycalico") and not os.path.exists("/usr/local/sbin/calico-node-supervisor")


def test_the_testinfra_suite_passes_on_every_node(play, provisioned):
    res = subprocess.run([str(TOOLS / "pytest"), "-p", "no:cacheprovider", "--pyargs", "pycalico.testinfra",
                          f"--ansible-inventory={play.inventory}", "--hosts=all", "--connection=ansible", "-q", "-rA"],
                         capture_output=True, text=True, env=play.env, timeout=900, cwd=play.inventory.parent)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    # -rA lists every check's outcome by id, e.g. PASSED ...::test_bgp_sessions[ansible://node2].
    passed = re.findall(r"^PASSED \S+::(\w+)\[ansible://(node\d)\]", res.stdout, re.M)
    checks = {check for check, _ in passed}
    assert {"test_bgp_sessions", "test_routes_to_remote_blocks"} <= checks, res.stdout[-3000:]
    assert {(check, node) for check in checks for node in ("node1", "node2", "node3")} == set(passed)


SSH_CONFIG = """Host {node}
  User root
  IdentityFile {key}
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  ProxyCommand ip netns exec {netns} nc 127.0.0.1 22
"""


def test_the_testinfra_suite_passes_over_ssh(bare_lab, provisioned, tmp_path):
    """As operators run it: ``--hosts=ssh://...``, through a real sshd on each node
    (reached over the node's loopback, since the host has no route to the lab)."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "ssh_config"
    for node in ("node1", "node2"):
        # Host keys and root's authorized key in the node's own /etc and /root.
        res = bare_lab.exec(node, ["sh", "-c", "ssh-keygen -A && mkdir -p -m 700 /root/.ssh /run/sshd && "
                                   "cat > /root/.ssh/authorized_keys && /usr/sbin/sshd -o ListenAddress=127.0.0.1"],
                            input=(tmp_path / "id_ed25519.pub").read_text(), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        with config.open("a") as f:
            f.write(SSH_CONFIG.format(node=node, key=key, netns=bare_lab.node(node).netns))
    res = subprocess.run([str(TOOLS / "pytest"), "-p", "no:cacheprovider", "--pyargs", "pycalico.testinfra",
                          "--hosts=ssh://node1,ssh://node2", f"--ssh-config={config}", "-q", "-rA"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    passed = re.findall(r"^PASSED \S+::(\w+)\[ssh://(node\d)\]", res.stdout, re.M)
    assert {"test_bgp_sessions", "test_routes_to_remote_blocks", "test_ipam_check_clean"} <= {c for c, _ in passed}
    assert {node for _, node in passed} == {"node1", "node2"}


def test_pods_on_different_nodes_reach_each_other(bare_lab, provisioned):
    pods = {node: lab_pods.add_pod(bare_lab, node, f"default/p-{node}") for node in ("node1", "node2", "node3")}

    def ping(a: str, b: str) -> bool:
        return lab_pods.exec_in_pod(bare_lab, pods[a].key, ["ping", "-c", "1", "-W", "1", pods[b].ip],
                                    capture_output=True).returncode == 0

    # Each new pod's block is advertised through the route reflector: wait for BGP.
    for a, b in permutations(pods, 2):
        wait_for(lambda: ping(a, b), 30, f"the pod on {a} reaching the pod on {b} ({pods[b].ip})", interval=0.5)


def test_a_second_run_changes_nothing(play, provisioned):
    res, seconds = play()
    print(f"\nsecond run: {seconds:.1f} s")
    assert res.returncode == 0, res.stdout[-6000:]
    assert {node: row["changed"] for node, row in recap(res).items()} == {"node1": 0, "node2": 0, "node3": 0}, \
        "\n".join(line for line in res.stdout.splitlines() if line.startswith("changed:"))


def _pids(lab: Lab) -> dict[str, str]:
    return {node: sh(lab, node, "cat /run/calico/calico-node.pid") for node in ("node1", "node2", "node3")}


def test_handlers_restart_calico_node_only_for_what_it_reads(bare_lab, play, provisioned):
    before = _pids(bare_lab)
    # The conflist is read per pod by the CNI plugin: it changes, calico-node keeps running.
    res, _ = play("-e", "calico_node_cni_log_level=debug")
    assert res.returncode == 0, res.stdout[-6000:]
    assert {node: row["changed"] for node, row in recap(res).items()} == {"node1": 1, "node2": 1, "node3": 1}
    assert '"log_level": "debug"' in sh(bare_lab, "node2", "cat /etc/cni/net.d/10-calico.conflist")
    assert _pids(bare_lab) == before
    # calico.toml is calico-node's: a change restarts it, and the play ends with it ready.
    res, _ = play("-e", "calico_node_cni_log_level=debug", "-e", json.dumps({"calico_toml_logging": {"level": "debug"}}))
    assert res.returncode == 0, res.stdout[-6000:]
    assert "RUNNING HANDLER [calico_node : Restart calico-node with the supervisor]" in res.stdout
    after = _pids(bare_lab)
    assert all(after[node] != before[node] for node in before), (before, after)
    for node in before:
        sh(bare_lab, node, "calico-node -felix-ready")
        assert 'level = "debug"' in sh(bare_lab, node, "cat /etc/calico/calico.toml")


def _state(lab: Lab) -> dict[str, str]:
    """What a failed play must leave as it was: the role's files by content, and the
    supervisor's and calico-node's pids (from the pid files, also checked alive)."""
    script = "; ".join(f"echo {p} $(sha256sum {p} 2>/dev/null | cut -c1-64) $(readlink {p})" for p in WATCHED)
    script += "; for p in $(cat /run/calico/*.pid); do test -d /proc/$p && echo alive $p; done"
    return {node: sh(lab, node, script) for node in ("node1", "node2", "node3")}


def test_a_bad_as_number_stops_the_play_before_anything_changes(bare_lab, play, provisioned):
    before = _state(bare_lab)
    res, _ = play("-e", json.dumps({"calico_toml_node": {"as_number": 4294967296}}))
    assert res.returncode != 0
    assert "calico_toml_node.as_number: 4294967296 is outside 1..4294967295" in res.stdout + res.stderr
    rows = recap(res)
    assert all(row["changed"] == 0 and row["failed"] == 1 for row in rows.values()), rows
    assert _state(bare_lab) == before
