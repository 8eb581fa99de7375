"""A CalicoNodeStatus read from real BIRD 2 daemons (``plugins/routing/bird/nodestatus.py``).

Node A (198.51.100.11 and .14, fd00:1::1) is the node reported on. Node B peers with it
twice: as the node-to-node mesh from .12 to .11 (iBGP) and as a global peer from .13 to
.14 (eBGP, AS 65001), both announcing 10.65.7.0/26; so A has that block twice, one route in its FIB
and one in its RIB only. A's IPv6 peer never answers, a protocol named ``Other`` is not
Calico's, and A has a static blackhole, an unreachable IPv6 route, its interface routes
and one route it learned from its kernel.
"""

from __future__ import annotations

import re
import subprocess

import attrs
import pytest

from pycalico.core.lab import netns
from pycalico.core.resources.nodestatus import NO_BGP_DAEMON, CalicoNodeRoute, CalicoNodeRouteLearnedFrom
from pycalico.plugins.routing.bird import control, nodestatus
from tests.bird_fixtures import ODD_PEERS, two_birds
from tests.waiting import wait_for

pytestmark = pytest.mark.lab

A_CONFIG = """\
router id 198.51.100.11;
protocol device {}
protocol direct { ipv4; ipv6; interface "eth0"; }
protocol kernel { ipv4 { import all; export none; }; learn; scan time 1; }
protocol static { ipv4; route 10.65.0.0/26 blackhole; }
protocol static { ipv6; route fd00:65::/122 unreachable; }
protocol bgp Mesh_198_51_100_12 {
  local 198.51.100.11 as 64512; neighbor 198.51.100.12 as 64512; connect retry time 1;
  ipv4 { import all; export none; };
}
protocol bgp Global_198_51_100_13 {
  local 198.51.100.14 as 64512; neighbor 198.51.100.13 as 65001; connect retry time 1;
  ipv4 { import all; export none; };
}
""" + ODD_PEERS
# B waits for A to connect (``passive``, as Calico makes the higher address wait), so
# no connection collision restarts a session once it is up.
B_CONFIG = """\
router id 198.51.100.12;
protocol device {}
protocol static blocks { ipv4; route 10.65.7.0/26 blackhole; }
protocol bgp Mesh_198_51_100_11 {
  local 198.51.100.12 as 64512; neighbor 198.51.100.11 as 64512; passive on;
  ipv4 { import none; export where proto = "blocks"; };
}
protocol bgp Global_198_51_100_14 {
  local 198.51.100.13 as 65001; neighbor 198.51.100.14 as 64512; passive on;
  ipv4 { import none; export where proto = "blocks"; };
}
"""


@pytest.fixture(scope="module")
def node_a(tmp_path_factory):
    with two_birds(tmp_path_factory.mktemp("nodestatus"), A_CONFIG, B_CONFIG, tag="pcns") as (a, _):
        # A's second address, for B's second session (BIRD takes one session per neighbor).
        netns.add_addr(a.ns, "eth0", "198.51.100.14/24")
        # A route of A's kernel that BIRD did not make: BIRD learns it (``learn``).
        subprocess.run(netns.exec_argv(a.ns, ["ip", "route", "add", "10.99.0.0/24", "via", "198.51.100.12"]),
                       check=True)
        wait_for(lambda: _all_routes_in(a), timeout=20, what="B's block from both sessions and the kernel route")
        yield a


def _all_routes_in(bird) -> bool:
    said = control.command(bird.socket, "show route").text
    return "10.99.0.0/24" in said and "[Mesh_198_51_100_12 " in said and "[Global_198_51_100_13 " in said


def route(type_, dest, gateway, iface, source, peer=None) -> CalicoNodeRoute:
    return CalicoNodeRoute(type=type_, destination=dest, gateway=gateway, interface=iface,
                           learned_from=CalicoNodeRouteLearnedFrom(source_type=source, peer_ip=peer))


def test_agent_is_birds_own_show_status(node_a):
    status = nodestatus.read(node_a.socket, ["Agent"])
    assert (status.bgp, status.routes) == (None, None), "only the classes asked for"
    daemon = status.agent.bird_v4
    assert status.agent.bird_v6 == daemon, "one BIRD 2 serves both families"
    version = subprocess.run(["bird", "--version"], capture_output=True, text=True, check=True)
    assert f"BIRD version {daemon.version}" in version.stdout + version.stderr
    assert (daemon.state, daemon.router_id) == ("Ready", "198.51.100.11")
    said = control.command(node_a.socket, "show status").text
    assert f"Last reboot on {daemon.last_boot_time}" in said
    assert f"Last reconfiguration on {daemon.last_reconfiguration_time}" in said
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?", daemon.last_boot_time)


def test_bgp_lists_calicos_sessions_by_family(node_a):
    bgp = nodestatus.read(node_a.socket, ["BGP"]).bgp
    since = {p.name: p.since for p in control.protocols(node_a.socket)}
    assert [(p.peer_ip, p.type, p.state, p.since) for p in bgp.peers_v4] == [
        ("198.51.100.12", "NodeMesh", "Established", since["Mesh_198_51_100_12"]),
        ("198.51.100.13", "GlobalPeer", "Established", since["Global_198_51_100_13"]),
    ]
    (v6,) = bgp.peers_v6
    assert (v6.peer_ip, v6.type, v6.since) == ("fd00:1::2", "NodePeer", since["Node_fd00_1__2"])
    assert v6.state in ("Idle", "Connect", "Active"), "BIRD's own word for a session that is not up"
    assert (bgp.number_established_v4, bgp.number_not_established_v4) == (2, 0)
    assert (bgp.number_established_v6, bgp.number_not_established_v6) == (0, 1)


def test_routes_say_where_each_came_from(node_a):
    routes = nodestatus.read(node_a.socket, ["Routes"]).routes
    v4 = {(r.destination, r.learned_from.source_type, r.gateway): r for r in routes.routes_v4}
    assert v4.pop(("10.65.0.0/26", "Static", "N/A")) == route("FIB", "10.65.0.0/26", "N/A", "blackhole", "Static")
    assert v4.pop(("198.51.100.0/24", "Direct", "N/A")) == route("FIB", "198.51.100.0/24", "N/A", "eth0", "Direct")
    assert v4.pop(("10.99.0.0/24", "Kernel", "198.51.100.12")) == route(
        "FIB", "10.99.0.0/24", "198.51.100.12", "eth0", "Kernel")
    mesh = v4.pop(("10.65.7.0/26", "NodeMesh", "198.51.100.12"))
    global_ = v4.pop(("10.65.7.0/26", "BGPPeer", "198.51.100.13"))
    assert not v4, f"unexpected routes: {sorted(v4)}"
    assert attrs.evolve(mesh, type=None) == route(None, "10.65.7.0/26", "198.51.100.12", "eth0", "NodeMesh",
                                                  "198.51.100.12")
    assert global_.learned_from.peer_ip == "198.51.100.13" and global_.interface == "eth0"
    # BIRD prefers the shorter AS path (the mesh's, empty): that one is in the FIB, the
    # other in the RIB alone.
    assert (mesh.type, global_.type) == ("FIB", "RIB")
    v6 = {r.destination: r for r in routes.routes_v6}
    assert v6["fd00:65::/122"] == route("FIB", "fd00:65::/122", "N/A", "unreachable", "Static")
    assert v6["fd00:1::/64"] == route("FIB", "fd00:1::/64", "N/A", "eth0", "Direct")


def test_a_route_from_a_protocol_that_is_not_calicos_fails_the_read(node_a):
    good = node_a.config_file.read_text()
    node_a.config_file.write_text(good + "protocol static Custom { ipv4; route 10.66.0.0/24 blackhole; }\n")
    try:
        control.configure(node_a.socket)
        with pytest.raises(control.BirdError, match="'Custom', which is not a Calico peer"):
            nodestatus.read(node_a.socket, ["Routes"])
        assert nodestatus.read(node_a.socket, ["Agent", "BGP"]).bgp.number_established_v4 == 2
    finally:
        node_a.config_file.write_text(good)
        control.configure(node_a.socket)
    assert nodestatus.read(node_a.socket, ["Routes"]).routes.routes_v4


def test_no_bird_is_what_calico_reports_without_bgp(tmp_path):
    assert nodestatus.read(tmp_path / "bird.ctl", ["Agent", "BGP", "Routes"]) == NO_BGP_DAEMON
    assert NO_BGP_DAEMON.agent.bird_v4.state == NO_BGP_DAEMON.agent.bird_v6.state == "NotReady"
