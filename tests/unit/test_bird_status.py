"""BIRD's control protocol and ``calicoctl node status``, against a stand-in BIRD that
answers on a real unix socket with what BIRD 2.0.12 sends (recorded from it)."""

from __future__ import annotations

import io
import os
import socket
import threading
from pathlib import Path

import pytest

from pycalico.core.ctl import node as ctl_node
from pycalico.core.ctl.cli import Context
from pycalico.core.ctl.main import main as calicoctl
from pycalico.plugins.routing.bird import control

SHOW_PROTOCOLS = (
    "2002-Name       Proto      Table      State  Since         Info\n"
    "1002-static1    Static     master4    up     20:04:41.741  \n"
    " kernel1    Kernel     master4    up     20:04:41.741  \n"
    " device1    Device     ---        up     20:04:41.741  \n"
    " Mesh_198_51_100_12 BGP        ---        up     20:04:43.489  Established   \n"
    " Mesh_198_51_100_13 BGP        ---        start  20:04:41.741  Connect       Socket: Connection refused\n"
    " Global_203_0_113_1_port_1790 BGP        ---        up     20:05:01.002  Established   \n"
    " Node_fd00_1__2 BGP        ---        start  20:04:41.741  Active   \n"
    " Other      BGP        ---        up     20:04:41.741  Established   \n"
    "0000 \n"
)
REPLIES = {
    "show protocols": SHOW_PROTOCOLS,
    "show status": "1000-BIRD 2.0.12\n0013 Daemon is up and running\n",
    "configure": "0002-Reading configuration from /etc/bird.cfg\n8002 /etc/bird.cfg:4:1 syntax error, unexpected CF_SYM_UNDEFINED\n",
}


@pytest.fixture
def fake_bird(tmp_path):
    """A unix socket server speaking BIRD's control protocol; yields its path."""
    path = tmp_path / "bird.ctl"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    server.settimeout(0.05)  # so that the thread sees ``stop`` soon
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(2)
            with conn:
                f = conn.makefile("rwb")
                f.write(b"0001 BIRD 2.0.12 ready.\n")
                f.flush()
                cmd = f.readline().decode().strip()
                f.write(REPLIES.get(cmd, "9001 syntax error\n").encode())
                f.flush()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join(2)
    server.close()


def test_replies_are_split_into_codes_and_continuations(fake_bird):
    reply = control.command(fake_bird, "show status")
    assert reply.lines == (("1000", "BIRD 2.0.12"), ("0013", "Daemon is up and running"))
    assert not reply.failed and control.ready(fake_bird)
    assert control.command(fake_bird, "bogus").failed


def test_show_protocols_rows_keep_the_whole_info_column(fake_bird):
    rows = control.protocols(fake_bird)
    assert [r.name for r in rows][:3] == ["static1", "kernel1", "device1"]
    refused = rows[4]
    assert (refused.name, refused.state, refused.since, refused.info) == (
        "Mesh_198_51_100_13", "start", "20:04:41.741", "Connect Socket: Connection refused")


def test_a_refused_configure_is_an_error_with_birds_words(fake_bird):
    with pytest.raises(control.BirdError, match="syntax error, unexpected CF_SYM_UNDEFINED"):
        control.configure(fake_bird)


def test_no_bird_is_a_clear_error(tmp_path):
    with pytest.raises(control.BirdError, match="unable to talk to BIRD on .*missing.ctl"):
        control.command(tmp_path / "missing.ctl", "show status")
    assert not control.ready(tmp_path / "missing.ctl")


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


def test_node_status_prints_calicos_table(tmp_path, fake_bird):
    code, out, err = run_status(tmp_path, {100: AGENT, 101: BIRD}, fake_bird)
    assert (code, err) == (0, "")
    assert out == (
        "Calico process is running.\n"
        "\n"
        "IPv4 BGP status\n"
        "+---------------+-------------------+-------+--------------+--------------------------------+\n"
        "| PEER ADDRESS  |     PEER TYPE     | STATE |    SINCE     |              INFO              |\n"
        "+---------------+-------------------+-------+--------------+--------------------------------+\n"
        "| 198.51.100.12 | node-to-node mesh | up    | 20:04:43.489 | Established                    |\n"
        "| 198.51.100.13 | node-to-node mesh | start | 20:04:41.741 | Connect Socket: Connection     |\n"
        "|               |                   |       |              | refused                        |\n"
        "| 203.0.113.1   | global            | up    | 20:05:01.002 | Established                    |\n"
        "+---------------+-------------------+-------+--------------+--------------------------------+\n"
        "\n"
        "IPv6 BGP status\n"
        "+--------------+---------------+-------+--------------+--------+\n"
        "| PEER ADDRESS |   PEER TYPE   | STATE |    SINCE     |  INFO  |\n"
        "+--------------+---------------+-------+--------------+--------+\n"
        "| fd00:1::2    | node specific | start | 20:04:41.741 | Active |\n"
        "+--------------+---------------+-------+--------------+--------+\n"
        "\n"
    )


def test_node_status_without_calico_node_or_bird(tmp_path, fake_bird):
    code, out, err = run_status(tmp_path, {101: BIRD}, fake_bird)
    assert (code, out, err) == (1, "", "Calico process is not running.\n")
    code, out, _ = run_status(tmp_path / "b", {100: ["/venv/bin/calico-node", "--config", "x"]}, fake_bird)
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
