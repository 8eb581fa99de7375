"""Bare lab nodes (calico-lab up --bare) and the calico_lab Ansible connection plugin:
each node is a machine of its own, and nothing written there reaches the host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab_fixtures import lab_for, unique_lab_name
from pycalico.core.lab import LabError, netns
from pycalico.core.lab.inventory import inventory

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
# One path under each directory a bare node has of its own.
OWN = ("/etc/calico/t", "/opt/cni/bin/t", "/var/lib/calico/t", "/usr/local/bin/t", "/root/.t", "/run/calico/t")


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    with lab_for(tmp_path_factory, "bare", nodes=2, bare=True) as lab:
        yield lab


def sh(lab, node, script: str) -> subprocess.CompletedProcess:
    return lab.exec(node, ["sh", "-c", script], capture_output=True, text=True)


def test_each_node_has_its_own_root_and_the_host_none_of_it(bare, tmp_path):
    suffix = str(os.getpid())
    for path in OWN:
        assert not os.path.exists(path + suffix), f"{path}{suffix} exists on the host before the test"
    writes = "; ".join(f"mkdir -p $(dirname {p}{suffix}) && echo node1 > {p}{suffix}" for p in OWN)
    assert sh(bare, "node1", writes).returncode == 0
    seen = sh(bare, "node1", f"cat {' '.join(p + suffix for p in OWN)}").stdout.split()
    assert seen == ["node1"] * len(OWN)
    # Neither the host nor the other node sees any of it.
    assert [p for p in OWN if os.path.exists(p + suffix)] == []
    other = sh(bare, "node2", f"ls {' '.join(p + suffix for p in OWN)}")
    assert other.returncode != 0 and other.stdout == ""
    # The host's files show through below the node's own.
    assert sh(bare, "node1", "cat /etc/debian_version").stdout == Path("/etc/debian_version").read_text()


def test_a_bare_node_is_a_host_of_its_own(bare):
    n1 = bare.node("node1")
    out = sh(bare, n1, "hostname; ip -4 -o addr show dev eth0; echo $PATH; echo $HOME").stdout.splitlines()
    assert out[0] == "node1"
    assert f"inet {n1.cidr}" in out[1]
    # A login's environment, not the lab's venv.
    assert out[2] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" and out[3] == "/root"
    # The host's network namespaces stay visible (a runtime hands CNI a path there),
    # also those made after the node.
    late = f"{bare.name}-late"
    bare.create_netns(late)
    try:
        assert sh(bare, n1, f"test -e /run/netns/{late}").returncode == 0
    finally:
        netns.delete(late)
        bare.state.namespaces.remove(late)
        bare.save()


def test_bare_takes_no_agents(tmp_path):
    from pycalico.core.lab import Lab

    with pytest.raises(LabError, match="--bare takes no --routing"):
        Lab.up("x", nodes=1, state_root=tmp_path, bare=True, routing="bird")
    with pytest.raises(LabError, match="must not be under /var"):
        Lab.up("x", nodes=1, state_root="/var/tmp/pycalico-lab-test", bare=True)


def _ansible(lab, tmp_path, *args: str) -> subprocess.CompletedProcess:
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(inventory(lab)))
    env = {**os.environ, "ANSIBLE_HOME": str(tmp_path / "ah"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ah" / "tmp"),
           "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    tools = Path(sys.executable).parent
    return subprocess.run([str(tools / "ansible"), "-i", str(inv), *args], capture_output=True, text=True,
                          env=env, cwd=ANSIBLE_DIR, timeout=120)


def test_ansible_reaches_the_nodes_through_the_connection_plugin(bare, tmp_path):
    facts = _ansible(bare, tmp_path, "all", "-m", "ansible.builtin.setup", "-a", "filter=ansible_hostname",
                     "-o")
    assert facts.returncode == 0, facts.stdout + facts.stderr
    names = {line.split(" | ")[0]: json.loads(line.split("=> ", 1)[1])["ansible_facts"]["ansible_hostname"]
             for line in facts.stdout.splitlines() if " | SUCCESS" in line}
    assert names == {"node1": "node1", "node2": "node2"}
    # A file copied in lands in the node's own /etc only, and comes back out intact.
    put = _ansible(bare, tmp_path, "node2", "-m", "ansible.builtin.copy",
                   "-a", "content='from the controller\n' dest=/etc/ansible-test.txt mode=0640")
    assert put.returncode == 0 and "CHANGED" in put.stdout, put.stdout + put.stderr
    again = _ansible(bare, tmp_path, "node2", "-m", "ansible.builtin.copy",
                     "-a", "content='from the controller\n' dest=/etc/ansible-test.txt mode=0640")
    assert again.returncode == 0 and "node2 | SUCCESS" in again.stdout, again.stdout
    assert sh(bare, "node2", "stat -c %a /etc/ansible-test.txt; cat /etc/ansible-test.txt").stdout == \
        "640\nfrom the controller\n"
    assert not os.path.exists("/etc/ansible-test.txt")
    got = _ansible(bare, tmp_path, "node2", "-m", "ansible.builtin.fetch",
                   "-a", f"src=/etc/ansible-test.txt dest={tmp_path}/fetched/ flat=true")
    assert got.returncode == 0, got.stdout
    assert (tmp_path / "fetched" / "ansible-test.txt").read_text() == "from the controller\n"


def test_the_connection_plugin_names_a_missing_node(bare, tmp_path):
    lab_inv = inventory(bare)
    lab_inv["all"]["children"]["calico_lab_nodes"]["hosts"]["node9"] = {}
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(lab_inv))
    env = {**os.environ, "ANSIBLE_HOME": str(tmp_path / "ah"), "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg")}
    res = subprocess.run([str(Path(sys.executable).parent / "ansible"), "-i", str(inv), "node9", "-m",
                          "ansible.builtin.ping"], capture_output=True, text=True, env=env, cwd=ANSIBLE_DIR)
    assert res.returncode != 0
    assert "has no node 'node9'" in res.stdout + res.stderr


def running(pid: int) -> bool:
    # An ended daemon may linger as a zombie until this machine's init reaps it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_down_ends_the_node_and_everything_in_it(tmp_path):
    from pycalico.core.lab import Lab

    lab = Lab.up(unique_lab_name("b"), nodes=1, state_root=tmp_path, bare=True)
    try:
        holder = lab.holder_pid(lab.node("node1"))
        # A daemon started inside, as a service manager would (own session, detached).
        sh(lab, "node1", "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > /run/daemon.pid")
        daemon = int(sh(lab, "node1", "cat /run/daemon.pid").stdout)
    finally:
        lab.down()
    assert not running(holder) and not running(daemon)
    assert not netns.exists(lab.node("node1").netns)
    assert not Path(lab.state_dir).exists()
