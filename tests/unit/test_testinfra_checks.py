"""pycalico.testinfra without a node: the probe script run by a local ``sh``, and the
checks judging recorded outputs (what an IPIP node, which this kernel cannot make,
would print). Expected differences follow Calico's rules, worked out by hand."""

from __future__ import annotations

import json
import subprocess

import pytest

from pycalico.core.ctl.node import HEADER, table
from pycalico.testinfra import checks
from pycalico.testinfra.gather import RESOURCES, Output, Settings, parse, script
from pycalico.testinfra.view import NodeView, NotApplicable

TOKEN = "@@pycalico-test"


def run_script(commands: dict[str, list[str]], settings: Settings = Settings()) -> dict[str, Output]:
    text = subprocess.run(["sh", "-c", script(settings, commands, TOKEN)], capture_output=True, text=True, check=True).stdout
    return parse(text, TOKEN, commands)


def test_script_runs_every_probe_and_keeps_each_output_apart(tmp_path):
    tool = tmp_path / "calicoctl"
    tool.write_text("#!/bin/sh\necho \"calicoctl $*\"\n")
    tool.chmod(0o755)
    found = run_script({
        "plain": ["printf", "a\\nb"],
        "failing": ["sh", "-c", "echo out; echo oops >&2; exit 3"],
        "marker_lookalike": ["echo", "@@pycalico-other node 0 out"],
        "missing": ["no-such-command-here"],
        "from_calico_bin": ["calicoctl", "get", "nodes"],
    }, Settings(calico_bin=str(tmp_path)))
    assert found["plain"] == Output(0, "a\nb\n", "")
    assert found["failing"] == Output(3, "out\n", "oops\n")
    assert found["marker_lookalike"].out == "@@pycalico-other node 0 out\n"
    assert found["missing"].rc == 127 and not found["missing"].ok
    assert found["from_calico_bin"].out == "calicoctl get nodes\n"


def test_sections_survive_a_stripped_final_newline():
    # Ansible's shell module hands stdout back without its last newline.
    commands = {"first": ["echo", "one"], "last": ["true"]}
    text = subprocess.run(["sh", "-c", script(Settings(), commands, TOKEN)], capture_output=True, text=True).stdout
    assert parse(text.rstrip("\n"), TOKEN, commands) == {"first": Output(0, "one\n", ""), "last": Output(0, "", "")}


def test_a_section_that_never_came_is_a_failure():
    found = parse("", TOKEN, ["config"])
    assert found["config"].rc == 255
    assert found["config"].failure("reading x") == "reading x failed (exit 255): no output from the node (the command did not run)"


# --- a recorded node -------------------------------------------------------------------


def resource_list(kind: str, items: list[dict]) -> str:
    return json.dumps({"kind": f"{kind}List", "apiVersion": "projectcalico.org/v3", "items": [
        {"kind": kind, "apiVersion": "projectcalico.org/v3", **item} for item in items]})


def node(name: str, address: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"bgp": {"ipv4Address": address}}}


def recorded(routing: str, nodes: list[dict], blocks: dict[str, str], routes: list[dict], pools: list[dict],
             extra: dict[str, str] | None = None) -> NodeView:
    """node1 (198.51.100.11/24 on eth0) as the probes would print it."""
    config = f'node_name = "node1"\n[routing]\ntype = "{routing}"\n[policy]\ntype = "iptables"\n'
    listing = "Loading all IPAM blocks...\n" + "".join(f" IPAM block {c} affinity=host:{n}:\n" for c, n in blocks.items())
    outputs = {
        "config": Output(0, config, ""),
        "hostname": Output(0, "vm\n", ""),
        "ipam_check": Output(0, listing + "Check complete; found 0 problems.\n", ""),
        "routes": Output(0, json.dumps(routes), ""),
        "links": Output(0, json.dumps([{"ifindex": 2, "ifname": "eth0", "flags": ["UP"], "mtu": 1500}]), ""),
        "addrs": Output(0, json.dumps([{"ifindex": 2, "ifname": "eth0", "addr_info": [
            {"family": "inet", "local": "198.51.100.11", "prefixlen": 24}]}]), ""),
    }
    for kind in RESOURCES:
        outputs[kind] = Output(0, resource_list(kind, {"Node": nodes, "IPPool": pools}.get(kind, [])), "")
    for name, text in (extra or {}).items():
        outputs[name] = Output(0, text, "")
    return NodeView(Settings(), outputs)


NODES = [node("node1", "198.51.100.11/24"), node("node2", "203.0.113.12/24"), node("node3", "198.51.100.13/24")]
BLOCKS = {"10.65.0.0/26": "node1", "10.65.1.0/26": "node2", "10.65.2.0/26": "node3"}


def test_ipip_cross_subnet_routes_tunnel_only_to_the_other_subnet():
    pool = {"metadata": {"name": "p"}, "spec": {"cidr": "10.65.0.0/16", "ipipMode": "CrossSubnet"}}
    routes = [
        {"dst": "10.65.1.0/26", "gateway": "203.0.113.12", "dev": "tunl0", "protocol": "80", "flags": ["onlink"]},
        # Wrong: node3 shares node1's subnet, so CrossSubnet sends its traffic unencapsulated.
        {"dst": "10.65.2.0/26", "gateway": "198.51.100.13", "dev": "tunl0", "protocol": "80", "flags": ["onlink"]},
    ]
    view = recorded("ipip", NODES, BLOCKS, routes, [pool])
    assert checks.remote_routes(view) == [
        "the route to node3's block 10.65.2.0/26 goes via 198.51.100.13 dev tunl0, "
        "expected via 198.51.100.13 dev eth0 (CrossSubnet, unencapsulated)"]
    with pytest.raises(NotApplicable, match="routing is 'ipip', which runs no VXLAN"):
        checks.vxlan_device(view)


def test_bird_routes_go_to_the_blocks_node_by_the_next_hop_of_its_address():
    pool = {"metadata": {"name": "p"}, "spec": {"cidr": "10.65.0.0/16"}}
    routes = [
        {"dst": "default", "gateway": "198.51.100.1", "dev": "eth0"},
        {"dst": "198.51.100.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link"},
        {"dst": "10.65.2.0/26", "type": "blackhole", "protocol": "bird"},
    ]
    view = recorded("bird", NODES, BLOCKS, routes, [pool])
    # node2 is in the other subnet: BIRD resolves its address through the default route.
    assert checks.remote_routes(view) == [
        "no route to node2's block 10.65.1.0/26, expected via 198.51.100.1 dev eth0 (BGP)",
        "the route to node3's block 10.65.2.0/26 is a blackhole route, expected via 198.51.100.13 dev eth0 (BGP)",
    ]
    unreachable = recorded("bird", NODES, BLOCKS, routes[1:], [pool])
    assert checks.remote_routes(unreachable)[0] == (
        "no route to node2's address 203.0.113.12, the BGP next hop of node2's block 10.65.1.0/26")


def status_table(rows: list[list[str]]) -> str:
    return ("Calico process is running.\n\nIPv4 BGP status\n" + table(HEADER, rows)
            + "\nIPv6 BGP status\n" + table(HEADER, [["fd00::1", "global", "up", "00:00:01", "Established"]]) + "\n")


def test_bgp_sessions_must_be_the_mesh_and_global_peers_all_established():
    peer = {"kind": "BGPPeer", "metadata": {"name": "tor"}, "spec": {"peerIP": "198.51.100.1", "asNumber": 65001}}
    rows = [
        ["198.51.100.1", "global", "start", "00:00:01", "Active Socket: Connection refused by the other side of it"],
        ["198.51.100.13", "node-to-node mesh", "up", "00:00:01", "Established"],
        ["198.51.100.99", "node specific", "up", "00:00:01", "Established"],
    ]
    view = recorded("bird", NODES, BLOCKS, [], [], {
        "BGPPeer": resource_list("BGPPeer", [peer]), "node_status": status_table(rows)})
    assert checks.bgp(view) == [
        "BGP peer 198.51.100.1 is Active (Socket: Connection refused by the other side of it), expected Established",
        "BGP peer 203.0.113.12 (node-to-node mesh) has no session in BIRD, expected Established",
        "BGP peer 198.51.100.99 (node specific) is configured in BIRD, but the datastore asks for no such peer",
    ]


def test_bgp_does_not_apply_to_vxlan_nodes():
    with pytest.raises(NotApplicable, match="routing is 'vxlan': BGP runs only with routing bird"):
        checks.bgp(recorded("vxlan", NODES, BLOCKS, [], []))


def conflist_view(conflist: dict, executables: list[str], refs: str = "") -> NodeView:
    return NodeView(Settings(cni_bin_dirs=("/opt/cni/bin", "/usr/lib/cni")), {
        "conflist": Output(0, json.dumps(conflist), ""),
        "calico_config_refs": Output(0, refs, ""),
        "cni_bin": Output(0, "".join(f"/opt/cni/bin/{e}\n" for e in executables), ""),
    })


def test_cni_names_each_missing_executable_and_bad_netconf_key():
    conflist = {"name": "k8s-pod-network", "cniVersion": "1.0.0", "plugins": [
        {"type": "calico", "mtu": "big", "ipam": {"type": "calico-ipam"}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
    ]}
    view = conflist_view(conflist, ["calico", "calico-ipam", "portmap"], "missing /etc/calico/calico.toml\n")
    assert checks.cni(view) == [
        '/etc/cni/net.d/10-calico.conflist: plugins[0] (calico): mtu: must be an integer, got "big"',
        "/etc/cni/net.d/10-calico.conflist: calico_config names /etc/calico/calico.toml, which is not a file on the node",
        "CNI plugin host-local is not an executable file in /opt/cni/bin:/usr/lib/cni",
        "CNI plugin bandwidth is not an executable file in /opt/cni/bin:/usr/lib/cni",
    ]


def test_cni_chain_must_start_with_calico():
    conflist = {"name": "k8s-pod-network", "cniVersion": "1.0.0", "plugins": [
        {"type": "portmap"}, {"type": "calico", "ipam": {"type": "host-local"}}]}
    view = conflist_view(conflist, ["calico", "calico-ipam", "host-local", "portmap"])
    assert checks.cni(view) == ["/etc/cni/net.d/10-calico.conflist: the chain starts with ['portmap'], expected calico "
                                "(Calico's chain: calico, then portmap, then bandwidth)"]


def test_iptables_backend_follows_the_option_then_the_system_iptables():
    assert checks.iptables_backend("legacy", "iptables v1.8.9 (nf_tables)") == "legacy"
    assert checks.iptables_backend("auto", "iptables v1.8.9 (legacy)") == "legacy"
    assert checks.iptables_backend("auto", "iptables v1.8.9 (nf_tables)") == "nft"


def test_ipam_reports_the_counts_and_each_problem_address():
    text = """Checking IPAM for inconsistencies...
Looking for top (up to 20) nodes by allocations...
  node1 has 2 allocations
Scanning for IPs that are allocated but not actually in use...
  10.65.0.7 leaked; attrs Main:h Extra:node=node1
Found 1 IPs that are allocated in IPAM but not actually in use.
Found 0 in-use IPs that are not in active IP pools.
Found 2 handles with no matching IPs (and 3 handles with matches).
Check complete; found 3 problems.
"""
    view = NodeView(Settings(), {"ipam_check": Output(0, text, "")})
    assert checks.ipam(view) == [
        "calicoctl ipam check found 3 problem(s): 1 IPs that are allocated in IPAM but not actually in use; "
        "2 handles with no matching IPs (and 3 handles with matches)",
        "10.65.0.7 leaked; attrs Main:h Extra:node=node1",
    ]
