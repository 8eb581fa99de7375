"""BIRD's control protocol and ``calicoctl node status`` against real BIRD 2 daemons.

Two namespaces joined by a veth: node A (198.51.100.11, fd00:1::1) runs a BIRD with
Calico-named protocols, node B (198.51.100.12 and .13) runs a BIRD that peers back with
one of them. So A's ``show protocols`` holds a session BIRD really established, one a
real TCP reset refused, an IPv6 peer that never answers, and a protocol whose name is
not Calico's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pycalico.plugins.routing.bird import control
from tests.bird_fixtures import ODD_PEERS, two_birds
from tests.waiting import wait_for

pytestmark = pytest.mark.lab

A_CONFIG = """\
router id 198.51.100.11;
protocol device device1 {}
protocol kernel kernel1 { ipv4 { export none; }; }
protocol static static1 { ipv4; route 10.65.0.0/26 blackhole; }
protocol bgp Mesh_198_51_100_12 {
  local 198.51.100.11 as 64512; neighbor 198.51.100.12 as 64512;
  ipv4 { import all; export all; };
}
# Nothing listens on .13's port 1790: B's kernel answers with a reset.
protocol bgp Mesh_198_51_100_13 {
  local 198.51.100.11 as 64512; neighbor 198.51.100.13 port 1790 as 64512;
  connect retry time 1; ipv4 { import none; export none; };
}
""" + ODD_PEERS
B_CONFIG = """\
router id 198.51.100.12;
protocol device {}
protocol bgp Mesh_198_51_100_11 {
  local 198.51.100.12 as 64512; neighbor 198.51.100.11 as 64512;
  ipv4 { import all; export none; };
}
"""


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    with two_birds(tmp_path_factory.mktemp("birds"), A_CONFIG, B_CONFIG) as (node_a, _):
        yield node_a


def by_name(socket: Path) -> dict[str, control.Protocol]:
    return {p.name: p for p in control.protocols(socket)}


def settled(socket: Path) -> dict[str, control.Protocol]:
    """The protocols once the session to B is up and the one to .13 has been refused."""
    def check():
        rows = by_name(socket)
        ok = rows["Mesh_198_51_100_12"].info == "Established" and \
            "Connection refused" in rows["Mesh_198_51_100_13"].info
        return rows if ok else None

    return wait_for(check, timeout=20, what="BIRD sessions: .12 Established, .13 refused")


def test_replies_are_split_into_codes_and_continuations(birds):
    reply = control.command(birds.socket, "show status")
    assert reply.lines[0][0] == "1000" and reply.lines[0][1].startswith("BIRD 2.")
    assert reply.lines[-1] == ("0013", "Daemon is up and running")
    assert not reply.failed and control.ready(birds.socket)
    bogus = control.command(birds.socket, "bogus")
    assert bogus.failed and bogus.code == "9001"


def test_show_protocols_rows_keep_the_whole_info_column(birds):
    rows = settled(birds.socket)
    assert list(rows)[:3] == ["device1", "kernel1", "static1"]
    up = rows["Mesh_198_51_100_12"]
    assert (up.proto, up.table, up.state) == ("BGP", "---", "up")
    refused = rows["Mesh_198_51_100_13"]
    # BIRD's words, several of them, in one info string: "Active Socket: Connection refused".
    assert refused.state == "start" and refused.info.split()[0] in ("Active", "Connect", "Idle")
    assert refused.info.endswith("Socket: Connection refused")
    assert rows["Node_fd00_1__2"].state == "start"


def test_a_refused_configure_is_an_error_with_birds_words_and_keeps_the_old_config(birds):
    good = birds.config_file.read_text()
    birds.config_file.write_text(good + "protocol bgp Broken { nonsense; }\n")
    try:
        with pytest.raises(control.BirdError, match="syntax error"):
            control.configure(birds.socket)
    finally:
        birds.config_file.write_text(good)
    assert "Broken" not in by_name(birds.socket)
    assert control.configure(birds.socket)  # the good file again: accepted
    assert by_name(birds.socket)["Mesh_198_51_100_12"].state == "up"


def test_no_bird_is_a_clear_error(tmp_path):
    with pytest.raises(control.BirdError, match="unable to talk to BIRD on .*missing.ctl"):
        control.command(tmp_path / "missing.ctl", "show status")
    assert not control.ready(tmp_path / "missing.ctl")


def test_node_status_shows_calicos_peers_from_a_real_bird(birds, tmp_path):
    from tests.unit.test_bird_status import AGENT, BIRD, run_status

    rows = settled(birds.socket)
    code, out, err = run_status(tmp_path, {100: AGENT, 101: BIRD}, birds.socket)
    assert (code, err) == (0, "")
    v4, v6 = out.split("\nIPv6 BGP status\n")
    assert v4.startswith("Calico process is running.\n\nIPv4 BGP status\n+")
    lines = v4.splitlines()
    assert "| PEER ADDRESS  |     PEER TYPE     | STATE |" in lines[4]
    established = next(line for line in lines if "198.51.100.12" in line)
    assert [c.strip() for c in established.strip("|").split("|")] == [
        "198.51.100.12", "node-to-node mesh", "up", rows["Mesh_198_51_100_12"].since, "Established"]
    refused = next(line for line in lines if "198.51.100.13" in line)
    assert [c.strip() for c in refused.strip("|").split("|")][:3] == ["198.51.100.13", "node-to-node mesh", "start"]
    assert "Other" not in out and "203.0.113" not in out
    assert "| fd00:1::2    | node specific | start |" in v6


def test_bgp_readiness_as_calico_node_bird_ready_judges_it(birds, tmp_path):
    from pycalico.plugins.routing.bird import Options, bgp_readiness

    settled(birds.socket)
    options = Options(config_dir=str(tmp_path), socket=str(birds.socket))
    options.pid_file.write_text("4242\n")  # BIRD's start, as the readiness rule reads it
    started = options.pid_file.stat().st_mtime
    # Just started: every Calico peer must be up (Other is no Calico peer).
    assert bgp_readiness(options, now=started + 5) == [
        "BIRD is not ready: BGP not established with 198.51.100.13,fd00:1::2"]
    # Later one Established peer is enough, so a mesh does not fail with a few nodes down.
    assert bgp_readiness(options, now=started + 31) == []
    # None Established: not ready, however long BIRD has run.
    assert not control.command(birds.socket, "disable Mesh_198_51_100_12").failed
    try:
        assert bgp_readiness(options, now=started + 31) == [
            "BIRD is not ready: BGP not established with 198.51.100.12,198.51.100.13,fd00:1::2"]
    finally:
        assert not control.command(birds.socket, "enable Mesh_198_51_100_12").failed
        settled(birds.socket)
    gone = Options(config_dir=str(tmp_path), socket=str(tmp_path / "bird.ctl"))
    assert bgp_readiness(gone) == [
        f"BIRD is not ready: unable to talk to BIRD on {gone.socket}: No such file or directory"]
