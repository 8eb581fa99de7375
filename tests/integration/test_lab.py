"""calico-lab: real namespaces, real packets, a real etcd.

Fixtures (make_lab, lab_state_root, lab_name, shared_lab) come from
tests/lab_fixtures.py. Tests marked `lab` need root; the rest run anywhere.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest

from pycalico.core.lab import Lab, LabError, LabNotFound, node_config_text
from pycalico.core.lab import cluster
from pycalico.core.lab import etcd as lab_etcd
from pycalico.core.lab import netns as lab_netns
from pycalico.core.lab.cli import main as cli_main
from pycalico.core.lab.state import proc_identity

needs_lab = pytest.mark.lab

_console_script = Path(sys.executable).parent / "calico-lab"
CLI = ([str(_console_script)] if _console_script.exists()
       else [sys.executable, "-m", "pycalico.core.lab.cli"])


# --- helpers -----------------------------------------------------------------


def ping(lab: Lab, node: str, ip: str) -> str:
    r = lab.exec(node, ["ping", "-n", "-c", "1", "-W", "2", ip],
                 capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, f"{node} cannot reach {ip}:\n{r.stdout}{r.stderr}"
    return r.stdout


def ttl(ping_output: str) -> int:
    return int(re.search(r"ttl=(\d+)", ping_output).group(1))


def lab_namespaces(name: str) -> list[str]:
    return sorted(ns for ns in lab_netns.list_netns() if ns.startswith(f"{name}-"))


def in_netns(pid: int, ns: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
    except FileNotFoundError:
        return False


def wait_in_netns(pid: int, ns: str, timeout: float = 5.0) -> None:
    # `ip netns exec` joins the namespace just after fork; give it that moment.
    deadline = time.monotonic() + timeout
    while not in_netns(pid, ns):
        assert time.monotonic() < deadline, f"pid {pid} never entered {ns}"
        time.sleep(0.02)


_VOLATILE = re.compile(r"(valid_lft|preferred_lft|expires)\s+\S+")


def root_snapshot() -> dict[str, str]:
    """What the lab must never change in the root namespace."""
    cmds = {
        "link": ["ip", "-o", "link"],
        "addr": ["ip", "-o", "addr"],
        "route4": ["ip", "-4", "route", "show", "table", "all"],
        "route6": ["ip", "-6", "route", "show", "table", "all"],
        "rule": ["ip", "rule"],
        "ip_forward": ["sysctl", "-n", "net.ipv4.ip_forward"],
    }
    if shutil.which("nft"):
        cmds["nft"] = ["nft", "list", "ruleset"]
    return {k: _VOLATILE.sub(r"\1 X", subprocess.run(c, capture_output=True, text=True).stdout)
            for k, c in cmds.items()}


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


# --- no root needed ------------------------------------------------------------


def test_plan_splits_nodes_across_two_subnets(tmp_path):
    state = cluster.plan("x", nodes=3, subnets=2, state_dir=tmp_path)
    assert [(n.name, n.netns, n.cidr, n.gateway) for n in state.nodes] == [
        ("node1", "x-node1", "198.51.100.11/24", "198.51.100.1"),
        ("node2", "x-node2", "198.51.100.12/24", "198.51.100.1"),
        ("node3", "x-node3", "203.0.113.13/24", "203.0.113.1"),
    ]
    assert state.etcd_endpoints == ["http://198.51.100.2:2379"]
    assert state.nodes[0].config_path == str(tmp_path / "nodes/node1/calico.toml")
    # Nothing is recorded as created before it is.
    assert state.namespaces == [] and state.processes == []


def test_node_config_text_is_toml():
    data = tomllib.loads(node_config_text("node1", ["http://198.51.100.2:2379"]))
    assert data["node_name"] == "node1"
    assert data["datastore"] == {"type": "etcd",
                                 "etcd": {"endpoints": ["http://198.51.100.2:2379"]}}
    assert data["routing"] == {"type": "none"}


def test_each_node_config_passes_check_config(make_lab):
    lab = make_lab(nodes=1)
    done = lab.exec("node1", ["calico-node", "--check-config"], capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (0, f"{lab.nodes[0].config_path}: ok"), done.stderr


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a--b", "../etc", "a/b", "x" * 40])
def test_bad_lab_names_are_rejected(bad, tmp_path):
    with pytest.raises(LabError, match="invalid lab name"):
        Lab.load(bad, tmp_path)


def test_cli_errors_are_one_line(monkeypatch, capsys, tmp_path):
    assert cli_main(["up", "--nodes", "two"]) == 1
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli_main(["down", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert "invalid int value" in lines[0] and "must run as root" in lines[1]


def test_only_our_own_stale_lab_dir_is_removed(tmp_path):
    stale, foreign = tmp_path / "stale", tmp_path / "foreign"
    stale.mkdir()
    (stale / "state.tmp").write_text("")  # `up` died in its first state write
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    cluster.remove_stale_dir(stale)
    cluster.remove_stale_dir(foreign)
    assert not stale.exists() and (foreign / "notes.txt").exists()


def test_list_of_empty_root(tmp_path, capsys):
    assert Lab.list(tmp_path / "missing") == []
    assert cli_main(["list", "--json", "--state-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == []


# --- real labs ---------------------------------------------------------------


@needs_lab
def test_nodes_reach_each_other_and_cp(shared_lab):
    n1, n2 = shared_lab.nodes
    assert (n1.cidr, n2.cidr) == ("198.51.100.11/24", "198.51.100.12/24")
    assert ttl(ping(shared_lab, "node1", n2.ip)) == 64  # same L2 segment, no hop
    ping(shared_lab, "node2", n1.ip)
    for n in shared_lab.nodes:
        ping(shared_lab, n.name, shared_lab.state.cp_ip)
        ping(shared_lab, n.name, "127.0.0.1")
        r = shared_lab.exec(n.name, ["sysctl", "-n", "net.ipv4.ip_forward"],
                            capture_output=True, text=True)
        assert r.stdout.strip() == "1"


@needs_lab
def test_two_subnets_are_routed_by_the_underlay(make_lab):
    lab = make_lab(nodes=2, subnets=2)
    n1, n2 = lab.nodes
    assert n1.cidr == "198.51.100.11/24" and n2.cidr == "203.0.113.12/24"
    assert ttl(ping(lab, "node1", n2.ip)) == 63  # one routed hop
    assert ttl(ping(lab, "node2", n1.ip)) == 63
    ping(lab, "node2", lab.state.cp_ip)
    routes = lab.exec("node2", ["ip", "route"], capture_output=True, text=True).stdout
    assert "default via 203.0.113.1" in routes and "198.51.100.0/24" not in routes


@needs_lab
def test_etcd_is_reachable_from_nodes(shared_lab):
    ep = shared_lab.etcd_endpoints[0]
    node_ns = shared_lab.nodes[0].netns
    key = f"/lab-test/{os.getpid()}"
    # etcd's v3 JSON gateway, from a socket inside node1's namespace.
    lab_etcd.http(node_ns, "POST", f"{ep}/v3/kv/put", {"key": b64(key), "value": b64("gw")})
    got = lab_etcd.http(node_ns, "POST", f"{ep}/v3/kv/range", {"key": b64(key)})
    assert base64.b64decode(got["kvs"][0]["value"]).decode() == "gw"
    if shutil.which("etcdctl"):
        script = ('etcdctl --endpoints "$ETCD_ENDPOINTS" put "$0" ctl >/dev/null && '
                  'etcdctl --endpoints "$ETCD_ENDPOINTS" get --print-value-only "$0"')
        r = shared_lab.exec("node2", ["sh", "-c", script, key],
                            capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "ctl"
    lab_etcd.http(node_ns, "POST", f"{ep}/v3/kv/deleterange", {"key": b64(key)})
    assert shared_lab.etcd_healthy()


@needs_lab
def test_node_config_and_exec_environment(shared_lab):
    for n in shared_lab.nodes:
        assert Path(n.config_path).read_text() == node_config_text(
            n.name, shared_lab.etcd_endpoints, node_dir=Path(n.config_path).parent)
    n1 = shared_lab.nodes[0]
    r = shared_lab.exec("node1", ["sh", "-c", 'echo "$CALICO_CONFIG|$CALICO_NODENAME|'
                                  '$ETCD_ENDPOINTS"; ip -o -4 addr show dev eth0'],
                        capture_output=True, text=True)
    first, rest = r.stdout.split("\n", 1)
    assert first == f"{n1.config_path}|node1|http://198.51.100.2:2379"
    assert n1.cidr in rest  # really ran inside node1
    assert shared_lab.exec("node1", ["sh", "-c", "exit 3"]).returncode == 3
    with pytest.raises(LabError, match="no node 'node9'"):
        shared_lab.exec("node9", ["true"])


@needs_lab
def test_spawn_records_pid_and_stop_ends_it(shared_lab, tmp_path):
    ns = shared_lab.nodes[1].netns
    pid = shared_lab.spawn(ns, ["sleep", "60"], tmp_path / "sleep.log", name="sleeper")
    try:
        wait_in_netns(pid, ns)
        on_disk = json.loads((shared_lab.state_dir / "state.json").read_text())
        rec = next(p for p in on_disk["processes"] if p["pid"] == pid)
        assert rec["start_time"] == proc_identity(pid)[0] and rec["netns"] == ns
        assert Lab.load(shared_lab.name, shared_lab.state_dir.parent).status()[
            "processes"][-1] == {"name": "sleeper", "pid": pid, "alive": True,
                                 "netns": ns, "log_path": str(tmp_path / "sleep.log")}
    finally:
        assert shared_lab.stop(pid) is True
    assert proc_identity(pid) is None
    assert pid not in [p.pid for p in shared_lab.processes]
    with pytest.raises(LabError, match="not a namespace of lab"):
        shared_lab.spawn("elsewhere", ["true"], tmp_path / "x.log")


@needs_lab
def test_down_removes_everything_and_is_idempotent(make_lab, capsys):
    lab = make_lab(nodes=2)
    root = lab.state_dir.parent
    recorded = sorted(lab.state.namespaces)
    assert lab_namespaces(lab.name) == recorded and len(recorded) == 4
    pids = [p.pid for p in lab.processes]
    assert pids and all(proc_identity(p) for p in pids)
    # Not recorded, but inside the lab: must not keep a namespace alive.
    stray = subprocess.Popen(lab_netns.exec_argv(lab.nodes[0].netns, ["sleep", "300"]))
    wait_in_netns(stray.pid, lab.nodes[0].netns)

    done = lab.down()

    assert stray.wait(timeout=5) == -15 and stray.pid in done["killed"]
    assert sorted(done["deleted_netns"]) == recorded
    assert lab_namespaces(lab.name) == []
    assert all(proc_identity(p) is None for p in pids)
    assert not lab.state_dir.exists()
    with pytest.raises(LabNotFound):
        Lab.load(lab.name, root)
    assert cli_main(["down", "--name", lab.name, "--state-dir", str(root)]) == 0
    assert "nothing to do" in capsys.readouterr().out


_CRASHING_UP = textwrap.dedent("""
    import os, sys
    from pycalico.core.lab import cluster
    crash_at, name, root = sys.argv[1:]
    if crash_at == "node":
        attach = cluster.Lab._attach
        def crashing_attach(self, ns, *a):
            attach(self, ns, *a)
            if ns.endswith("-node1"):
                os._exit(9)
        cluster.Lab._attach = crashing_attach
    else:
        start = cluster.Lab._start_etcd
        def crashing_start(self, timeout):
            start(self, timeout)
            os._exit(9)  # etcd running, state not yet marked complete
        cluster.Lab._start_etcd = crashing_start
    cluster.Lab.up(name, nodes=2, state_root=root)
""")


@needs_lab
@pytest.mark.parametrize("crash_at", ["node", "etcd"])
def test_down_after_crash_mid_up(lab_state_root, lab_name, crash_at):
    r = subprocess.run([sys.executable, "-c", _CRASHING_UP, crash_at, lab_name,
                        str(lab_state_root)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 9, r.stderr

    lab = Lab.load(lab_name, lab_state_root)  # only what state.json says
    assert not lab.state.complete
    assert lab_namespaces(lab_name) == sorted(lab.state.namespaces) != []
    pids = [p.pid for p in lab.processes]
    if crash_at == "etcd":
        assert pids and all(proc_identity(p) for p in pids)

    lab.down()

    assert lab_namespaces(lab_name) == []
    assert all(proc_identity(p) is None for p in pids)
    assert Lab.list(lab_state_root) == []


@needs_lab
def test_failed_etcd_rolls_everything_back(lab_state_root, lab_name, monkeypatch):
    monkeypatch.setattr(lab_etcd, "ETCD_BIN", "/bin/false")
    with pytest.raises(LabError, match="etcd exited during startup"):
        Lab.up(lab_name, nodes=1, state_root=lab_state_root)
    assert lab_namespaces(lab_name) == []
    assert Lab.list(lab_state_root) == []


@needs_lab
def test_up_twice_needs_down_or_recreate(make_lab):
    lab = make_lab(nodes=1)
    root = lab.state_dir.parent
    with pytest.raises(LabError, match="run `calico-lab down"):
        Lab.up(lab.name, nodes=1, state_root=root)
    old_pid = lab.processes[0].pid
    again = Lab.up(lab.name, nodes=1, state_root=root, recreate=True)
    assert again.processes[0].pid != old_pid and proc_identity(old_pid) is None
    assert again.etcd_healthy()


@needs_lab
def test_foreign_namespace_is_never_adopted(lab_state_root, lab_name):
    foreign = f"{lab_name}-cp"
    lab_netns.add(foreign)
    try:
        with pytest.raises(LabError, match=f"{foreign} already exists"):
            Lab.up(lab_name, nodes=1, state_root=lab_state_root)
        assert lab_namespaces(lab_name) == [foreign]  # still there, not ours to delete
        assert Lab.list(lab_state_root) == []
    finally:
        lab_netns.delete(foreign)


@needs_lab
def test_cli_roundtrip_leaves_root_namespace_untouched(lab_state_root, lab_name):
    before = root_snapshot()
    env = {**os.environ, "PYCALICO_LAB_DIR": str(lab_state_root)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)

    r = cli("up", "--nodes", "2", "--name", lab_name)
    assert r.returncode == 0, r.stderr
    status = json.loads(cli("status", "--name", lab_name, "--json").stdout)
    assert status["etcd"]["healthy"] and all(p["alive"] for p in status["processes"])
    assert "healthy" in cli("status", "--name", lab_name).stdout
    assert lab_name in cli("list").stdout.split()

    r = cli("exec", "node1", "--name", lab_name, "--", "sh", "-c", "echo $CALICO_CONFIG")
    assert r.returncode == 0 and r.stdout.strip() == status["nodes"][0]["config_path"]
    r = cli("exec", "node2", "--name", lab_name, "--", "ping", "-c1", "-W2", "198.51.100.11")
    assert r.returncode == 0, r.stdout + r.stderr
    assert cli("exec", "node1", "--name", lab_name, "--", "sh", "-c", "exit 5").returncode == 5

    r = cli("up", "--name", lab_name)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "down" in r.stderr

    r = cli("down", "--name", lab_name)
    assert r.returncode == 0, r.stderr
    r = cli("down", "--name", lab_name)
    assert r.returncode == 0 and "nothing to do" in r.stdout
    assert lab_namespaces(lab_name) == []
    assert all(proc_identity(p["pid"]) is None for p in status["processes"])
    assert root_snapshot() == before
