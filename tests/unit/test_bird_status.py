"""``calicoctl node status``: Calico's table from BIRD's rows, and which processes it
counts. BIRD itself is met in tests/integration/test_bird_control.py."""

from __future__ import annotations

import io
import os
from pathlib import Path


from pycalico.core.ctl import node as ctl_node
from pycalico.core.ctl.cli import Context
from pycalico.core.ctl.main import main as calicoctl
from pycalico.plugins.routing.bird import control

# Rows as BIRD 2.0.12 printed them (tests/integration/test_bird_control.py reads real ones).
ROWS = [
    control.Protocol("static1", "Static", "master4", "up", "20:04:41.741", ""),
    control.Protocol("Mesh_198_51_100_12", "BGP", "---", "up", "20:04:43.489", "Established"),
    control.Protocol("Mesh_198_51_100_13", "BGP", "---", "start", "20:04:41.741", "Connect Socket: Connection refused"),
    control.Protocol("Global_203_0_113_1_port_1790", "BGP", "---", "up", "20:05:01.002", "Established"),
    control.Protocol("Node_fd00_1__2", "BGP", "---", "start", "20:04:41.741", "Active"),
    control.Protocol("Other", "BGP", "---", "up", "20:04:41.741", "Established"),
]


def fake_proc(root: Path, processes: dict[int, list[str]]) -> Path:
    """A /proc holding ``processes`` (pid -> argv), all in the caller's network namespace."""
    for pid, argv in processes.items():
        d = root / "proc" / str(pid)
        (d / "ns").mkdir(parents=True)
        (d / "ns" / "net").symlink_to("/proc/thread-self/ns/net")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (root / "proc" / "self").mkdir()
    return root / "proc"


def run_status(tmp_path, processes, socket_path) -> tuple[int, str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    toml = tmp_path / "calico.toml"
    toml.write_text(f'[routing]\ntype = "bird"\n[routing.bird]\nconfig_dir = "{tmp_path}"\nsocket = "{socket_path}"\n')
    out, err = io.StringIO(), io.StringIO()
    ctx = Context(stdout=out, stderr=err, env={"CALICO_CONFIG": str(toml)})
    code = ctl_node.status(ctx, fake_proc(tmp_path, processes))
    return code, out.getvalue(), err.getvalue()


AGENT = ["/usr/bin/python3", "-m", "pycalico.core.node", "--config", "/etc/calico/calico.toml"]
BIRD = ["bird", "-R", "-s", "/var/run/calico/bird.ctl", "-d", "-c", "/etc/calico/confd/config/bird.cfg"]


def test_peers_print_as_calicos_table():
    rows = ctl_node.peers(ROWS)
    v4 = [r for r in rows if ":" not in r[0]]
    v6 = [r for r in rows if ":" in r[0]]
    assert ctl_node.table(ctl_node.HEADER, v4) == (
        "+---------------+-------------------+-------+--------------+--------------------------------+\n"
        "| PEER ADDRESS  |     PEER TYPE     | STATE |    SINCE     |              INFO              |\n"
        "+---------------+-------------------+-------+--------------+--------------------------------+\n"
        "| 198.51.100.12 | node-to-node mesh | up    | 20:04:43.489 | Established                    |\n"
        "| 198.51.100.13 | node-to-node mesh | start | 20:04:41.741 | Connect Socket: Connection     |\n"
        "|               |                   |       |              | refused                        |\n"
        "| 203.0.113.1   | global            | up    | 20:05:01.002 | Established                    |\n"
        "+---------------+-------------------+-------+--------------+--------------------------------+\n"
    )
    assert ctl_node.table(ctl_node.HEADER, v6) == (
        "+--------------+---------------+-------+--------------+--------+\n"
        "| PEER ADDRESS |   PEER TYPE   | STATE |    SINCE     |  INFO  |\n"
        "+--------------+---------------+-------+--------------+--------+\n"
        "| fd00:1::2    | node specific | start | 20:04:41.741 | Active |\n"
        "+--------------+---------------+-------+--------------+--------+\n"
    )


def test_node_status_without_calico_node_or_bird(tmp_path):
    code, out, err = run_status(tmp_path, {101: BIRD}, tmp_path / "bird.ctl")
    assert (code, out, err) == (1, "", "Calico process is not running.\n")
    code, out, _ = run_status(tmp_path / "b", {100: ["/venv/bin/calico-node", "--config", "x"]},
                              tmp_path / "bird.ctl")
    assert (code, out) == (0, "Calico process is running.\n\nThe BGP backend process (BIRD) is not running.\n\n")


def test_node_status_when_birds_socket_does_not_answer(tmp_path):
    code, out, _ = run_status(tmp_path, {100: AGENT, 101: BIRD}, tmp_path / "gone.ctl")
    assert code == 0
    assert out.startswith("Calico process is running.\n\nIPv4 BGP status\nError querying BIRD: "
                          "unable to connect to BIRDv4 socket: unable to talk to BIRD on ")


def test_node_command_usage():
    out, err = io.StringIO(), io.StringIO()
    assert calicoctl(["node", "status", "--bogus"], Context(stdout=out, stderr=err)) == 1
    assert "Invalid option: 'calicoctl node status --bogus'." in err.getvalue()
    out = io.StringIO()
    assert calicoctl(["node", "status", "--help"], Context(stdout=out)) == 0
    assert out.getvalue().startswith("Usage:\n  calicoctl node status [--allow-version-mismatch]\n")
    out = io.StringIO()
    assert calicoctl(["--help"], Context(stdout=out)) == 0
    assert "    node         Calico node management.\n" in out.getvalue()
    assert os.path.basename(ctl_node.DEFAULT_SOCKET) == "bird.ctl"
