"""bird mode in lab namespaces, with real BIRDs.

First the plugin driven pass by pass in two namespaces (no calico-node): BIRD started
once, reloaded only on a real change, a refused configuration never installed, BIRD
ended with the last unconfigure. Then end to end: calico-node on every node, pods wired
by the real CNI plugin, real packets between them; full mesh on 3 nodes, route
reflectors on 6, GoBGP as an external top-of-rack router. What BIRD puts in the kernels
is read back with ``ip route``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import attrs
import pytest

from pycalico.core.calc import Cache, compute
from pycalico.core.datastore import Conflict, Snapshot
from pycalico.core.lab import Lab, bgp, pods
from pycalico.core.lab import cli as lab_cli
from pycalico.core.lab import netns as lab_netns
from pycalico.core.lab.netns import run_in_netns
from pycalico.core.lab.pods import with_datastore
from pycalico.core.resources import load_resources
from pycalico.plugins.routing.bird import BirdRouting, ConfigRejected, Options, render
from waiting import wait_for

pytestmark = pytest.mark.lab


def established(lab, node: str) -> dict[str, str]:
    """Peer address -> type of the node's Established BGP sessions."""
    info = bgp.node_bgp(lab, lab.node(node))
    return {s["peer"]: s["type"] for s in info["sessions"] if s["info"].startswith("Established")}


def sessions(lab, node: str) -> list[dict]:
    return bgp.node_bgp(lab, lab.node(node))["sessions"]


def bird_routes(lab, node: str) -> dict[str, str]:
    """dst -> "blackhole" or the gateway, of the node's ``proto bird`` routes."""
    routes = bgp.node_bgp(lab, lab.node(node))["routes"]
    return {r["dst"]: "blackhole" if r["type"] == "blackhole" else r["via"] for r in routes}


def block_of(lab, node: str) -> str:
    return next(dst for dst, via in bird_routes(lab, node).items() if via == "blackhole")


def ping(lab, pod, ip: str) -> bool:
    res = pods.exec_in_pod(lab, pod.key, ["ping", "-c", "1", "-W", "2", ip], capture_output=True)
    return res.returncode == 0


def assert_all_reach(lab, all_pods) -> None:
    failed = [(a.key, b.ip) for a in all_pods for b in all_pods if a is not b and not ping(lab, a, b.ip)]
    assert not failed, f"no reply: {failed}"


def bird_pid(lab, node: str) -> int | None:
    pid_file = Path(lab.node(node).config_path).parent / "bird" / "bird.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        alive = b"bird" in Path(f"/proc/{pid}/cmdline").read_bytes()  # empty for a zombie
    except (OSError, ValueError, IndexError):  # no file, or BIRD is writing it
        return None
    return pid if alive else None


def pids_in(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def reconfigurations(lab, node: str) -> int:
    return (lab.state_dir / "logs" / f"calico-node-{node}.log").read_text().count("bird: Reconfiguring")


def update_node(lab, name: str, change) -> None:
    def write(ds):
        for _ in range(20):
            node = ds.get("Node", name)
            try:
                return ds.update(change(node))
            except Conflict:
                continue
        raise AssertionError(f"Node {name} kept changing")

    with_datastore(lab, lab.nodes[0], write)


def resources(lab, blocks: dict[str, list[str]], extra: str = "") -> list:
    text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool}\nspec: {cidr: 10.65.0.0/16}\n"
    for n in lab.nodes:
        text += (f"---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {n.name}}}\n"
                 f"spec: {{bgp: {{ipv4Address: {n.cidr}}}}}\n")
        for cidr in blocks.get(n.name, []):
            text += (f"---\napiVersion: projectcalico.org/v3\nkind: BlockAffinity\nmetadata: {{name: {n.name}-{cidr.replace('.', '-').replace('/', '-')}}}\n"
                     f"spec: {{node: {n.name}, cidr: {cidr}, state: confirmed}}\n")
    return load_resources(text + extra)


class Cluster:
    """Every node's plugin pass, on one desired state."""

    def __init__(self, lab, plugin: BirdRouting):
        self.lab, self.plugin, self.cache = lab, plugin, Cache()

    def options(self, node) -> Options:
        d = Path(node.config_path).parent / "bird"
        return Options(config_dir=str(d), socket=str(d / "bird.ctl"))

    def set(self, docs) -> None:
        self.cache.replace(Snapshot(1, tuple(docs)))

    def reconcile(self, name: str) -> list[str]:
        node = self.lab.node(name)
        state = compute(self.cache, name)
        return run_in_netns(node.netns, lambda: self.plugin.reconcile(state, self.options(node)), timeout=30)

    def speaker(self, name: str):
        node = self.lab.node(name)
        return run_in_netns(node.netns, lambda: self.plugin.speaker(self.options(node)))

    def sessions(self, name: str) -> dict[str, tuple[str, str, str]]:
        return {s.name: (s.since, s.info, s.state) for s in self.speaker(name).sessions()}

    def routes(self, name: str) -> str:
        return self.lab.exec(name, ["ip", "route", "show", "proto", "bird"], capture_output=True, text=True).stdout


def test_reload_only_on_change_and_refused_config(make_lab):
    lab = make_lab(nodes=2)
    plugin = BirdRouting()
    c = Cluster(lab, plugin)
    try:
        c.set(resources(lab, {"node1": ["10.65.0.0/26"], "node2": ["10.65.1.0/26"]}))
        for name in ("node1", "node2"):
            lines = c.reconcile(name)
            assert lines[0].startswith("bird config written to ") and lines[1].startswith("bird started (pid ")
            assert c.reconcile(name) == []  # the same state again: nothing to do
        # BIRD stamps "since" again when the protocol goes up, a moment after BGP is
        # Established: wait for both before the time is kept.
        wait_for(lambda: c.sessions("node1").get("Mesh_198_51_100_12", ("",) * 3)[1:] == ("Established", "up"))
        wait_for(lambda: "10.65.1.0/26 via 198.51.100.12 dev eth0" in c.routes("node1"))
        assert "blackhole 10.65.0.0/26" in c.routes("node1")
        pid, since = c.speaker("node1").daemon.pid, c.sessions("node1")

        # A new block on node2: node2's BIRD reloads, node1's config does not change,
        # node1 learns the route, and no session restarts.
        c.set(resources(lab, {"node1": ["10.65.0.0/26"], "node2": ["10.65.1.0/26", "10.65.1.64/26"]}))
        assert c.reconcile("node1") == []
        assert c.reconcile("node2")[1:] == ["bird reconfigured"]
        wait_for(lambda: "10.65.1.64/26 via 198.51.100.12 dev eth0" in c.routes("node1"))
        assert c.sessions("node1") == since and c.speaker("node1").daemon.pid == pid

        # A configuration BIRD refuses (keepalive time out of its range) is reported and
        # never installed; the running BIRD keeps the last good one.
        good = {name: (Path(c.options(lab.node("node1")).config_dir) / name).read_text() for name in render.FILES}
        c.set(resources(lab, {"node1": ["10.65.0.0/26"], "node2": ["10.65.1.0/26", "10.65.1.64/26"]},
                        "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: far}\n"
                        "spec: {node: node1, peerIP: 203.0.113.9, asNumber: 65000, keepaliveTime: 100000s}\n"))
        with pytest.raises(ConfigRejected, match="Keepalive time"):
            c.reconcile("node1")
        config_dir = Path(c.options(lab.node("node1")).config_dir)
        assert {name: (config_dir / name).read_text() for name in render.FILES} == good
        assert not [p for p in config_dir.iterdir() if p.name.startswith(".staging")]
        status = run_in_netns(lab.node("node1").netns, lambda: plugin.pycalico_node_status(None))
        assert ("bird", "BIRD pid %d: 1 of 1 BGP sessions Established" % pid) in status
        assert any("refused, BIRD keeps the last good one" in text for _, text in status)
        assert c.sessions("node1") == since

        # Fixed: installed and loaded, and the refusal is gone from the status.
        c.set(resources(lab, {"node1": ["10.65.0.0/26"], "node2": ["10.65.1.0/26", "10.65.1.64/26"]},
                        "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: far}\n"
                        "spec: {node: node1, peerIP: 203.0.113.9, asNumber: 65000, keepaliveTime: 10s}\n"))
        assert c.reconcile("node1")[1:] == ["bird reconfigured"]
        assert "Node_203_0_113_9" in c.sessions("node1")
        status = run_in_netns(lab.node("node1").netns, lambda: plugin.pycalico_node_status(None))
        assert not any("refused" in text for _, text in status)

        # configure/unconfigure are counted: a config reload (configure, then the old
        # set's unconfigure) keeps BIRD; the last unconfigure ends it.
        plugin.pycalico_configure(None)
        plugin.pycalico_configure(None)
        plugin.pycalico_unconfigure(None)
        assert c.speaker("node1").daemon.pid == pid
        plugin.pycalico_unconfigure(None)
        wait_for(lambda: not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes())
        # The routes stay in the kernel (persist), as Calico's do while BIRD restarts.
        assert "10.65.1.0/26 via 198.51.100.12" in c.routes("node1")
    finally:
        plugin.stop_all()


def test_mesh_3_nodes(make_lab):
    lab = make_lab(nodes=3, routing="bird")
    names = [n.name for n in lab.nodes]
    ips = {n.name: n.ip for n in lab.nodes}
    for name in names:
        wait_for(lambda: len(established(lab, name)) == 2, what=f"{name}'s two mesh sessions")
    assert established(lab, "node1") == {"198.51.100.12": "node-to-node mesh", "198.51.100.13": "node-to-node mesh"}

    all_pods = [pods.add_pod(lab, name, f"default/p-{name}") for name in names]
    for name in names:
        wait_for(lambda: any(via == "blackhole" for via in bird_routes(lab, name).values()), what=f"{name}'s block")
    blocks = {name: block_of(lab, name) for name in names}
    # Every node has each other node's block from BIRD, via that node, and its own as a blackhole.
    for name in names:
        want = {blocks[o]: (ips[o] if o != name else "blackhole") for o in names}
        wait_for(lambda: bird_routes(lab, name) == want, what=f"{name}'s BIRD routes {want}")
    assert_all_reach(lab, all_pods)

    status = lab.exec("node1", ["calicoctl", "node", "status"], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("Calico process is running.\n\nIPv4 BGP status\n+")
    assert "| 198.51.100.12 | node-to-node mesh | up    |" in status.stdout
    assert status.stdout.count("Established") == 2

    # A change BIRD's configuration does not depend on: no reload, no session flaps.
    since = {s["peer"]: s["since"] for s in sessions(lab, "node1")}
    before = reconfigurations(lab, "node1")
    update_node(lab, "node2", lambda n: attrs.evolve(n, metadata=attrs.evolve(n.metadata, labels={"rack": "r1"})))
    time.sleep(2)  # a few passes
    assert reconfigurations(lab, "node1") == before
    assert {s["peer"]: s["since"] for s in sessions(lab, "node1")} == since

    # BIRD killed: its supervisor starts it again and the sessions come back.
    old = bird_pid(lab, "node2")
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: bird_pid(lab, "node2") not in (None, old), what="a new BIRD on node2")
    wait_for(lambda: len(established(lab, "node2")) == 2, what="node2's sessions back")

    # A node removed (its agent stopped, its Node deleted): its route is withdrawn everywhere.
    node3_bird = bird_pid(lab, "node3")
    assert lab.stop(lab.agent_pid("node3"))
    wait_for(lambda: not Path(f"/proc/{node3_bird}").exists(), timeout=10, what="node3's BIRD to end with its agent")
    with_datastore(lab, lab.nodes[0], lambda ds: ds.delete("Node", "node3"))
    for name in ("node1", "node2"):
        wait_for(lambda: blocks["node3"] not in bird_routes(lab, name), what=f"node3's block gone from {name}")
        assert set(established(lab, name)) == {ips[o] for o in ("node1", "node2") if o != name}
    assert ping(lab, all_pods[0], all_pods[1].ip)

    # A SIGKILLed agent leaves its BIRD running, and the next agent adopts it: no new
    # BIRD, no session restarted (tests/integration/test_agent_resilience.py measures more).
    node2_bird = bird_pid(lab, "node2")
    wait_for(lambda: len(sessions(lab, "node2")) == 1, what="node2's BIRD to drop its protocol for node3")
    since = {s["peer"]: s["since"] for s in sessions(lab, "node2")}
    os.kill(lab.agent_pid("node2"), signal.SIGKILL)
    wait_for(lambda: lab.agent_pid("node2") is None, what="node2's agent to die")
    assert bird_pid(lab, "node2") == node2_bird
    lab.start_agent("node2")
    wait_for(lambda: "adopted" in (lab.state_dir / "logs" / "calico-node-node2.log").read_text(),
             what="node2's new agent to adopt BIRD")
    assert bird_pid(lab, "node2") == node2_bird
    assert {s["peer"]: s["since"] for s in sessions(lab, "node2")} == since


def test_route_reflectors_6_nodes(lab_state_root, lab_name, capsys):
    root = str(lab_state_root)
    assert lab_cli.main(["up", "--name", lab_name, "--state-dir", root, "--route-reflectors", "2"]) == 1
    assert "--route-reflectors needs --routing bird" in capsys.readouterr().err
    assert lab_cli.main(["up", "--name", lab_name, "--state-dir", root, "--nodes", "6", "--routing", "bird",
                         "--route-reflectors", "2"]) == 0
    assert "route reflectors: node1, node2 (cluster ID 244.0.0.1); node-to-node mesh off" in capsys.readouterr().out
    lab = Lab.load(lab_name, root)
    reflectors = {"198.51.100.11", "198.51.100.12"}
    clients = [n.name for n in lab.nodes[2:]]
    for name in clients:
        # Two sessions, to the reflectors, and no mesh left (5 sessions before).
        wait_for(lambda: len(sessions(lab, name)) == 2 and set(established(lab, name)) == reflectors,
                 what=f"{name} peering with the reflectors only")
        assert set(established(lab, name).values()) == {"node specific"}
    for name in ("node1", "node2"):
        wait_for(lambda: len(established(lab, name)) == 5, what=f"reflector {name} peering with every node")

    all_pods = [pods.add_pod(lab, n.name, f"default/p-{n.name}") for n in lab.nodes]
    blocks = {}
    for n in lab.nodes:
        blocks[n.name] = wait_for(lambda: next((d for d, v in bird_routes(lab, n.name).items() if v == "blackhole"), None),
                                  what=f"{n.name}'s block")
    for n in lab.nodes:
        # Reflected routes keep the originating node as next hop.
        want = {blocks[o.name]: (o.ip if o is not n else "blackhole") for o in lab.nodes}
        wait_for(lambda: bird_routes(lab, n.name) == want, what=f"{n.name}'s routes")
    assert_all_reach(lab, all_pods)
    assert lab_cli.main(["status", "--name", lab_name, "--state-dir", root]) == 0
    out = capsys.readouterr().out
    assert "\nbgp:\n  node1    5 of 5 sessions Established\n" in out
    assert "  node3    2 of 2 sessions Established\n           198.51.100.11   node specific     up    Established\n" in out
    assert f"           route {blocks['node3']:<18} blackhole\n" in out


def test_gobgp_tor_learns_blocks(make_lab):
    lab = make_lab(nodes=2, routing="bird")
    tor_ip = "198.51.100.250"
    tor = f"{lab.name}-tor"
    lab.create_netns(tor)
    lab_netns.add_veth(lab.underlay_netns, "v-tor", tor, "eth0")
    lab_netns.set_master(lab.underlay_netns, "v-tor", "br0")
    lab_netns.link_up(lab.underlay_netns, "v-tor")
    lab_netns.link_up(tor, "lo")
    lab_netns.add_addr(tor, "eth0", f"{tor_ip}/24")
    lab_netns.link_up(tor, "eth0")
    conf = lab.state_dir / "gobgpd.toml"
    conf.write_text(f'[global.config]\n  as = 65001\n  router-id = "{tor_ip}"\n' + "".join(
        f'[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "{n.ip}"\n    peer-as = 64512\n'
        '    auth-password = "tor-pass"\n' for n in lab.nodes))
    lab.spawn(tor, ["gobgpd", "-f", str(conf), "--api-hosts", "127.0.0.1:50051", "-p"],
              lab.state_dir / "logs" / "gobgpd.log", name="gobgpd")

    # The session's TCP MD5 password comes from a Secret: files in each node's secrets_dir.
    for n in lab.nodes:
        secrets = Path(n.config_path).parent / "bird" / "secrets"
        (secrets / "tor").mkdir(parents=True)
        (secrets / "tor" / "password").write_text("tor-pass")
    (peer,) = load_resources(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n"
        f"spec: {{peerIP: {tor_ip}, asNumber: 65001, password: {{secretKeyRef: {{name: tor, key: password}}}}}}\n")
    with_datastore(lab, lab.nodes[0], lambda ds: ds.create(peer))
    for n in lab.nodes:
        pods.add_pod(lab, n.name, f"default/p-{n.name}")
        wait_for(lambda: established(lab, n.name).get(tor_ip) == "global", what=f"{n.name}'s session with the ToR")

    def tor_rib() -> dict[str, set[str]]:
        out = subprocess.run(lab_netns.exec_argv(tor, ["gobgp", "-u", "127.0.0.1", "global", "rib"]),
                             capture_output=True, text=True).stdout
        rib: dict[str, set[str]] = {}
        for line in out.splitlines()[1:]:
            cols = line.lstrip("*> ").split()
            rib.setdefault(cols[0], set()).add(cols[1])
        return rib

    blocks = {n.ip: wait_for(lambda: next((d for d, v in bird_routes(lab, n.name).items() if v == "blackhole"), None))
              for n in lab.nodes}
    # eBGP: each block from its own node (the other node passes it on too, as Calico nodes do).
    wait_for(lambda: all(ip in tor_rib().get(block, set()) for ip, block in blocks.items()),
             what=f"the ToR's RIB to hold {blocks}")

    # What the ToR originates lands in every node's kernel from BIRD.
    subprocess.run(lab_netns.exec_argv(tor, ["gobgp", "-u", "127.0.0.1", "global", "rib", "add", "-a", "ipv4",
                                             "192.0.2.0/24"]), check=True, capture_output=True)
    for n in lab.nodes:
        wait_for(lambda: bird_routes(lab, n.name).get("192.0.2.0/24") == tor_ip, what=f"{n.name} learning 192.0.2.0/24")
