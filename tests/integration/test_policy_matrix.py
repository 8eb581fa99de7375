"""Real-packet reachability matrices on both policy plugins, against the judge.

The cluster of Kubernetes' network policy e2e tests, built in a lab the way Kubernetes
would: namespaces x, y, z (label ``ns``), pods a, b, c in each (label ``pod``) with the
named container ports ``serve-<port>-<tcp|udp>``, wired by the real ``calico`` CNI
executable (profiles ``kns.<ns>``, ``ksa.<ns>.default``), each serving TCP and UDP on 80
and 81. One lab (real etcd, one node) per plugin.

A case is a list of steps taken as a user would take them: manifests of Kubernetes and
Calico objects through ``calico-lab apply`` / ``delete``, label changes through
``calico-lab label`` (:mod:`pycalico.core.lab.kube`). After each step the node's
DesiredState is read back from etcd, the plugin converges the node namespace to it, and
every pod connects to every pod on TCP and UDP 80 and 81 at once (324 probes); each of
the four measured 9x9 matrices must equal the one :mod:`pycalico.core.policy` predicts
from the same state. Each step also names how many of its 324 probes are blocked, worked
out by hand from the policies, so that a judge and a dataplane wrong in the same way do
not pass.

Further tests: a HostEndpoint on the node's interface with a deny-all host policy
(failsafe ports stay open, others close) and a pod sending with another pod's address
(dropped).

Probes: TCP is a non-blocking connect (success = handshake done; a refusal or no answer
within ``TIMEOUT`` is blocked); UDP is a datagram from a port unique to the measurement
(so no conntrack entry of an earlier step answers for it), resent until the echo comes
back or the time is up. Sockets are made inside the pods' namespaces; one thread serves
every listener.

Safety: the plugin runs only in a thread joined to the node namespace (checked not to be
the root one); sockets live in lab namespaces; the labs are torn down even on failure.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import json
import os
import selectors
import socket
import threading
import time
import urllib.parse

import attrs
import pytest

from pycalico.core.calc import DesiredState
from pycalico.core.config import Config, Slot
from pycalico.core.lab import kube, netns
from pycalico.core.lab.pods import add_pod, get_pod, with_datastore
from pycalico.core.policy import compile
from pycalico.core.policy.evaluate import format_matrix, reachability, verdict
from tests.lab_fixtures import down_all, require_lab, unique_lab_name

pytestmark = pytest.mark.lab

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
KEYS = [f"{ns}/{p}" for ns in NAMESPACES for p in PODS]
PORTS = (("TCP", 80), ("TCP", 81), ("UDP", 80), ("UDP", 81))
TIMEOUT = 1.5  # seconds a probe may take; TCP retransmits its SYN after 1 s
UDP_RESEND = 0.25
IP_TRANSPARENT = 19  # linux/in.h: send from an address this namespace does not have
POLICY_KINDS = ("NetworkPolicy", "GlobalNetworkPolicy", "HostEndpoint", "Tier")
BUILTIN_TIERS = ("default", "kube-admin", "kube-baseline")


def _roots() -> set[int]:
    found = {0xEFFFFFF9, os.stat("/proc/self/ns/net").st_ino}
    try:
        found.add(os.stat("/proc/1/ns/net").st_ino)
    except PermissionError:
        pass
    return found


ROOTS = _roots()


def in_ns(ns: str, fn, timeout: float = 120):
    """``fn()`` in a thread joined to ``ns``, refusing the root namespace."""
    assert os.stat(f"/run/netns/{ns}").st_ino not in ROOTS

    def guarded():
        here = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
        assert here not in ROOTS, "refusing to act on the root network namespace"
        return fn()

    return netns.run_in_netns(ns, guarded, timeout=timeout)


# --- manifests, one line each -------------------------------------------------------------------


def knp(name, ns="x", pods=None, ingress=None, egress=None, types=None) -> dict:
    """A networking.k8s.io/v1 NetworkPolicy selecting pods with labels ``pods`` (all if None)."""
    spec = {"podSelector": {"matchLabels": pods} if pods else {}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types:
        spec["policyTypes"] = types
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def peer(pods=None, nss=None) -> dict:
    """A NetworkPolicyPeer: podSelector and/or namespaceSelector matchLabels ({} = all)."""
    out = {}
    if pods is not None:
        out["podSelector"] = {"matchLabels": pods}
    if nss is not None:
        out["namespaceSelector"] = {"matchLabels": nss}
    return out


def gnp(name, order, selector, ingress=None, egress=None, tier=None) -> dict:
    spec = {"order": order, "selector": selector, "ingress": ingress or [], "egress": egress or [],
            "types": (["Ingress"] if ingress is not None else []) + (["Egress"] if egress is not None else [])}
    if tier:
        spec["tier"] = tier
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": name},
            "spec": spec}


def tier(name, order, default_action="Deny") -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": name},
            "spec": {"order": order, "defaultAction": default_action}}


def namespace(name, **labels) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def block(ip: dict, cidr_of: str, *excepted: str) -> dict:
    """An ipBlock peer: the pod pool's /16 (around pod ``cidr_of``) except some pods."""
    cidr = str(ipaddress.ip_network(f"{ip[cidr_of]}/16", strict=False))
    return {"ipBlock": {"cidr": cidr, "except": [f"{ip[k]}/32" for k in excepted]}}


DENY_X = knp("deny", types=["Ingress"])
ALL = {}
FROM_Y = {"projectcalico.org/name": "y"}
Y_NS = "projectcalico.org/name == 'y'"


def ports(*items) -> list[dict]:
    return [{"port": p, **({"protocol": proto} if proto else {})} for p, proto in items]


# A step is a list of objects to apply, ("delete", [objects]) or ("label", target, [changes]);
# each comes with the number of its 324 probes (81 pairs x TCP/UDP x 80/81) that are blocked.
# Case functions take the pods' IPs (for ipBlocks).
CASES = {
    "no-policy": lambda ip: [([], 0)],
    # 3 x-pods x 8 other sources, on each of the 4 ports
    "default-deny-ingress": lambda ip: [([DENY_X], 4 * 24)],
    # ... plus each x-pod to the 6 pods outside x
    "deny-all-ingress-and-egress": lambda ip: [([knp("deny-all", types=["Ingress", "Egress"])], 4 * (24 + 18))],
    "allow-from-pod-selector": lambda ip: [
        ([DENY_X, knp("allow", pods={"pod": "a"}, ingress=[{"from": [peer(pods={"pod": "b"})]}])], 4 * 23)],
    "allow-from-namespace-selector": lambda ip: [
        ([DENY_X, knp("allow", pods={"pod": "a"}, ingress=[{"from": [peer(nss={"ns": "y"})]}])], 4 * 21)],
    "namespace-and-pod-selector": lambda ip: [
        ([DENY_X, knp("allow", pods={"pod": "a"}, ingress=[{"from": [peer({"pod": "b"}, {"ns": "y"})]}])], 4 * 23)],
    "namespace-or-pod-selector": lambda ip: [
        ([DENY_X, knp("allow", pods={"pod": "a"}, ingress=[{"from": [peer(nss={"ns": "y"}), peer({"pod": "b"})]}])],
         4 * 20)],
    # x/a opens one port to all 8 others: 16 blocked there, 24 on the other three
    "numeric-port": lambda ip: [
        ([DENY_X, knp("allow", pods={"pod": "a"}, ingress=[{"ports": ports((80, None))}])], 16 + 3 * 24)],
    "named-ports": lambda ip: [
        ([DENY_X, knp("allow", pods={"pod": "a"}, ingress=[{"ports": ports(("serve-81-udp", "UDP"),
                                                                         ("serve-80-tcp", None))}])],
         2 * 16 + 2 * 24)],
    # a TCP rule naming a UDP port matches nothing
    "named-port-of-another-protocol": lambda ip: [
        ([DENY_X, knp("allow", pods={"pod": "a"}, ingress=[{"ports": ports(("serve-80-udp", None))}])], 4 * 24)],
    "protocol-only": lambda ip: [
        ([DENY_X, knp("allow", pods={"pod": "a"}, ingress=[{"ports": [{"protocol": "UDP"}]}])], 2 * 16 + 2 * 24)],
    # x-pods may send to y only: each of 3 to 2 x-pods and 3 z-pods
    "egress-to-namespace": lambda ip: [
        ([knp("egress", egress=[{"to": [peer(nss={"ns": "y"})]}], types=["Egress"])], 4 * 15)],
    "egress-with-port": lambda ip: [
        ([knp("egress", egress=[{"to": [peer(nss={"ns": "y"})], "ports": ports((80, None))}], types=["Egress"])],
         15 + 3 * 24)],
    "ingress-ip-block-with-except": lambda ip: [
        ([DENY_X, knp("allow", pods={"pod": "a"}, ingress=[{"from": [block(ip, "x/a", "y/b")]}])], 4 * (16 + 1))],
    "egress-ip-block-with-except": lambda ip: [
        ([knp("egress", pods={"pod": "a"}, egress=[{"to": [block(ip, "x/a", "z/c")]}], types=["Egress"])], 4 * 1)],
    "allow-all-after-deny": lambda ip: [([DENY_X, knp("allow-all", ingress=[{}])], 0)],
    "policy-update": lambda ip: [
        ([DENY_X, knp("allow", pods={"pod": "a"}, ingress=[{"from": [peer(pods={"pod": "b"})]}])], 4 * 23),
        ([knp("allow", pods={"pod": "a"}, ingress=[{"from": [peer(pods={"pod": "c"})]}])], 4 * 23),
        (("delete", [knp("allow")]), 4 * 24),
    ],
    # x/a takes pod=b from every namespace, and every pod of namespaces labelled team=blue
    "label-changes": lambda ip: [
        ([DENY_X, knp("allow", pods={"pod": "a"}, ingress=[{"from": [peer({"pod": "b"}, ALL)]},
                                                          {"from": [peer(nss={"team": "blue"})]}])], 4 * 21),
        (("label", "pod/y/c", ["pod=b"]), 4 * 20),
        (("label", "ns/z", ["team=blue"]), 4 * 18),
        (("label", "pod/y/c", ["pod-"]), 4 * 19),
    ],
    # Deny from y first; the rest is Passed, which skips the rest of the default tier
    # (the knp.* policies of x too) and lands on the allow-all profiles.
    "gnp-deny-then-pass": lambda ip: [
        ([DENY_X, gnp("deny-from-y", 10, "all()", ingress=[{"action": "Deny", "source": {"namespaceSelector": Y_NS}},
                                                           {"action": "Pass"}])], 4 * 24)],
    # the lower order goes first: y/a is allowed before y is denied
    "gnp-order": lambda ip: [
        ([gnp("deny-from-y", 10, "all()", ingress=[{"action": "Deny", "source": {"namespaceSelector": Y_NS}},
                                                   {"action": "Pass"}]),
          gnp("allow-y-a", 5, "all()", ingress=[{"action": "Allow", "source": {"selector": "pod == 'a'",
                                                                                "namespaceSelector": Y_NS}}])],
         4 * 16)],
    # tier security (before default) denies z into x and passes the rest to the default
    # tier, where x/a takes pod=b of any namespace; then tier audit (Pass at its end)
    # denies x/a into y.
    "tiers": lambda ip: [
        ([tier("security", 100),
          gnp("security.block-z", 1, "projectcalico.org/namespace == 'x'", tier="security",
              ingress=[{"action": "Deny", "source": {"namespaceSelector": "projectcalico.org/name == 'z'"}},
                       {"action": "Pass"}]),
          DENY_X, knp("allow", pods={"pod": "a"}, ingress=[{"from": [peer({"pod": "b"}, ALL)]}])],
         4 * (9 + 13)),
        ([tier("audit", 50, "Pass"),
          gnp("audit.deny-x-a", 1, "projectcalico.org/namespace == 'y'", tier="audit",
              ingress=[{"action": "Deny", "source": {"selector": "pod == 'a'",
                                                    "namespaceSelector": "projectcalico.org/name == 'x'"}}])],
         4 * (9 + 13 + 3)),
    ],
}


# --- the datastore ------------------------------------------------------------------------------


def _docs(objects: list[dict]) -> str:
    return "\n---\n".join(json.dumps(o) for o in objects)


def take_step(lab, step) -> None:
    if isinstance(step, tuple) and step[0] == "label":
        kube.label(lab, step[1], step[2])
    elif isinstance(step, tuple) and step[0] == "delete":
        outcomes = kube.delete(lab, _docs(step[1]), "step")
        assert all(o.action == "deleted" for o in outcomes), outcomes
    elif step:
        kube.apply(lab, _docs(step), "step")


def reset(world) -> None:
    """Back to the cluster of the e2e tests: no policy, tier or host endpoint, namespace
    and pod labels as at the start."""
    lab, node = world["lab"], world["node"]

    def clear(ds):
        for kind in POLICY_KINDS:
            for r in ds.list(kind).items:
                if kind != "Tier" or r.name not in BUILTIN_TIERS:
                    ds.delete(kind, r.name, r.metadata.namespace)

    with_datastore(lab, node, clear)
    kube.apply(lab, _docs([namespace(ns, ns=ns) for ns in NAMESPACES]), "namespaces")
    for key in KEYS:
        pod = get_pod(lab, key)
        if pod.labels != {"pod": pod.name}:
            kube.label(lab, f"pod/{key}", [f"{k}-" for k in pod.labels if k != "pod"] + [f"pod={pod.name}"])


def converge(world) -> DesiredState:
    """The node's DesiredState from etcd, and the plugin's pass over it."""
    snap = with_datastore(world["lab"], world["node"], lambda ds: ds.snapshot())
    kinds: dict[str, list] = {}
    for r in snap.resources:
        kinds.setdefault(type(r).KIND, []).append(r)
    state = DesiredState(node_name=world["node"].name, revision=snap.revision,
                         resources={k: tuple(v) for k, v in kinds.items()})
    in_ns(world["node"].netns, lambda: world["plugin"].pycalico_reconcile_policy(state=state, config=world["config"]))
    return state


# --- servers and probes -------------------------------------------------------------------------


class Servers:
    """TCP and UDP listeners in lab namespaces, served by one thread: TCP connections are
    accepted and closed, UDP datagrams echoed; every payload received is kept by listener."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.received: dict[tuple[str, str, int], set[bytes]] = collections.defaultdict(set)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def listen(self, ns: str, where: str, protocol: str, port: int) -> None:
        def make():
            kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
            s = socket.socket(socket.AF_INET, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            if protocol == "TCP":
                s.listen(128)
            s.setblocking(False)
            return s

        self.sel.register(in_ns(ns, make), selectors.EVENT_READ, (where, protocol, port))

    def _serve(self):
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.2):
                s, (where, protocol, port) = key.fileobj, key.data
                try:
                    if protocol == "TCP":
                        s.accept()[0].close()
                    else:
                        data, addr = s.recvfrom(2048)
                        self.received[(where, protocol, port)].add(data)
                        s.sendto(data, addr)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()


_udp_source_ports = itertools.count(20000)


def probe_all(netns_of: dict[str, str], targets: dict[str, str]) -> dict[tuple[str, int], dict[tuple[str, str], bool]]:
    """From every source (name -> namespace) to every target (name -> IP) on PORTS at once:
    {(protocol, port): {(source, target): reached}}."""
    udp_port = next(_udp_source_ports)
    payload = f"probe-{udp_port}".encode()

    def open_clients():
        tcp = {}
        for dst, ip in targets.items():
            for port in (80, 81):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex((ip, port))
                tcp[(dst, port)] = s
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("0.0.0.0", udp_port))
        udp.setblocking(False)
        return tcp, udp

    sel = selectors.DefaultSelector()
    reached: dict[tuple[str, int], dict[tuple[str, str], bool]] = {pp: {} for pp in PORTS}
    udp_socks, by_addr = {}, {(ip, port): dst for dst, ip in targets.items() for port in (80, 81)}
    try:
        for src, ns in netns_of.items():
            tcp, udp = in_ns(ns, open_clients)
            for (dst, port), s in tcp.items():
                sel.register(s, selectors.EVENT_WRITE, ("TCP", src, dst, port))
            sel.register(udp, selectors.EVENT_READ, ("UDP", src, None, None))
            udp_socks[src] = udp
        deadline, next_send = time.monotonic() + TIMEOUT, 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                for src, udp in udp_socks.items():
                    for (ip, port), dst in by_addr.items():
                        if (src, dst) not in reached[("UDP", port)]:
                            udp.sendto(payload, (ip, port))
                next_send = time.monotonic() + UDP_RESEND
            for key, _ in sel.select(0.05):
                proto, src, dst, port = key.data
                if proto == "TCP":
                    reached[("TCP", port)][(src, dst)] = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                    sel.unregister(key.fileobj)
                    continue
                try:
                    data, addr = key.fileobj.recvfrom(2048)
                except OSError:  # an ICMP error for an earlier datagram
                    continue
                if data == payload and addr in by_addr:
                    reached[("UDP", addr[1])][(src, by_addr[addr])] = True
            if all(len(m) == len(netns_of) * len(targets) for m in reached.values()):
                break
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    for m in reached.values():
        for src in netns_of:
            for dst in targets:
                m.setdefault((src, dst), False)
    return reached


class _Seen:
    def __init__(self, allowed: bool):
        self.allowed = allowed


# --- the lab, one per plugin --------------------------------------------------------------------


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def world(request, tmp_path_factory):
    require_lab()
    name = request.param
    if name == "iptables":
        from pycalico.plugins.policy.iptables import Options, plugin
    else:
        from pycalico.plugins.policy.nftables import Options, plugin
    root = tmp_path_factory.mktemp(f"labs-{name}")
    from pycalico.core.lab import Lab

    servers = Servers()
    try:
        lab = Lab.up(unique_lab_name("pm"), nodes=1, subnets=1, state_root=root)
        node = lab.nodes[0]
        kube.apply(lab, _docs([namespace(ns, ns=ns) for ns in NAMESPACES]), "namespaces")
        named = [{"name": f"serve-{port}-{proto.lower()}", "containerPort": port, "protocol": proto}
                 for proto, port in PORTS]
        for key in KEYS:
            add_pod(lab, node, key, labels={"pod": key.split("/")[1]}, ports=named)
        pods = {key: get_pod(lab, key) for key in KEYS}
        for key, p in pods.items():
            for proto, port in PORTS:
                servers.listen(p.netns, key, proto, port)
        config = Config(node_name=node.name, policy=Slot(type=name, options=Options()))
        yield {"lab": lab, "node": node, "plugin": plugin, "config": config, "name": name, "servers": servers,
               "ips": {k: p.ip for k, p in pods.items()}, "netns": {k: p.netns for k, p in pods.items()}}
    finally:
        servers.close()
        errors = down_all(root)
        assert not errors, errors


def test_pods_look_like_kubernetes_pods(world):
    """The CNI gave each endpoint its namespace's and service account's profiles, the
    pod's labels and its named ports, as Calico does for a Kubernetes pod."""
    weps = with_datastore(world["lab"], world["node"], lambda ds: ds.list("WorkloadEndpoint", namespace="y").items)
    wep = next(w for w in weps if w.spec.pod == "b")
    assert wep.spec.profiles == ("kns.y", "ksa.y.default")
    assert wep.spec.service_account_name == "default"
    assert wep.metadata.labels == {"pod": "b", "projectcalico.org/namespace": "y",
                                   "projectcalico.org/orchestrator": "k8s", "projectcalico.org/serviceaccount": "default"}
    assert sorted((p.name, p.protocol, p.port) for p in wep.spec.ports) == [
        ("serve-80-tcp", "TCP", 80), ("serve-80-udp", "UDP", 80), ("serve-81-tcp", "TCP", 81),
        ("serve-81-udp", "UDP", 81)]


@pytest.mark.parametrize("case", list(CASES))
def test_matrix_matches_the_judge(world, case):
    lab = world["lab"]
    reset(world)
    for i, (step, blocked) in enumerate(CASES[case](world["ips"]), 1):
        start = time.monotonic()
        take_step(lab, step)
        state = converge(world)
        model = compile(state, scope="cluster")
        peers = {key: model.find(*key.split("/")) for key in KEYS}
        seen = probe_all(world["netns"], world["ips"])
        report, wrong, judged_blocked = [], [], 0
        for proto, port in PORTS:
            judged = reachability(model, peers, proto, port)
            judged_blocked += sum(not v.allowed for v in judged.values())
            measured = seen[(proto, port)]
            wrong += [f"{proto} {port} {a} -> {b}: measured {'open' if measured[(a, b)] else 'blocked'}, judge "
                      f"{judged[(a, b)]}" for (a, b) in judged if judged[(a, b)].allowed != measured[(a, b)]]
            report.append(f"{proto} {port}: judge\n{format_matrix(judged, KEYS)}\nmeasured\n"
                          f"{format_matrix({k: _Seen(v) for k, v in measured.items()}, KEYS)}")
        text = f"{world['name']} / {case} step {i}\n" + "\n".join(report) + "\n" + "\n".join(wrong)
        print(f"{world['name']} / {case} step {i}: {judged_blocked} blocked ({time.monotonic() - start:.1f} s)")
        assert judged_blocked == blocked, text
        assert not wrong, text


def test_host_endpoint_keeps_failsafe_ports_open(world):
    """A HostEndpoint on the node's eth0 and a host policy denying everything: SSH (a
    failsafe port) still comes in from the control-plane namespace, 8080 does not."""
    lab, node = world["lab"], world["node"]
    reset(world)
    servers = world["servers"]
    for port in (22, 8080):
        servers.listen(node.netns, "node", "TCP", port)
    hep = {"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
           "metadata": {"name": f"{node.name}-eth0", "labels": {"host-endpoint": "eth0"}},
           "spec": {"node": node.name, "interfaceName": "eth0", "expectedIPs": [node.ip]}}
    lock = gnp("deny-host", 1, "has(host-endpoint)", ingress=[], egress=[])
    cp_ip = urllib.parse.urlparse(lab.etcd_endpoints[0]).hostname  # etcd's namespace is the client

    def reach(port: int) -> bool:
        def connect():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(TIMEOUT)
            try:
                return s.connect_ex((node.ip, port)) == 0
            finally:
                s.close()

        return in_ns(lab.cp_netns, connect)

    try:
        assert reach(22) and reach(8080), "without a host endpoint the node takes both"
        kube.apply(lab, _docs([hep, lock]), "host")
        model = compile(converge(world), scope="cluster")
        target = model.find("", f"{node.name}-eth0")
        for port, want in ((22, True), (8080, False)):
            judged = verdict(model, cp_ip, target, "TCP", port)
            assert judged.allowed == want, judged
            assert reach(port) == want, f"TCP {port}: judge {judged}"
    finally:
        reset(world)
        converge(world)


def test_spoofed_source_addresses_are_dropped(world):
    """x/a sends to y/c's UDP echo from its own address (delivered) and from x/b's
    (dropped by the anti-spoofing check before any policy), then again once Felix allows
    spoofing (``workloadSourceSpoofing: Any``) and x/a's endpoint allows x/b's address
    (``allowSpoofedSourcePrefixes``): delivered."""
    lab, node = world["lab"], world["node"]
    ips, servers = world["ips"], world["servers"]
    felix = {"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration", "metadata": {"name": "default"},
             "spec": {"workloadSourceSpoofing": "Any"}}

    def allow_prefixes(prefixes):
        def update(ds):
            (wep,) = [w for w in ds.list("WorkloadEndpoint", namespace="x").items if w.spec.pod == "a"]
            ds.update(attrs.evolve(wep, spec=attrs.evolve(wep.spec, allow_spoofed_source_prefixes=prefixes)))

        with_datastore(lab, node, update)

    def send(source: str) -> bool:
        token = os.urandom(8).hex().encode()

        def go():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            s.bind((source, 0))
            for _ in range(5):
                s.sendto(token, (ips["y/c"], 80))
            s.close()

        in_ns(world["netns"]["x/a"], go)
        time.sleep(TIMEOUT)
        return token in servers.received[("y/c", "UDP", 80)]

    def judge(source: str):
        model = compile(converge(world), scope="cluster")
        return verdict(model, model.find("x", "a"), model.find("y", "c"), "UDP", 80, src_ip=source)

    reset(world)
    try:
        assert judge(ips["x/a"]).allowed and send(ips["x/a"])
        judged = judge(ips["x/b"])
        assert not judged.allowed and "anti-spoofing" in judged.reason, judged
        assert not send(ips["x/b"]), "a packet with x/b's address from x/a got through"
        kube.apply(lab, _docs([felix]), "felix")
        allow_prefixes((f"{ips['x/b']}/32",))
        assert judge(ips["x/b"]).allowed
        assert send(ips["x/b"]), "allowSpoofedSourcePrefixes did not let x/b's address through"
    finally:
        allow_prefixes(None)
        with_datastore(lab, node, lambda ds: ds.delete("FelixConfiguration", "default"))
        converge(world)
