"""The bird plugin's configuration: peerings as confd computes them, BIRD 2 text as
Calico's templates lay it out, and every rendered file accepted by the real ``bird -p``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pycalico.core import config as cfg
from pycalico.core.calc import Cache, compute
from pycalico.core.datastore import Snapshot
from pycalico.core.plugins import Plugins, Registry
from pycalico.core.resources import load_resources
from pycalico.plugins.routing.bird import Options, model, plugin, render

NODES = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node1}
spec: {bgp: {ipv4Address: 198.51.100.11/24}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node2}
spec: {bgp: {ipv4Address: 198.51.100.12/24}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node3}
spec: {bgp: {ipv4Address: 198.51.100.13/24}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 10.65.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: BlockAffinity
metadata: {name: node2-10-65-1-0-26}
spec: {node: node2, cidr: 10.65.1.0/26, state: confirmed}
---
apiVersion: projectcalico.org/v3
kind: BlockAffinity
metadata: {name: node2-10-65-1-64-26}
spec: {node: node2, cidr: 10.65.1.64/26, state: pending}
---
apiVersion: projectcalico.org/v3
kind: BlockAffinity
metadata: {name: node1-10-65-0-0-26}
spec: {node: node1, cidr: 10.65.0.0/26, state: confirmed}
"""

REFLECTORS = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node1, labels: {route-reflector: "true"}}
spec: {bgp: {ipv4Address: 198.51.100.11/24, routeReflectorClusterID: 244.0.0.1}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node2, labels: {route-reflector: "true"}}
spec: {bgp: {ipv4Address: 198.51.100.12/24, routeReflectorClusterID: 244.0.0.1}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node3}
spec: {bgp: {ipv4Address: 198.51.100.13/24}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node4}
spec: {bgp: {ipv4Address: 198.51.100.14/24}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: peer-with-route-reflectors}
spec: {nodeSelector: all(), peerSelector: route-reflector == 'true'}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
"""


def state(yaml: str, node: str):
    cache = Cache()
    cache.replace(Snapshot(1, tuple(load_resources(yaml))))
    return compute(cache, node)


def built(yaml: str, node: str, secrets: Path | str = "/nonexistent") -> model.BirdConfig:
    return model.build(state(yaml, node), secrets)


def parses(cfg_: model.BirdConfig, tmp_path: Path) -> None:
    """The real bird accepts the rendered files (includes resolved next to bird.cfg)."""
    directory = tmp_path / f"cfg-{cfg_.node_name}"
    directory.mkdir(exist_ok=True)
    for name, text in render.render(cfg_).items():
        (directory / name).write_text(text)
    res = subprocess.run(["bird", "-p", "-c", str(directory / render.MAIN)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def peer_names(c: model.BirdConfig) -> list[str]:
    return [p.name for p in c.peers]


# --- peerings ----------------------------------------------------------------------------


def test_full_mesh_names_passive_side_and_defaults(tmp_path):
    c = built(NODES, "node2")
    assert (c.node_ip, c.as_number) == ("198.51.100.12", 64512)
    assert peer_names(c) == ["Mesh_198_51_100_11", "Mesh_198_51_100_13"]
    # The side whose peer has the greater address (string order) waits to be connected.
    assert [(p.ip, p.passive) for p in c.peers] == [("198.51.100.11", False), ("198.51.100.13", True)]
    assert all(p.source_address == "198.51.100.12" and p.as_number == 64512 for p in c.peers)
    parses(c, tmp_path)


def test_mesh_passive_uses_string_order_as_confd_does():
    yaml = NODES.replace("198.51.100.13/24", "198.51.100.9/24")
    # "198.51.100.9" > "198.51.100.12" as strings, though not as numbers.
    assert [(p.ip, p.passive) for p in built(yaml, "node2").peers] == [("198.51.100.11", False), ("198.51.100.9", True)]


def test_blocks_pools_and_the_golden_aggregation_file(tmp_path):
    c = built(NODES, "node2")
    assert c.blocks == (model.Block("10.65.1.0/26", "confirmed"), model.Block("10.65.1.64/26", "pending"))
    assert render.render(c)[render.AGGR] == (
        render.HEADER + "\n"
        "protocol static {\n"
        "  ipv4;\n"
        "   # IP blocks for this host.\n"
        "   route 10.65.1.0/26 blackhole;\n"
        "   route 10.65.1.64/26 blackhole;\n"
        "}\n"
        "\n"
        "# Aggregation of routes on this host; export the block, nothing beneath it.\n"
        "function calico_aggr ()\n"
        "{\n"
        "      # Block 10.65.1.0/26 is confirmed\n"
        "      if ( net = 10.65.1.0/26 ) then { accept; }\n"
        "      if ( net ~ 10.65.1.0/26 ) then { reject; }\n"
        "      # Block 10.65.1.64/26 is pending\n"
        "}\n"
    )
    parses(c, tmp_path)


def test_golden_mesh_peer_block():
    text = render.render(built(NODES, "node2"))[render.MAIN]
    assert (
        "\nprotocol bgp Mesh_198_51_100_13 from bgp_template {\n"
        "  neighbor 198.51.100.13 as 64512;\n"
        "  source address 198.51.100.12;  # The local address we use for the TCP connection\n"
        "  ttl security off;\n"
        "  multihop;\n"
        "  ipv4 {\n"
        "    import all;        # Import all routes, since we don't know what the upstream\n"
        "                       # topology is and therefore have to trust the ToR/RR.\n"
        "    export filter {\n"
        "      calico_export_to_bgp_peers(true);\n"
        "      reject;\n"
        "    };  # Only want to export routes for workloads.\n"
        "  };\n"
        "  passive on; # Peering is unidirectional, the peer will connect to us.\n"
        "}\n"
    ) in text
    assert "router id 198.51.100.12;\n" in text
    assert '  local as 64512;\n' in text
    assert 'include "bird_aggr.cfg";\ninclude "bird_ipam.cfg";\n' in text
    assert '  interface -"cali*", -"kube-ipvs*", "*";\n' in text


def test_golden_filters_export_pools_and_keep_tunnel_routes_out_of_the_kernel(tmp_path):
    yaml = NODES + """
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: vx}
spec: {cidr: 10.70.0.0/16, vxlanMode: Always}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: quiet}
spec: {cidr: 10.80.0.0/16, disableBGPExport: true}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v6}
spec: {cidr: "fd00:65::/48"}
"""
    c = built(yaml, "node1")
    assert [(p.cidr, p.export, p.encapsulation) for p in c.pools] == [
        ("10.65.0.0/16", True, None), ("10.70.0.0/16", True, "vxlan"), ("10.80.0.0/16", False, None)]
    text = render.render(c)[render.IPAM]
    assert "function reject_disabled_pools ()\n{\n  if ( net ~ 10.80.0.0/16 ) then { reject; }\n}\n" in text
    assert (
        "  calico_aggr();\n"
        "  if ( net ~ 10.65.0.0/16 ) then {\n    accept;\n  }\n"
        "  if ( net ~ 10.70.0.0/16 ) then {\n    accept;\n  }\n"
        "  # Skip 10.80.0.0/16 as BGP export is disabled for it\n}\n"
    ) in text
    assert text.endswith(
        "filter calico_kernel_programming {\n"
        "  # Interface routes are the kernel's own (BIRD 1 never exported them).\n"
        "  if ( source = RTS_DEVICE ) then { reject; }\n"
        "  if ( net ~ 10.70.0.0/16 ) then {\n"
        "    # Don't program VXLAN routes into the kernel - the vxlan plugin does.\n"
        "    reject;\n  }\n"
        "  accept;\n}\n"
    )
    parses(c, tmp_path)


def test_route_reflectors_turn_the_mesh_off_and_reflect_to_their_clients(tmp_path):
    rr = built(REFLECTORS, "node1")
    assert peer_names(rr) == ["Node_198_51_100_12", "Node_198_51_100_13", "Node_198_51_100_14"]
    # Two reflectors of one cluster do not reflect to each other; they do to clients.
    assert [(p.ip, p.rr_cluster_id) for p in rr.peers] == [
        ("198.51.100.12", None), ("198.51.100.13", "244.0.0.1"), ("198.51.100.14", "244.0.0.1")]
    client = built(REFLECTORS, "node3")
    assert peer_names(client) == ["Node_198_51_100_11", "Node_198_51_100_12"]
    assert all(p.rr_cluster_id is None and not p.passive for p in client.peers)
    text = render.render(rr)[render.MAIN]
    assert "  rr client;\n  rr cluster id 244.0.0.1;\n" in text
    for c in (rr, client):
        parses(c, tmp_path)


def test_a_reflector_takes_no_part_in_the_mesh_even_when_it_is_on():
    yaml = REFLECTORS.replace("nodeToNodeMeshEnabled: false", "nodeToNodeMeshEnabled: true")
    assert peer_names(built(yaml, "node1")) == ["Node_198_51_100_12", "Node_198_51_100_13", "Node_198_51_100_14"]
    # Clients mesh among themselves, skipping reflectors, and peer with them by the BGPPeer.
    assert peer_names(built(yaml, "node3")) == ["Mesh_198_51_100_14", "Node_198_51_100_11", "Node_198_51_100_12"]


def test_reverse_peering_configures_the_other_end_of_a_peer_ip_session():
    yaml = NODES + """
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: one-way}
spec: {node: node1, peerIP: 198.51.100.13, asNumber: 64512}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
"""
    assert peer_names(built(yaml, "node1")) == ["Node_198_51_100_13"]
    assert peer_names(built(yaml, "node3")) == ["Node_198_51_100_11"]
    assert peer_names(built(yaml, "node2")) == []


def test_external_peers_global_and_per_node_ebgp_options(tmp_path):
    (tmp_path / "tor-secret").mkdir()
    (tmp_path / "tor-secret" / "password").write_text("s3cret\n")
    yaml = NODES + """
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec:
  peerIP: 203.0.113.1:1790
  asNumber: 65000
  keepOriginalNextHop: true
  password: {secretKeyRef: {name: tor-secret, key: password}}
  maxRestartTime: 2m
  keepaliveTime: 20s
  ttlSecurity: 2
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor-for-node1}
spec: {node: node1, peerIP: 203.0.113.1:1790, asNumber: 65000}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: ibgp-box}
spec: {node: node1, peerIP: 203.0.113.2, keepOriginalNextHop: true, localASNumber: 65010, asNumber: 65010, sourceAddress: None}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: unknown-secret}
spec: {node: node2, peerIP: 203.0.113.3, asNumber: 65000, password: {secretKeyRef: {name: nope, key: pw}}}
"""
    c = built(yaml, "node1", tmp_path)
    assert peer_names(c) == ["Global_203_0_113_1_port_1790", "Mesh_198_51_100_12", "Mesh_198_51_100_13",
                             "Node_203_0_113_2"]  # the node peering to the global address is dropped
    tor, box = c.peers[0], c.peers[3]
    assert (tor.as_number, tor.port, tor.password, tor.next_hop, tor.graceful_restart, tor.keepalive,
            tor.ttl_security, tor.passive) == (65000, 1790, "s3cret", "keep", 120, 20, 2, False)
    # keepOriginalNextHop is for eBGP only; localASNumber makes this one iBGP.
    assert (box.local_as, box.next_hop, box.source_address) == (65010, None, None)
    text = render.render(c)[render.MAIN]
    assert (
        "\nprotocol bgp Global_203_0_113_1_port_1790 from bgp_template {\n"
        "  neighbor 203.0.113.1 port 1790 as 65000;\n"
        "  source address 198.51.100.11;  # The local address we use for the TCP connection\n"
        "  ttl security on;\n"
        "  multihop 2;\n"
    ) in text
    assert ("      calico_export_to_bgp_peers(false);\n      reject;\n    };  # Only want to export routes for "
            "workloads.\n    next hop keep;\n  };\n  graceful restart time 120;\n  keepalive time 20;\n"
            '  password "s3cret";\n}\n') in text
    assert "\nprotocol bgp Node_203_0_113_2 from bgp_template {\n  local as 65010;\n" in text
    parses(c, tmp_path)
    missing = built(yaml, "node2", tmp_path)
    assert missing.problems == (
        f"BGPPeer unknown-secret: can't read password nope/pw ({tmp_path}/nope/pw: No such file or directory)",)
    assert [p.password for p in missing.peers if p.ip == "203.0.113.3"] == [None]


def test_node_as_number_listen_port_bind_mode_services_and_communities(tmp_path):
    yaml = NODES.replace("ipv4Address: 198.51.100.11/24", "ipv4Address: 198.51.100.11/24, asNumber: 65001") + """
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  asNumber: 64600
  listenPort: 1179
  bindMode: NodeIP
  logSeverityScreen: Debug
  ignoredInterfaces: [eth9]
  serviceClusterIPs: [{cidr: 10.96.0.0/12}]
  serviceExternalIPs: [{cidr: 203.0.113.128/25}, {cidr: 10.96.0.0/12}]
  serviceLoadBalancerIPs: [{cidr: 198.51.100.192/26}]
  communities: [{name: mine, value: "65000:100"}]
  prefixAdvertisements: [{cidr: 10.65.0.0/16, communities: [mine, "1:2:3"]}]
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: node.node2}
spec: {listenPort: 2179}
"""
    one = built(yaml, "node1")
    assert (one.as_number, one.listen_port, one.listen_address, one.debug) == (65001, 1179, "198.51.100.11", "all")
    # Peers are reached on their own listen port and with their own AS.
    assert [(p.ip, p.port, p.as_number) for p in one.peers] == [
        ("198.51.100.12", 2179, 64600), ("198.51.100.13", 1179, 64600)]
    text = render.render(one)
    assert "  local 198.51.100.11 port 1179 as 65001;\n  strict bind on;" in text[render.MAIN]
    assert '  interface -"eth9", -"cali*", -"kube-ipvs*", "*";\n' in text[render.MAIN]
    assert ("  if ( net ~ 10.65.0.0/16 ) then {\n    bgp_community.add((65000, 100));\n"
            "    bgp_large_community.add((1, 2, 3));\n  }\n") in text[render.MAIN]
    # Cluster, external and LoadBalancer ranges, each once, from every node.
    assert one.static_routes == ("10.96.0.0/12", "198.51.100.192/26", "203.0.113.128/25")
    assert "   # Static routes.\n   route 10.96.0.0/12 blackhole;\n" in text[render.AGGR]
    assert "  # Export static routes.\n  if ( net ~ 10.96.0.0/12 ) then { accept; }\n" in text[render.IPAM]
    assert "  # Don't program static routes into kernel.\n  if ( net ~ 10.96.0.0/12 ) then { reject; }\n" in text[render.IPAM]
    parses(one, tmp_path)
    excluded = yaml.replace("metadata: {name: node1}", "metadata: {name: node1, labels: "
                            "{node.kubernetes.io/exclude-from-external-load-balancers: 'true'}}")
    assert built(excluded, "node1").static_routes == ()


def test_a_node_without_ipv4_runs_bird_without_bgp(tmp_path):
    c = built(NODES, "node9")
    assert (c.node_ip, c.peers) == (None, ())
    text = render.render(c)[render.MAIN]
    assert "router id" not in text and text.endswith("# IPv4 disabled on this node.\n")
    parses(c, tmp_path)


def test_rendering_is_deterministic_whatever_the_resource_order():
    docs = load_resources(NODES + REFLECTORS.split("---", 4)[4])
    forward, backward = Cache(), Cache()
    forward.replace(Snapshot(1, tuple(docs)))
    backward.replace(Snapshot(1, tuple(reversed(docs))))
    a = render.render(model.build(compute(forward, "node2"), "/x"))
    assert a == render.render(model.build(compute(backward, "node2"), "/x"))


# --- the plugin's calico.toml table ------------------------------------------------------


def bind(table: str):
    config = cfg.parse(f'[datastore]\ntype = "etcd"\n[routing]\ntype = "bird"\n{table}')
    return Plugins.load(config, "calico.toml", Registry({"routing": {"bird": plugin}}, installed=False),
                        configure=False, slots=("routing",)).config.routing.options


def test_options_defaults_are_calicos_paths():
    assert bind("") == Options("/etc/calico/confd/config", "/var/run/calico/bird.ctl", "/etc/calico/bgp-secrets")
    assert bind('[routing.bird]\nconfig_dir = "/run/x"\nsocket = "/run/x/b.ctl"\n').socket == "/run/x/b.ctl"


def test_bad_options_name_the_key():
    with pytest.raises(cfg.ConfigError) as err:
        bind('[routing.bird]\nconfig_dir = "relative/dir"\nsocket = "/' + "s" * 120 + '"\ncolour = 1\n')
    text = str(err.value)
    assert "routing.bird.config_dir: must be an absolute path, got 'relative/dir'" in text
    assert "routing.bird.socket: a unix socket path has at most 107 bytes" in text
    assert "colour" in text
