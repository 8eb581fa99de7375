"""The iptables policy plugin against a real kernel, in network namespaces made here.

A "node" namespace holds the plugin's rules. Five "pod" namespaces hang off it by veth
pairs named ``cali...``, wired as Calico's CNI does: the pod's eth0 has a /32 and a
default route via 169.254.1.1, the node side has proxy ARP (no delay) and a /32 route. An "ext"
namespace plays the network outside the node (198.51.100.0/24, the node's default route;
it has no route back to the pods).

Traffic is real: TCP connects, UDP echoes and pings from the pod namespaces, each
compared with what the policy model's ``verdict`` predicts. The plugin only ever runs in
a thread that has joined the node namespace (checked: never the root namespace), and
commands are scoped with ``ip netns exec``. The root namespace's iptables and ipsets are
compared before and after (read-only).
"""

from __future__ import annotations

import os
import re
import select
import shlex
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pycalico.core.calc import DesiredState
from pycalico.core.lab import netns
from pycalico.core.policy import compile, verdict
from pycalico.plugins.policy.iptables import Options, plugin
from tests.policy_world import yaml_state

pytestmark = pytest.mark.lab



def _root_netns() -> int:
    """The root namespace: pid 1's, or (where pid 1 is out of reach) this process's at import."""
    try:
        return os.stat("/proc/1/ns/net").st_ino
    except PermissionError:
        return os.stat("/proc/self/ns/net").st_ino


ROOT_NETNS = _root_netns()
PREFIX = f"ipt{os.getpid() % 100000}"
NODE, EXT = f"{PREFIX}-node", f"{PREFIX}-ext"
NODE_IP, EXT_IP = "198.51.100.1", "198.51.100.2"
TIMEOUT = 1.0
OPTIONS = Options()
EAGER = Options(refresh_seconds=0)  # read everything back on every pass

# name: (k8s namespace, labels, address, host interface, named ports)
PODS = {
    "web": ("prod", {"app": "web"}, "10.65.0.2", "caliweb", [("http", 8080)]),
    "db": ("prod", {"app": "db"}, "10.65.0.3", "calidb", [("pg", 5432)]),
    "client": ("prod", {"app": "client"}, "10.65.0.4", "caliclient", []),
    "devclient": ("dev", {"app": "client"}, "10.65.0.5", "calidevclient", []),
    "intruder": ("dev", {"app": "intruder"}, "10.65.0.6", "caliintruder", []),
}
TCP_PORTS, UDP_PORT = (8080, 5432), 5353


def pod_ns(name: str) -> str:
    return f"{PREFIX}-{name}"


# --- running things in namespaces -----------------------------------------------------------


def _guarded(fn):
    def run():
        tid = threading.get_native_id()
        assert os.stat(f"/proc/self/task/{tid}/ns/net").st_ino != ROOT_NETNS, "refusing to run in the root namespace"
        return fn()

    return run


def in_ns(ns: str, fn, timeout: float = 120):
    assert ns.startswith(PREFIX)
    return netns.run_in_netns(ns, _guarded(fn), timeout)


def sh(ns: str, *argv: str, check: bool = True) -> str:
    assert ns.startswith(PREFIX)
    res = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=60)
    if check and res.returncode:
        raise AssertionError(f"{' '.join(argv)} in {ns}: {res.stderr}")
    return res.stdout


def ipn(ns: str, *args: str) -> None:
    assert ns.startswith(PREFIX)
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True)


def reconcile(state, options=OPTIONS):
    return in_ns(NODE, lambda: plugin.reconcile(state, options))


def dataplane(options=OPTIONS):
    return in_ns(NODE, lambda: plugin.dataplane(options))


# --- servers and probes --------------------------------------------------------------------


class Servers:
    """TCP listeners and UDP echo sockets in namespaces, served by one thread."""

    def __init__(self):
        self.sockets: dict[socket.socket, tuple[str, str]] = {}
        self.udp_seen: list[tuple[str, str]] = []  # (namespace, source address)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def listen(self, ns: str, tcp=(), udp=()):
        def make():
            out = []
            for port in tcp:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", port))
                s.listen(64)
                s.setblocking(False)
                out.append((s, "tcp"))
            for port in udp:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("0.0.0.0", port))
                s.setblocking(False)
                out.append((s, "udp"))
            return out

        for s, kind in in_ns(ns, make):
            self.sockets[s] = (ns, kind)

    def start(self):
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            ready, _, _ = select.select(list(self.sockets), [], [], 0.1)
            for s in ready:
                ns, kind = self.sockets[s]
                try:
                    if kind == "tcp":
                        conn, _ = s.accept()
                        conn.close()
                    else:
                        data, peer = s.recvfrom(2048)
                        self.udp_seen.append((ns, peer[0]))
                        s.sendto(data, peer)
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        self._thread.join(5)
        for s in self.sockets:
            s.close()


def probe(src_ns: str, dst: str, proto: str, port: int | None = None, source: str | None = None) -> bool:
    """Can ``src_ns`` reach ``dst``? TCP connect, UDP echo, or one ping."""
    if proto == "icmp":
        res = subprocess.run(["ip", "netns", "exec", src_ns, "ping", "-n", "-c1", "-W1", dst],
                             capture_output=True, timeout=10)
        return res.returncode == 0

    def go():
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as s:
            s.settimeout(TIMEOUT)
            if source:
                s.bind((source, 0))
            try:
                if proto == "tcp":
                    s.connect((dst, port))
                    return True
                s.sendto(b"hello", (dst, port))
                return s.recvfrom(100)[0] == b"hello"
            except OSError:
                return False

    return in_ns(src_ns, go)


# --- state ---------------------------------------------------------------------------------

def profile(ns: str) -> str:
    return f"""apiVersion: projectcalico.org/v3
kind: Profile
metadata: {{name: kns.{ns}}}
spec:
  labelsToApply: {{pcns.projectcalico.org/name: {ns}}}
  ingress: [{{action: Allow}}]
  egress: [{{action: Allow}}]
"""


POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.65.0.0/16, natOutgoing: NAT}
"""


def wep(name: str) -> str:
    ns, labels, ip, iface, ports = PODS[name]
    port_list = ", ".join(f"{{name: {n}, port: {p}, protocol: TCP}}" for n, p in ports)
    label_map = ", ".join(f"{k}: {v}" for k, v in labels.items())
    return f"""apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: node1-k8s-{name}-eth0, namespace: {ns}, labels: {{{label_map}}}}}
spec: {{node: node1, orchestrator: k8s, pod: {name}, endpoint: eth0, interfaceName: {iface},
       ipNetworks: [{ip}/32], profiles: [kns.{ns}], ports: [{port_list}]}}
"""


def make_state(extra: str = "", nat: bool = True) -> DesiredState:
    docs = [profile("prod"), profile("dev"), POOL.replace("NAT", "true" if nat else "false"), *map(wep, PODS)]
    if extra.strip():
        docs.append(extra)
    return yaml_state("---\n".join(docs))


def check(state: DesiredState, cases: list[tuple[str, str, str, int | None]], expect: dict | None = None) -> dict:
    """Probe every (src pod, dst pod, proto, port) and compare with the model's verdict."""
    model = compile(state, scope="cluster")

    def predicted(case):
        src, dst, proto, port = case
        s, d = model.find(PODS[src][0], src), model.find(PODS[dst][0], dst)
        if proto == "icmp":
            return verdict(model, s, d, "ICMP", icmp_type=8, icmp_code=0)
        return verdict(model, s, d, proto.upper(), port)

    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        seen = list(pool.map(lambda case: probe(pod_ns(case[0]), PODS[case[1]][2], case[2], case[3]), cases))
    results, wrong = {}, []
    for case, got in zip(cases, seen):
        v = predicted(case)
        results[case] = got
        if got != v.allowed:
            wrong.append(f"{case}: kernel {'allowed' if got else 'blocked'}, model says {v}")
    assert not wrong, "\n".join(wrong)
    for case, want in (expect or {}).items():
        assert results[case] == want, f"{case}: expected {'allowed' if want else 'blocked'}"
    return results


def save(ns: str, tool: str = "iptables-save") -> str:
    """iptables-save without counters and timestamps."""
    text = sh(ns, tool) if ns != "root" else subprocess.run([tool], capture_output=True, text=True).stdout
    text = re.sub(r"\[\d+:\d+\]", "[0:0]", text)
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def root_snapshot() -> dict[str, str]:
    """Read-only views of the root namespace."""
    out = {}
    for tool in ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save"):
        out[tool] = save("root", tool)
    out["ipset"] = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True).stdout
    return out


# --- the topology ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root_before():
    ok, why = netns.available()
    if not ok:
        pytest.skip(f"needs root and ip netns: {why}")
    return root_snapshot()


@pytest.fixture(scope="module")
def topo(root_before):
    names = [NODE, EXT, *(pod_ns(p) for p in PODS)]
    servers = Servers()
    try:
        for name in names:
            netns.add(name)
            ipn(name, "link", "set", "lo", "up")
        for key, value in (("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.rp_filter", 0),
                           ("net.ipv4.conf.default.rp_filter", 0)):
            netns.sysctl(NODE, key, value)
        netns.add_veth(NODE, "eth0", EXT, "eth0")
        netns.add_addr(NODE, "eth0", f"{NODE_IP}/24")
        netns.add_addr(EXT, "eth0", f"{EXT_IP}/24")
        netns.link_up(NODE, "eth0")
        netns.link_up(EXT, "eth0")
        ipn(NODE, "route", "add", "default", "via", EXT_IP)
        for name, (_, _, ip, iface, _) in PODS.items():
            pns = pod_ns(name)
            netns.add_veth(NODE, iface, pns, "eth0")
            netns.add_addr(pns, "eth0", f"{ip}/32")
            netns.link_up(pns, "eth0")
            ipn(pns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
            ipn(pns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
            netns.link_up(NODE, iface)
            netns.sysctl(NODE, f"net.ipv4.conf.{iface}.proxy_arp", 1)
            netns.sysctl(NODE, f"net.ipv4.neigh.{iface}.proxy_delay", 0)  # as Calico's CNI sets it
            ipn(NODE, "route", "add", f"{ip}/32", "dev", iface, "scope", "link")
            servers.listen(pns, tcp=TCP_PORTS, udp=(UDP_PORT,))
        servers.listen(EXT, tcp=(80,))
        servers.listen(NODE, tcp=(22, 8080))
        servers.start()
        yield servers
    finally:
        servers.close()
        for name in names:
            try:
                netns.delete(name)
            except Exception:  # keep deleting the others
                pass


# --- tests (in order: the first starts from an empty node) -------------------------------------


def test_anti_spoofing_drops_foreign_source_addresses(topo):
    spoofed = "10.65.0.99"
    ipn(pod_ns("client"), "addr", "add", f"{spoofed}/32", "dev", "eth0")
    web = PODS["web"][2]

    def sent_from(source):
        before = len(topo.udp_seen)
        probe(pod_ns("client"), web, "udp", UDP_PORT, source=source)
        time.sleep(0.2)
        return (pod_ns("web"), source) in topo.udp_seen[before:]

    try:
        assert sent_from(spoofed), "without the plugin the spoofed packet should arrive"
        changes = reconcile(make_state())
        assert "chain cali-PREROUTING created (raw)" in changes
        assert not sent_from(spoofed), "the spoofed packet got through"
        assert sent_from(PODS["client"][2]), "the pod's own address must still work"
        raw = sh(NODE, "iptables", "-t", "raw", "-L", "cali-PREROUTING", "-v", "-x", "-n")
        rpf = [line for line in raw.splitlines() if "rpfilter" in line]
        assert rpf and int(rpf[0].split()[0]) >= 1, raw
    finally:
        ipn(pod_ns("client"), "addr", "del", f"{spoofed}/32", "dev", "eth0")


def test_default_allow_through_profiles(topo):
    state = make_state()
    reconcile(state)
    check(state, [("client", "web", "tcp", 8080), ("devclient", "db", "tcp", 5432),
                  ("intruder", "web", "udp", UDP_PORT), ("web", "client", "icmp", None)],
          expect={("client", "web", "tcp", 8080): True, ("web", "client", "icmp", None): True})


WEB_FROM_CLIENTS = """apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-from-clients, namespace: prod}
spec:
  selector: app == 'web'
  ingress:
  - {action: Allow, protocol: TCP, source: {selector: app == 'client'}, destination: {ports: [http]}}
"""


def test_selected_endpoint_is_default_deny_and_allows_from_selector_and_port(topo):
    state = make_state(WEB_FROM_CLIENTS)
    reconcile(state)
    check(state, [
        ("client", "web", "tcp", 8080),  # allowed: selector + named port
        ("client", "web", "tcp", 5432),  # other port
        ("db", "web", "tcp", 8080),  # not a client
        ("devclient", "web", "tcp", 8080),  # a client, but in another namespace
        ("client", "web", "icmp", None),
        ("client", "db", "tcp", 5432),  # db is not selected: its profile allows
    ], expect={("client", "web", "tcp", 8080): True, ("client", "web", "tcp", 5432): False,
               ("devclient", "web", "tcp", 8080): False, ("client", "db", "tcp", 5432): True})


def test_egress_deny(topo):
    state = make_state("""apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: db-no-egress}
spec: {selector: app == 'db', types: [Egress], egress: [{action: Deny}]}
""")
    reconcile(state)
    check(state, [("db", "client", "tcp", 8080), ("db", "web", "udp", UDP_PORT), ("db", "client", "icmp", None),
                  ("client", "db", "tcp", 5432)],
          expect={("db", "client", "tcp", 8080): False, ("client", "db", "tcp", 5432): True})


TIERS = """apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: gate}
spec:
  tier: security
  selector: app == 'web'
  ingress:
  - {action: Pass, source: {namespaceSelector: projectcalico.org/name == 'prod'}}
  - {action: Deny}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: db-pass}
spec: {tier: security, selector: app == 'db', ingress: [{action: Pass}]}
---
""" + WEB_FROM_CLIENTS


def test_pass_goes_on_to_the_next_tier_and_to_profiles(topo):
    state = make_state(TIERS)
    reconcile(state)
    check(state, [
        ("client", "web", "tcp", 8080),  # security passes prod, default tier allows clients
        ("devclient", "web", "tcp", 8080),  # security denies dev
        ("db", "web", "tcp", 8080),  # passed, but no default-tier policy allows db: end of tier
        ("intruder", "db", "tcp", 5432),  # db: passed, no default-tier policy: the profile allows
    ], expect={("client", "web", "tcp", 8080): True, ("devclient", "web", "tcp", 8080): False,
               ("db", "web", "tcp", 8080): False, ("intruder", "db", "tcp", 5432): True})


def test_ip_block(topo):
    state = make_state("""apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-ipblock, namespace: prod}
spec:
  selector: app == 'web'
  ingress: [{action: Allow, source: {nets: [10.65.0.0/29], notNets: [10.65.0.3/32]}}]
""")
    reconcile(state)
    check(state, [("client", "web", "tcp", 8080), ("db", "web", "tcp", 8080), ("devclient", "web", "udp", UDP_PORT),
                  ("intruder", "web", "tcp", 5432)],
          expect={("client", "web", "tcp", 8080): True, ("db", "web", "tcp", 8080): False})


def _ruleset(ns=NODE):
    return {tool: save(ns, tool) for tool in ("iptables-save", "ip6tables-save")} | {"ipset": sh(ns, "ipset", "save")}


def test_second_pass_changes_nothing(topo):
    state = make_state(TIERS)
    reconcile(state)
    before = _ruleset()
    assert reconcile(state) == []
    assert reconcile(make_state(TIERS), EAGER) == []  # a full read-back agrees too
    assert _ruleset() == before


def test_drift_is_repaired(topo):
    state = make_state(WEB_FROM_CLIENTS)
    reconcile(state)
    dp = dataplane()
    pol = [line.split()[0][1:] for line in sh(NODE, "iptables-save", "-t", "filter").splitlines()
           if line.startswith(":cali-pi-")][0]
    # Someone removes the jump to the policy, deletes the policy chain and our FORWARD hook.
    rules = sh(NODE, "iptables", "-S", "cali-tw-caliweb").splitlines()
    jump = [r for r in rules if f"-j {pol}" in r][0]
    sh(NODE, "iptables", *shlex.split(jump.replace("-A", "-D", 1)))
    sh(NODE, "iptables", "-F", pol)
    sh(NODE, "iptables", "-X", pol)
    sh(NODE, "iptables", "-D", "FORWARD", "1")
    reads = dp.reads
    changes = reconcile(state)
    assert dp.reads > reads  # the nftables generation moved: read back without waiting
    assert f"chain {pol} created" in changes
    assert "chain cali-tw-caliweb updated" in changes
    assert "hooks in FORWARD repaired" in changes
    assert reconcile(state) == []
    check(state, [("client", "web", "tcp", 8080), ("db", "web", "tcp", 8080)])

    # A member taken out of an IP set by hand is put back at the next full read.
    ipset = [line.split()[1] for line in sh(NODE, "ipset", "save").splitlines()
             if line.startswith("create cali40s:")][0]
    member = [line.split()[2] for line in sh(NODE, "ipset", "save", ipset).splitlines() if line.startswith("add ")][0]
    sh(NODE, "ipset", "del", ipset, member)
    assert reconcile(state, EAGER) == [f"ipset {ipset} 1 member added"]
    assert member in sh(NODE, "ipset", "save", ipset)


def test_one_policy_change_rewrites_only_its_chain(topo):
    first = make_state(WEB_FROM_CLIENTS)
    reconcile(first)
    changed = make_state(WEB_FROM_CLIENTS.replace("ports: [http]", "ports: [http, 5432]"))
    dp = dataplane()
    changes = reconcile(changed)
    chain = "cali-pi-" + "_" + changes[0].split("cali-pi-_")[1].split()[0] if "cali-pi-_" in changes[0] else None
    assert chain and changes == [f"chain {chain} updated", f"chain {chain} updated (ip6 filter)"], changes
    assert dp.last_ipset_restore == ""
    lines = dp.last_restore[4].splitlines()
    assert lines[0] == "*filter" and lines[-1] == "COMMIT"
    assert all(line.split()[1] == chain for line in lines[1:-1]), lines
    check(changed, [("client", "web", "tcp", 5432), ("client", "web", "tcp", 8080), ("db", "web", "tcp", 5432)],
          expect={("client", "web", "tcp", 5432): True})
    # A new selector: its IP sets are created before the chains that use them, and the
    # old selector's sets destroyed after.
    newer = make_state(WEB_FROM_CLIENTS.replace("app == 'client'", "\"app in {'client', 'db'}\""))
    changes = reconcile(newer)
    assert [c.split()[0] for c in changes] == ["ipset", "ipset", "chain", "chain", "ipset", "ipset"], changes
    assert changes[0].startswith("ipset cali40s:") and changes[0].endswith("created with 2 members")
    assert changes[-1].startswith("ipset cali60s:") and changes[-1].endswith("deleted")
    check(newer, [("db", "web", "tcp", 8080), ("devclient", "web", "tcp", 8080)],
          expect={("db", "web", "tcp", 8080): True})


def test_rules_of_others_are_left_alone(topo):
    state = make_state(WEB_FROM_CLIENTS)
    reconcile(state)
    sh(NODE, "iptables", "-I", "FORWARD", "1", "-s", "192.0.2.1", "-j", "ACCEPT")
    sh(NODE, "iptables", "-A", "FORWARD", "-s", "192.0.2.2", "-j", "ACCEPT")
    sh(NODE, "iptables", "-N", "MINE")
    sh(NODE, "iptables", "-A", "MINE", "-s", "192.0.2.3", "-j", "DROP")
    sh(NODE, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.4", "-j", "RETURN")
    try:
        changes = reconcile(state)
        assert changes == ["hooks in FORWARD repaired"]  # ours back at the top
        forward = sh(NODE, "iptables", "-S", "FORWARD").splitlines()
        assert "cali-FORWARD" in forward[1]
        assert "-A FORWARD -s 192.0.2.1/32 -j ACCEPT" in forward
        assert "-A FORWARD -s 192.0.2.2/32 -j ACCEPT" in forward
        assert sh(NODE, "iptables", "-S", "MINE").splitlines()[1] == "-A MINE -s 192.0.2.3/32 -j DROP"
        assert "-s 192.0.2.4/32 -j RETURN" in sh(NODE, "iptables", "-t", "nat", "-S", "POSTROUTING")
        assert reconcile(state) == []
    finally:
        sh(NODE, "iptables", "-D", "FORWARD", "-s", "192.0.2.1", "-j", "ACCEPT")
        sh(NODE, "iptables", "-D", "FORWARD", "-s", "192.0.2.2", "-j", "ACCEPT")
        sh(NODE, "iptables", "-F", "MINE")
        sh(NODE, "iptables", "-X", "MINE")
        sh(NODE, "iptables", "-t", "nat", "-D", "POSTROUTING", "-s", "192.0.2.4", "-j", "RETURN")


def test_nat_outgoing(topo):
    reconcile(make_state(nat=False))
    assert not probe(pod_ns("client"), EXT_IP, "tcp", 80)  # ext has no route back to the pods
    changes = reconcile(make_state(nat=True))
    assert "chain cali-nat-outgoing updated (nat)" in changes
    assert probe(pod_ns("client"), EXT_IP, "tcp", 80)


def test_host_endpoint_failsafe_ports_cannot_be_cut(topo):
    hep = """apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {host: "true"}}
spec: {node: node1, interfaceName: eth0, expectedIPs: [198.51.100.1]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: host-deny-all}
spec: {selector: host == 'true', types: [Ingress]}
"""
    state = make_state(hep)
    reconcile(state)
    try:
        model = compile(state, scope="cluster")
        hep_ep = model.find("", "node1-eth0")
        for port in (22, 8080):
            v = verdict(model, EXT_IP, hep_ep, "TCP", port)
            assert probe(EXT, NODE_IP, "tcp", port) == v.allowed, v
        assert probe(EXT, NODE_IP, "tcp", 22)  # failsafe tcp:22
        assert not probe(EXT, NODE_IP, "tcp", 8080)
        # Forwarded traffic does not go through host endpoint policy: natOutgoing still works.
        assert probe(pod_ns("client"), EXT_IP, "tcp", 80)
    finally:
        reconcile(make_state())


def test_endpoint_to_host_action(topo):
    state = make_state()
    assert probe(pod_ns("client"), NODE_IP, "tcp", 8080)  # ACCEPT (calico.yaml's choice) by default
    reconcile(state, Options(endpoint_to_host_action="DROP"))
    try:
        assert not probe(pod_ns("client"), NODE_IP, "tcp", 8080)
        assert probe(pod_ns("client"), PODS["web"][2], "tcp", 8080)  # forwarded traffic is not affected
    finally:
        reconcile(state)


def test_ipsets_live_in_the_namespace(topo):
    ours = [line.split()[1] for line in sh(NODE, "ipset", "save").splitlines() if line.startswith("create cali")]
    assert ours
    root = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True).stdout.split()
    assert not set(ours) & set(root)


def test_legacy_backend(topo):
    nft_rules = in_ns(NODE, lambda: plugin.cleanup(OPTIONS))
    assert "hooks in FORWARD removed" in nft_rules and "chain cali-FORWARD deleted" in nft_rules
    assert "cali" not in sh(NODE, "iptables-nft-save")
    assert "create cali" not in sh(NODE, "ipset", "save")
    legacy = Options(backend="legacy")
    state = make_state(WEB_FROM_CLIENTS)
    try:
        assert reconcile(state, legacy)
        dp = dataplane(legacy)
        reads = dp.reads
        assert reconcile(state, legacy) == []
        assert dp.reads == reads  # the tables' sizes did not move: nothing read back
        assert "cali-FORWARD" in sh(NODE, "iptables-legacy-save")
        sh(NODE, "iptables-legacy", "-D", "FORWARD", "1")  # drift: noticed by the tables' size
        assert reconcile(state, legacy) == ["hooks in FORWARD repaired"]
        check(state, [("client", "web", "tcp", 8080), ("db", "web", "tcp", 8080)],
              expect={("client", "web", "tcp", 8080): True, ("db", "web", "tcp", 8080): False})
    finally:
        in_ns(NODE, lambda: plugin.cleanup(legacy))
    assert "cali" not in sh(NODE, "iptables-legacy-save")
    reconcile(state)  # back to nft for the tests that follow


def test_a_new_namespace_with_a_reused_name_is_not_mistaken_for_the_old_one(root_before):
    # The plugin remembers each namespace's rules and sets; a namespace deleted and made
    # again (inodes get reused) must start from what its kernel really has.
    name = f"{PREFIX}-again"
    state = make_state(WEB_FROM_CLIENTS)
    for _ in range(2):
        netns.add(name)
        try:
            changes = in_ns(name, lambda: plugin.reconcile(state, OPTIONS))
            assert "chain cali-FORWARD created" in changes
            assert any(c.startswith("ipset cali40s:") and "created" in c for c in changes)
        finally:
            netns.delete(name)


def test_zz_root_namespace_untouched(root_before):
    assert root_snapshot() == root_before
