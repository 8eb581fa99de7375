"""The nftables policy plugin against a real kernel, in network namespaces made here.

A "node" namespace holds the table ``inet calico``. Five "pod" namespaces hang off it by
veth pairs named ``cali<pod>``, wired as Calico's CNI wires pods: the pod's eth0 has a /32
and a default route via 169.254.1.1; the node side has proxy ARP and a /32 route. An "ext"
namespace is the network outside the node (198.51.100.0/24, the node's default route),
with no route back to the pods, so that only masqueraded traffic gets answers.

Every pod serves TCP 80 and 8080 and a UDP echo on 5353 (sockets made inside the pod's
namespace, served by threads here). Probes are real: ``ping`` and ``nc`` run in the pod
namespaces with ``ip netns exec``, in parallel, and each outcome is compared with what
``pycalico.core.policy.verdict`` predicts for the same model.

Safety: the plugin only ever runs in a thread that has joined the node namespace, and a
guard checks that the thread is not in the root namespace first; every other command is
scoped with ``ip netns exec`` / ``ip -n``. Namespaces are deleted even when a test fails.
The root namespace's ruleset is read (never written) before and after, and compared.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pycalico.core.calc import DesiredState
from pycalico.core.config import Config, Slot
from pycalico.core.lab import netns
from pycalico.core.policy import Peer, compile, verdict
from pycalico.core.resources.codec import load_resource
from pycalico.plugins.policy.nftables import NftablesPolicy, Options, names
from tests.policy_world import doc

pytestmark = pytest.mark.lab

PREFIX = f"pcnft{os.getpid() % 100000}"
NODE, EXT = f"{PREFIX}-node", f"{PREFIX}-ext"
NODE_IP, EXT_IP = "198.51.100.2", "198.51.100.1"
SPOOFED = "10.65.0.99"
TCP_PORTS, UDP_PORT = (80, 8080), 5353

# pod: (k8s namespace, labels, address)
PODS = {
    "web": ("prod", {"app": "web"}, "10.65.0.2"),
    "db": ("prod", {"app": "db"}, "10.65.0.3"),
    "client": ("prod", {"app": "client"}, "10.65.0.4"),
    "devcli": ("dev", {"app": "client"}, "10.65.0.5"),
    "other": ("dev", {"app": "other"}, "10.65.0.6"),
}


def pod_ns(pod: str) -> str:
    return f"{PREFIX}-{pod}"


def iface(pod: str) -> str:
    return f"cali{pod}"


# --- never the root namespace -----------------------------------------------------------


def root_inodes() -> set[int]:
    """The root namespace (PID 1's when readable; the kernel's initial one, whose inode is
    fixed) and this process's own (its main thread never moves)."""
    found = {0xEFFFFFF9, os.stat("/proc/self/ns/net").st_ino}
    try:
        found.add(os.stat("/proc/1/ns/net").st_ino)
    except PermissionError:
        pass  # a sandbox may hide PID 1's namespaces
    return found


ROOTS = root_inodes()


def in_node(fn, ns: str = NODE):
    """Run ``fn`` in a thread that has joined ``ns`` (checked not to be the root namespace)."""

    def guarded():
        tid = threading.get_native_id()
        here = os.stat(f"/proc/self/task/{tid}/ns/net").st_ino
        assert here not in ROOTS, "refusing to act on the root network namespace"
        return fn()

    assert os.stat(f"/run/netns/{ns}").st_ino not in ROOTS
    return netns.run_in_netns(ns, guarded, timeout=120)


def sh(ns: str, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} in {ns}: {res.stderr.strip()}")
    return res


def nft(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(NODE, "nft", *args, check=check)


def blocks(listing: str) -> list[str]:
    """``nft list table`` as its sets, maps and chains, sorted: a repaired chain is listed
    last (objects are listed in the order they were made), which is no difference."""
    body = listing.strip().removeprefix("table inet calico {").removesuffix("}")
    return sorted(block.strip() for block in body.split("\n\n"))


def root_ruleset() -> str:
    """The root namespace's ruleset: read-only (``nft list ruleset``)."""
    res = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True)
    return res.stdout + res.stderr


# --- the topology ----------------------------------------------------------------------


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True)


def _serve(ns: str, addr: str, stop: threading.Event) -> list[socket.socket]:
    """TCP listeners on 80 and 8080 and a UDP echo on 5353, made in ``ns``."""

    def make():
        out = []
        for port in TCP_PORTS:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            s.listen(64)
            out.append(s)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((addr, UDP_PORT))
        out.append(u)
        return out

    socks = in_node(make, ns)

    def tcp(s):
        while not stop.is_set():
            try:
                conn, _ = s.accept()
                conn.close()
            except OSError:
                return

    def udp(s):
        while not stop.is_set():
            try:
                data, peer = s.recvfrom(2048)
                s.sendto(b"pong\n", peer)
            except OSError:
                return

    for s in socks:
        target = udp if s.type == socket.SOCK_DGRAM else tcp
        threading.Thread(target=target, args=(s,), daemon=True).start()
    return socks


@pytest.fixture(scope="module")
def topology():
    ok, why = netns.available()
    if not ok:
        pytest.skip(why)
    before = root_ruleset()
    made: list[str] = []
    stop = threading.Event()
    socks: list[socket.socket] = []
    try:
        for ns in (NODE, EXT, *(pod_ns(p) for p in PODS)):
            netns.add(ns)
            made.append(ns)
            assert os.stat(f"/run/netns/{ns}").st_ino not in ROOTS
            _ip(ns, "link", "set", "lo", "up")
        netns.sysctl(NODE, "net.ipv4.ip_forward", 1)
        netns.add_veth(NODE, "eth0", EXT, "eth0")
        _ip(NODE, "addr", "add", f"{NODE_IP}/24", "dev", "eth0")
        _ip(EXT, "addr", "add", f"{EXT_IP}/24", "dev", "eth0")
        for ns in (NODE, EXT):
            _ip(ns, "link", "set", "eth0", "up")
        _ip(NODE, "route", "add", "default", "via", EXT_IP)
        for pod, (_, _, addr) in PODS.items():
            ns, host = pod_ns(pod), iface(pod)
            netns.add_veth(NODE, host, ns, "eth0")
            netns.sysctl(NODE, f"net.ipv4.conf.{host}.proxy_arp", 1)
            netns.sysctl(NODE, f"net.ipv4.neigh.{host}.proxy_delay", 0)
            _ip(NODE, "link", "set", host, "up")
            _ip(NODE, "route", "add", f"{addr}/32", "dev", host, "scope", "link")
            _ip(ns, "addr", "add", f"{addr}/32", "dev", "eth0")
            _ip(ns, "link", "set", "eth0", "up")
            _ip(ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
            _ip(ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
            socks += _serve(ns, "0.0.0.0", stop)
        # The node itself serves ssh's failsafe port and one that is not failsafe.
        socks += _serve(NODE, NODE_IP, stop)
        socks += _listen(NODE, NODE_IP, 22, stop)
        # A table of somebody else's, which the plugin must never touch.
        nft("add", "table", "inet", "filter")
        nft("add", "chain", "inet", "filter", "input", "{ type filter hook input priority 10; policy accept; }")
        nft("add", "rule", "inet", "filter", "input", "tcp", "dport", "9", "counter", "accept")
        yield NftablesPolicy()
    finally:
        stop.set()
        for s in socks:
            s.close()
        for ns in reversed(made):
            netns.delete(ns)
    assert root_ruleset() == before, "the root namespace's ruleset changed"


def _listen(ns: str, addr: str, port: int, stop: threading.Event) -> list[socket.socket]:
    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(16)
        return s

    s = in_node(make, ns)

    def serve():
        while not stop.is_set():
            try:
                s.accept()[0].close()
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    return [s]


# --- the desired state -----------------------------------------------------------------


def base_docs(nat: bool = True) -> list[dict]:
    docs = [doc("IPPool", "pods", {"cidr": "10.65.0.0/16", "natOutgoing": nat})]
    for ns in ("prod", "dev"):
        allow = [{"action": "Allow"}]
        labels = {"pcns.projectcalico.org/name": ns, "pcns.env": ns}
        docs.append(doc("Profile", f"kns.{ns}", {"labelsToApply": labels, "ingress": allow, "egress": allow}))
    for pod, (ns, labels, addr) in PODS.items():
        spec = {
            "node": "node1",
            "orchestrator": "k8s",
            "pod": pod,
            "endpoint": "eth0",
            "interfaceName": iface(pod),
            "ipNetworks": [f"{addr}/32"],
            "profiles": [f"kns.{ns}"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        }
        docs.append(doc("WorkloadEndpoint", f"node1-k8s-{pod}-eth0", spec, namespace=ns, labels=labels))
    return docs


def state(*extra: dict, nat: bool = True) -> DesiredState:
    kinds: dict[str, list] = {}
    for d in [*base_docs(nat), *extra]:
        r = load_resource(d)
        kinds.setdefault(type(r).KIND, []).append(r)
    return DesiredState(node_name="node1", revision=1, resources={k: tuple(v) for k, v in kinds.items()})


def reconcile(plugin: NftablesPolicy, st: DesiredState, options: Options | None = None) -> list[str]:
    """The hook itself, as the agent calls it, in the node namespace."""
    config = Config(policy=Slot(type="nftables", options=options or Options()))
    return in_node(lambda: plugin.pycalico_reconcile_policy(state=st, config=config))


def dataplane(plugin: NftablesPolicy):
    return in_node(lambda: plugin.dataplane())


# --- probes ----------------------------------------------------------------------------


def _probe(src: str, proto: str, dst_ip: str, port: int | None, source_ip: str | None) -> bool:
    ns = EXT if src == "ext" else pod_ns(src)
    if proto == "icmp":
        argv = ["ping", "-n", "-q", "-c", "1", "-W", "1"] + (["-I", source_ip] if source_ip else []) + [dst_ip]
        return sh(ns, *argv, check=False).returncode == 0
    if proto == "tcp":
        argv = ["nc", "-z", "-n", "-w", "1"] + (["-s", source_ip] if source_ip else []) + [dst_ip, str(port)]
        return sh(ns, *argv, check=False).returncode == 0
    res = subprocess.run(
        ["ip", "netns", "exec", ns, "nc", "-u", "-n", "-w", "1", dst_ip, str(port)],
        input="ping\n", capture_output=True, text=True, timeout=30,
    )
    return "pong" in res.stdout


def _address(target: str) -> str:
    return {"node": NODE_IP, "ext": EXT_IP}.get(target) or PODS[target][2]


def _peer(model, name: str):
    if name == "ext":
        return Peer.address(EXT_IP)
    if name == "node":
        return model.find("", "node1-eth0")
    ns = PODS[name][0]
    return model.find(ns, name)


def check(st: DesiredState, cases: list[tuple], expected: list[bool]) -> None:
    """Probe every (src, proto, dst, port) case in parallel; the outcomes must be what
    ``verdict`` predicts, and what the test expects (so that neither is vacuous)."""
    model = compile(st, scope="cluster")
    predicted = []
    for src, proto, dst, port in cases:
        if proto == "icmp":
            v = verdict(model, _peer(model, src), _peer(model, dst), "ICMP", icmp_type=8, icmp_code=0)
        else:
            v = verdict(model, _peer(model, src), _peer(model, dst), proto.upper(), port)
        predicted.append(v.allowed)
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        seen = list(pool.map(lambda c: _probe(c[0], c[1], _address(c[2]), c[3], None), cases))
    table = "\n".join(f"{c}: predicted {p}, seen {s}, expected {e}" for c, p, s, e in zip(cases, predicted, seen, expected, strict=True))
    assert predicted == expected, table
    assert seen == predicted, table


# --- tests -----------------------------------------------------------------------------


def test_first_pass_creates_the_table_and_a_second_changes_nothing(topology):
    st = state()
    lines = reconcile(topology, st)
    assert len(lines) == 1 and lines[0].startswith("nft table inet calico created:")
    listing = nft("list", "table", "inet", "calico").stdout
    assert reconcile(topology, st) == []
    dp = dataplane(topology)
    dp.forget()  # read the kernel back: still nothing to do
    assert reconcile(topology, st) == []
    assert nft("list", "table", "inet", "calico").stdout == listing
    assert "chain filter-FORWARD" in listing and "type filter hook forward priority filter; policy accept;" in listing
    [(component, text)] = in_node(lambda: topology.pycalico_node_status(state=st))
    assert component == "nftables" and re.fullmatch(r"table inet calico: \d+ chains, \d+ sets, 9 maps", text)


def test_default_allow_through_the_namespace_profile(topology):
    st = state()
    reconcile(topology, st)
    cases = [("client", "tcp", "web", 80), ("devcli", "tcp", "db", 8080), ("web", "icmp", "other", None), ("other", "udp", "client", UDP_PORT)]
    check(st, cases, [True, True, True, True])


def test_a_selecting_policy_means_default_deny_then_allow_from_a_selector_and_port(topology):
    web_in = doc(
        "NetworkPolicy",
        "web-in",
        {
            "selector": "app == 'web'",
            "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "app == 'client'"}, "destination": {"ports": ["http"]}}],
        },
        namespace="prod",
    )
    st = state(web_in)
    lines = reconcile(topology, st)
    assert any("cali-pi-default/prod/web-in added" in line for line in lines)
    cases = [
        ("client", "tcp", "web", 80),  # allowed: selector and named port
        ("client", "tcp", "web", 8080),  # not the port
        ("db", "tcp", "web", 80),  # not the selector
        ("devcli", "tcp", "web", 80),  # app=client, but another namespace
        ("client", "icmp", "web", None),  # no rule for ICMP: default deny
        ("web", "tcp", "db", 80),  # egress of web is not governed; db still open
    ]
    check(st, cases, [True, False, False, False, False, True])


def test_egress_deny_and_udp(topology):
    cli_out = doc(
        "NetworkPolicy",
        "client-out",
        {
            "selector": "app == 'client'",
            "types": ["Egress"],
            "egress": [
                {"action": "Deny", "destination": {"selector": "app == 'db'"}},
                {"action": "Allow", "protocol": "UDP", "destination": {"ports": [UDP_PORT]}},
                {"action": "Allow", "protocol": "TCP"},
            ],
        },
        namespace="prod",
    )
    st = state(cli_out)
    reconcile(topology, st)
    cases = [
        ("client", "tcp", "db", 80),
        ("client", "udp", "db", UDP_PORT),
        ("client", "tcp", "web", 8080),
        ("client", "udp", "web", UDP_PORT),
        ("client", "icmp", "web", None),
        ("devcli", "tcp", "db", 80),  # another namespace: not selected
    ]
    check(st, cases, [False, False, True, True, False, True])


def test_pass_through_tiers_and_ip_blocks(topology):
    tier = doc("Tier", "security", {"order": 100, "defaultAction": "Deny"})
    gate = doc(
        "GlobalNetworkPolicy",
        "security.gate",
        {
            "tier": "security",
            "selector": "app == 'web'",
            "ingress": [
                {"action": "Pass", "source": {"namespaceSelector": "env == 'prod'"}},
                {"action": "Allow", "protocol": "UDP", "source": {"nets": [f"{PODS['other'][2]}/32"]}},
                {"action": "Deny"},
            ],
        },
    )
    # The default tier then decides for what security passed: only from client's address.
    web_in = doc(
        "NetworkPolicy",
        "web-in",
        {
            "selector": "app == 'web'",
            "ingress": [{"action": "Allow", "source": {"nets": ["10.65.0.0/24"], "notNets": [f"{PODS['db'][2]}/32"]}}],
        },
        namespace="prod",
    )
    st = state(tier, gate, web_in)
    reconcile(topology, st)
    cases = [
        ("client", "tcp", "web", 8080),  # passed by security, allowed by the ipBlock
        ("db", "tcp", "web", 8080),  # passed by security, but in notNets: default tier drops
        ("devcli", "tcp", "web", 8080),  # another namespace: security denies
        ("other", "udp", "web", UDP_PORT),  # security allows it outright by address
        ("other", "tcp", "web", 80),  # and nothing else
        ("db", "tcp", "client", 80),  # client is selected by nothing
    ]
    check(st, cases, [True, False, False, True, False, True])


def test_nat_outgoing_masquerades_to_the_outside(topology):
    cases = [("client", "icmp", "ext", None), ("db", "tcp", "client", 80)]
    st = state(nat=False)
    reconcile(topology, st)
    # The verdict allows the ping (no policy), but ext cannot answer an unmasqueraded pod.
    assert _probe("client", "icmp", EXT_IP, None, None) is False
    st = state(nat=True)
    lines = reconcile(topology, st)
    assert any(names.NAT_OUTGOING in line for line in lines)
    check(st, cases, [True, True])
    assert "masquerade" in nft("list", "chain", "inet", "calico", names.NAT_OUTGOING).stdout


def test_anti_spoofing(topology):
    st = state()
    reconcile(topology, st)
    ns = pod_ns("client")
    _ip(ns, "addr", "add", f"{SPOOFED}/32", "dev", "eth0")
    try:
        assert _probe("client", "icmp", PODS["web"][2], None, None)
        assert not _probe("client", "icmp", PODS["web"][2], None, SPOOFED)
        assert not _probe("client", "tcp", PODS["web"][2], 80, SPOOFED)
        # The drop is the raw table's: the packet never reached the filter chains.
        assert "iifname . ip saddr != @cali40wl-sources drop" in nft("list", "chain", "inet", "calico", "raw-PREROUTING").stdout
    finally:
        _ip(ns, "addr", "del", f"{SPOOFED}/32", "dev", "eth0")


def test_host_endpoint_policy_never_cuts_the_failsafe_ports(topology):
    hep = doc("HostEndpoint", "node1-eth0", {"node": "node1", "interfaceName": "eth0", "expectedIPs": [NODE_IP]}, labels={"host": "node1"})
    lock = doc("GlobalNetworkPolicy", "lockdown", {"selector": "host == 'node1'", "ingress": [{"action": "Deny"}], "types": ["Ingress"]})
    st = state(hep, lock)
    reconcile(topology, st)
    cases = [("ext", "tcp", "node", 22), ("ext", "tcp", "node", 8080), ("ext", "icmp", "node", None)]
    check(st, cases, [True, False, False])
    # Forwarded traffic is not the host endpoint's (no applyOnForward policy).
    check(st, [("client", "icmp", "ext", None)], [True])


def test_drift_is_repaired_and_reported(topology):
    st = state()
    reconcile(topology, st)
    listing = nft("list", "table", "inet", "calico").stdout
    # A base chain deleted, an element deleted, a rule added, a chain of our own added.
    nft("delete", "chain", "inet", "calico", "filter-FORWARD")
    nft("delete", "element", "inet", "calico", names.WL_SOURCES[4], '{ "caliweb" . 10.65.0.2 }')
    nft("add", "rule", "inet", "calico", "cali-tw-calidb", "accept")
    nft("add", "chain", "inet", "calico", "stray")
    lines = reconcile(topology, st)
    assert sorted(re.sub(r"\(\d+ rules\)", "(n rules)", line) for line in lines) == sorted(
        [
            "nft chain filter-FORWARD added (n rules) (repaired: it was missing)",
            f"nft set {names.WL_SOURCES[4]}: +1 -0 elements (repaired)",
            "nft chain cali-tw-calidb updated (n rules) (repaired)",
            "nft chain stray deleted",
        ]
    ), lines
    assert blocks(nft("list", "table", "inet", "calico").stdout) == blocks(listing)
    # The whole table goes.
    nft("delete", "table", "inet", "calico")
    lines = reconcile(topology, st)
    assert len(lines) == 1 and lines[0].startswith("nft table inet calico repaired (the table was missing)")
    assert blocks(nft("list", "table", "inet", "calico").stdout) == blocks(listing)
    check(st, [("client", "tcp", "web", 80)], [True])


def test_an_incremental_update_writes_only_what_changed(topology):
    def web_in(port):
        spec = {"selector": "app == 'web'", "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "app == 'client'"}, "destination": {"ports": [port]}}]}
        return doc("NetworkPolicy", "web-in", spec, namespace="prod")

    other = doc("NetworkPolicy", "db-in", {"selector": "app == 'db'", "ingress": [{"action": "Allow", "source": {"selector": "app == 'web'"}}]}, namespace="prod")
    reconcile(topology, state(web_in(80), other))
    dp = dataplane(topology)
    chain = names.policy_chain("ingress", "default", "prod/web-in")
    # A port changes: the transaction is that one chain, flushed and refilled.
    st = state(web_in(8080), other)
    assert reconcile(topology, st) == [f"nft chain {chain} updated (1 rules)"]
    script = dp.last_transaction.splitlines()
    assert script[0] == f"flush chain inet calico {chain}"
    assert all(line.startswith(f"add rule inet calico {chain} ") for line in script[1:]) and len(script) == 2
    check(st, [("client", "tcp", "web", 8080), ("client", "tcp", "web", 80)], [True, False])
    # The peer selector changes: the new set comes in, the old one goes, the chain is refilled.
    changed = web_in(8080)
    changed["spec"]["ingress"][0]["source"]["selector"] = "app in {'client', 'db'}"
    lines = reconcile(topology, state(changed, other))
    script = dp.last_transaction.splitlines()
    touched = {re.match(r"(?:add|flush|delete) (?:rule|chain|set|element) inet calico (\S+)", line)[1] for line in script}
    assert touched <= {chain} | {n for n in touched if n.startswith("cali40s-")}, script
    assert script[0].startswith("add set inet calico cali40s-") and script[-1].startswith("delete set inet calico cali40s-")
    assert len(lines) == 3, lines  # set added, chain updated, set deleted
    # Members change (a pod goes): only set elements and the dispatch maps.
    pods = dict(PODS)
    try:
        del PODS["other"]
        lines = reconcile(topology, state(changed, other))
    finally:
        PODS.clear()
        PODS.update(pods)
    script = dp.last_transaction.splitlines()
    assert all(line.startswith(("delete element", "flush chain inet calico cali-", "delete chain")) for line in script), script
    assert not any("cali-pi-" in line for line in script)


def test_other_tables_are_untouched(topology):
    before = nft("list", "table", "inet", "filter").stdout
    reconcile(topology, state())
    nft("delete", "table", "inet", "calico")
    reconcile(topology, state())
    assert nft("list", "table", "inet", "filter").stdout == before
    tables = nft("list", "tables").stdout.split("\n")
    assert sorted(t for t in tables if t) == ["table inet calico", "table inet filter"]


def test_reject_as_the_deny_action(topology):
    lock = doc("NetworkPolicy", "web-in", {"selector": "app == 'web'", "ingress": [{"action": "Deny", "protocol": "TCP"}]}, namespace="prod")
    st = state(lock)
    lines = reconcile(topology, st, Options(deny_action="reject"))
    assert lines
    start = time.monotonic()
    res = sh(pod_ns("client"), "nc", "-z", "-n", "-w", "3", PODS["web"][2], "80", check=False)
    assert res.returncode != 0
    assert time.monotonic() - start < 2, "a rejected connection fails at once; a dropped one times out"
    assert "reject" in nft("list", "chain", "inet", "calico", names.policy_chain("ingress", "default", "prod/web-in")).stdout
    reconcile(topology, st)  # back to drop
