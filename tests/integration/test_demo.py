"""`calico-lab demo` (`make demo`), the operator's first hour, end to end through the CLI.

A run prints the topology, every node's `calicoctl node status`, the ping matrix before
and after a NetworkPolicy, and removes everything; `--keep` leaves a lab that answers the
commands it prints. The demo's own checks fail loudly when packets or BGP disagree.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pycalico.core.lab import Lab, demo, netns, pods

pytestmark = pytest.mark.lab

BIN = Path(sys.executable).parent
# The shell `make demo` runs in: the venv's commands are not on PATH.
ENV = {**os.environ, "PATH": os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                                             if Path(d).resolve() != BIN.resolve())}
SHOP = ("shop/web", "shop/api", "shop/db")
OUTSIDERS = ("tools/debug", "tools/batch")  # tools pods without role=frontend


def run_demo(name: str, root: Path, *extra: str) -> str:
    result = subprocess.run([BIN / "calico-lab", "demo", "--name", name, "--state-dir", root, *extra],
                            check=False, capture_output=True, text=True, timeout=240, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def section(out: str, title: str) -> list[str]:
    """The lines of the section whose heading starts with ``== title``, up to the next blank line."""
    lines = out.split(f"\n== {title}", 1)[1].splitlines()[1:]
    return lines[:lines.index("")] if "" in lines else lines


def matrix(lines: list[str]) -> dict[tuple[str, str], str]:
    """(row, column) -> cell (``.``, ``X``, with ``*`` when changed) of a printed matrix."""
    keys = lines[0].split()
    cells = {}
    for row in lines[1:]:
        name, *values = row.split()
        assert len(values) == len(keys), row
        cells.update({(name, k): v for k, v in zip(keys, values) if k != name})
    return cells


def leftovers(name: str, root: Path) -> tuple[list[str], list[int]]:
    """The lab's namespaces still there, and processes whose command line names its state root."""
    spaces = [ns for ns in netns.list_netns() if ns.startswith(f"{name}-")]
    procs = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(root).encode() in cmdline.read_bytes():
                procs.append(int(cmdline.parent.name))
        except OSError:  # ended while we looked
            pass
    return spaces, procs


def test_demo_shows_bgp_and_the_policy_then_removes_everything(lab_state_root, lab_name):
    out = run_demo(lab_name, lab_state_root)

    topology = section(out, "Topology")
    assert f"  etcd      http://198.51.100.2:2379 in {lab_name}-cp (healthy)" in topology
    nodes = [line.split() for line in topology if line.startswith("  node")]
    assert [(n[0], n[1], n[2], n[3]) for n in nodes] == [
        (f"node{i}", f"198.51.100.1{i}/24", "AS", "64512") for i in (1, 2, 3)]
    assert all(n[4:6] == ["pod", "block"] and n[6].startswith("10.65.") and n[6].endswith("/26") for n in nodes)
    placed = {line.split()[0]: line.split()[2] for line in topology if line.startswith("    ")}
    assert placed == {"shop/web": "node1", "shop/api": "node2", "shop/db": "node3",
                      "tools/ui": "node1", "tools/debug": "node2", "tools/batch": "node3"}

    bgp = section(out, "BGP")  # up to node1's blank line; the rest follows
    assert bgp[0] == "node1$ calicoctl node status" and bgp[1] == "Calico process is running."
    for i in (1, 2, 3):
        status = out.split(f"node{i}$ calicoctl node status\n", 1)[1].split("IPv6 BGP status", 1)[0]
        peers = {f"198.51.100.1{j}" for j in (1, 2, 3) if j != i}
        for peer in peers:
            assert f"| {peer} | node-to-node mesh | up    |" in status
        assert status.count("Established") == 2

    before = matrix(section(out, "Ping matrix (row pings column"))
    assert len(before) == 30 and set(before.values()) == {"."}

    policy = section(out, "Policy")
    assert "kind: NetworkPolicy" in policy and policy[-1] == "networkpolicy.networking.k8s.io/shop-ingress created"

    after = matrix(section(out, "Ping matrix with the policy"))
    blocked = {(a, b) for a in OUTSIDERS for b in SHOP}
    assert {k for k, v in after.items() if v == "X*"} == blocked
    assert {v for k, v in after.items() if k not in blocked} == {"."}
    # tools/ui (role=frontend) still reaches shop; shop and tools reach tools.
    assert after[("tools/ui", "shop/db")] == after[("shop/api", "tools/debug")] == "."

    assert f"Lab {lab_name!r} torn down" in out
    assert leftovers(lab_name, lab_state_root) == ([], [])


def test_keep_leaves_a_lab_that_answers_and_failures_are_loud(lab_state_root, lab_name):
    out = run_demo(lab_name, lab_state_root, "--keep", "--policy", "nftables")
    assert "nftables policy" in out.splitlines()[0]
    tries = out.split(f"Lab {lab_name!r} kept. Try:\n", 1)[1].splitlines()
    where = f"--name {lab_name} --state-dir {lab_state_root}"
    commands = [shlex.split(t, comments=True) for t in tries]
    # Not on PATH, so by the path that reaches it from here.
    assert {Path(argv[0]).resolve() for argv in commands} == {(BIN / "calico-lab").resolve()}
    assert [argv[1] for argv in commands] == ["status", "exec", "pod", "exec", "exec", "down"]
    assert all(where in t for t in tries)

    # Every command printed works as printed, in the shell the demo ran in (the last,
    # down, comes at the end).
    def try_(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30, env=ENV)

    status, node_status, pod_list, admitted, blocked = (try_(argv) for argv in commands[:5])
    assert status.returncode == 0 and "2 of 2 sessions Established" in status.stdout
    assert node_status.returncode == 0 and node_status.stdout.count("Established") == 2
    assert pod_list.returncode == 0 and len(pod_list.stdout.splitlines()) == 6
    assert "tools/ui -> shop/web: admitted" in tries[3] and admitted.returncode == 0, admitted.stdout
    assert "tools/debug -> shop/web: blocked" in tries[4] and blocked.returncode == 1, blocked.stdout

    # Packets the policy would let through but that get lost: the demo says which.
    lab = Lab.load(lab_name, lab_state_root)
    all_pods = pods.list_pods(lab)
    pods.exec_in_pod(lab, "tools/ui", ["ip", "link", "set", "eth0", "down"], check=True)
    with pytest.raises(demo.DemoFailed) as failed:
        demo.converge(lab, all_pods, "check", timeout=0)
    message = str(failed.value)
    assert "check: the ping matrix still differs from what the policy implies" in message
    assert "tools/ui -> shop/web: no reply, but the policy says allow" in message
    assert "tools/debug -> shop/web" not in message

    # A node whose BGP went away: the demo names the sessions it saw.
    lab.stop(lab.agent_pid("node3"))  # its BIRD ends with it
    with pytest.raises(demo.DemoFailed, match="BGP did not establish within 5 s") as failed:
        demo.wait_established(lab, timeout=5)
    assert "node3" in str(failed.value)

    down = try_(commands[5])
    assert down.returncode == 0, down.stderr
    assert leftovers(lab_name, lab_state_root) == ([], [])
