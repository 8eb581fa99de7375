"""The nftables policy plugin: nft text rendered from compiled models, and the transactions.

Rule kinds (ports, ranges, named ports through concatenated sets, nets, selectors through
sets, ICMP, protocols, actions), endpoint chains (tiers, Pass, policy groups, profiles,
final drop), dispatch verdict maps, sets, the planner's scripts, the read-back parser and
the options. The last tests hand the rendered script to ``nft -c -f`` (check mode: the
kernel validates, nothing is committed), always inside a network namespace made for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest

from pycalico.core import config as cfg
from pycalico.core.calc import DesiredState
from pycalico.core.lab import netns
from pycalico.core.policy import Compiler, compile
from pycalico.core.resources.codec import load_resource
from pycalico.plugins.policy.nftables import NftablesPolicy, Options, names
from pycalico.plugins.policy.nftables.render import (
    ALLOW,
    CLEAR_MARKS,
    CLEAR_PASS,
    CONNTRACK,
    IF_NOT_PASSED,
    PASS,
    RETURN_IF_ACCEPTED,
    effective,
    group_chain_name,
)
from pycalico.plugins.policy.nftables.state import parse_table
from pycalico.plugins.policy.nftables.table import Renderer
from tests.policy_world import doc, walk
from pycalico.plugins.policy.nftables.transaction import full, plan

# --- resources ------------------------------------------------------------------------


def profile(ns):
    allow = [{"action": "Allow"}]
    labels = {"pcns.projectcalico.org/name": ns}
    return doc("Profile", f"kns.{ns}", {"labelsToApply": labels, "ingress": allow, "egress": allow})


def wep(name, ns, ip, labels, ports=(), node="node1"):
    spec = {
        "node": node,
        "orchestrator": "k8s",
        "pod": name,
        "endpoint": "eth0",
        "interfaceName": f"cali{name}",
        "ipNetworks": [ip],
        "profiles": [f"kns.{ns}"],
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
    }
    return doc("WorkloadEndpoint", f"{node}-k8s-{name}-eth0", spec, namespace=ns, labels=labels)


def np(name, spec, ns="prod"):
    return doc("NetworkPolicy", name, spec, namespace=ns)


BASE = [
    profile("prod"),
    profile("dev"),
    wep("web", "prod", "10.65.0.2/32", {"app": "web"}, ports=[("http", 8080)]),
    wep("db", "prod", "10.65.0.3/32", {"app": "db"}),
    wep("client", "prod", "10.65.0.4/32", {"app": "client"}),
    wep("remote", "prod", "10.65.1.9/32", {"app": "client"}, node="node2"),
    doc("IPPool", "pods", {"cidr": "10.65.0.0/16", "natOutgoing": True}),
]


def state_of(*docs):
    kinds = {}
    for d in [*BASE, *docs]:
        r = load_resource(d)
        kinds.setdefault(type(r).KIND, []).append(r)
    return DesiredState(node_name="node1", revision=1, resources={k: tuple(v) for k, v in kinds.items()})


def render(*docs, options=None):
    model = compile(state_of(*docs))
    return model, Renderer().render(model, effective(model, options))


def rules(desired, name):
    return list(desired.chains[name].rules)


def sel_set(desired, member):
    """The names of the selector sets holding ``member``."""
    return sorted(n for n, s in desired.sets.items() if n.startswith("cali40s-") and member in s.elements)


PI = names.policy_chain
WEB_IN = names.workload_chain("ingress", "caliweb")


# --- rules ----------------------------------------------------------------------------


def test_selector_ports_ranges_and_named_ports():
    spec = {
        "selector": "app == 'web'",
        "ingress": [
            {
                "action": "Allow",
                "protocol": "TCP",
                "source": {"selector": "app == 'client'"},
                "destination": {"ports": [80, "1000:2000", "http"]},
            }
        ],
    }
    _, d = render(np("web-in", spec))
    [client_set] = sel_set(d, "10.65.0.4")
    assert d.sets[client_set].elements == {"10.65.0.4", "10.65.1.9"}  # the remote pod too
    assert d.sets[client_set].flags == frozenset()  # addresses only: a plain set
    named = [n for n in d.sets if n.startswith("cali40n-")]
    assert len(named) == 1
    assert d.sets[named[0]].type == ("ipv4_addr", "inet_proto", "inet_service")
    assert d.sets[named[0]].elements == {"10.65.0.2 . 6 . 8080"}
    head = f"meta l4proto 6 ip saddr @{client_set}"
    assert rules(d, PI("ingress", "default", "prod/web-in")) == [
        f"{head} th dport 80 {ALLOW}",
        f"{head} th dport 1000-2000 {ALLOW}",
        f"{head} ip daddr . meta l4proto . th dport @{named[0]} {ALLOW}",
    ]


def test_nets_not_nets_split_and_log_uses_an_anonymous_set():
    source = {"nets": ["10.0.0.0/8", "192.168.1.0/24"], "notNets": ["10.1.0.0/16"]}
    spec = {
        "selector": "app == 'web'",
        "ingress": [
            {"action": "Log", "source": source},
            {"action": "Deny", "source": source},
            {"action": "Allow", "source": {"notNets": ["0.0.0.0/0"]}},  # "not everything": never rendered
        ],
    }
    _, d = render(np("nets", spec))
    assert rules(d, PI("ingress", "default", "prod/nets")) == [
        'ip saddr != 10.1.0.0/16 ip saddr { 10.0.0.0/8, 192.168.1.0/24 } log prefix "calico-packet" level info',
        "ip saddr != 10.1.0.0/16 ip saddr 10.0.0.0/8 drop",
        "ip saddr != 10.1.0.0/16 ip saddr 192.168.1.0/24 drop",
    ]


def test_not_selector_not_ports_and_destination_nets():
    spec = {
        "selector": "app == 'web'",
        "egress": [
            {
                "action": "Allow",
                "protocol": "UDP",
                "destination": {"notSelector": "app == 'db'", "notPorts": [53, "6000:6010"], "nets": ["10.65.0.0/16"]},
            }
        ],
    }
    # A global policy keeps the notSelector apart (a namespaced one folds it into its
    # namespace's positive selector): "not in the set of db pods".
    _, d = render(doc("GlobalNetworkPolicy", "egress", spec))
    [db_set] = sel_set(d, "10.65.0.3")
    assert d.sets[db_set].elements == {"10.65.0.3"}
    assert rules(d, PI("egress", "default", "egress")) == [
        f"meta l4proto 17 ip daddr != @{db_set} th dport != 53 th dport != 6000-6010 ip daddr 10.65.0.0/16 {ALLOW}"
    ]


def test_icmp_type_code_not_icmp_icmpv6_protocols_and_actions():
    spec = {
        "selector": "app == 'web'",
        "ingress": [
            {"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}},
            {"action": "Deny", "protocol": "ICMP", "notICMP": {"type": 8, "code": 0}},
            {"action": "Deny", "protocol": "ICMP", "notICMP": {"type": 3}},
            {"action": "Allow", "protocol": "ICMPv6", "icmp": {"type": 128}},
            {"action": "Pass", "protocol": "UDP"},
            {"action": "Log", "notProtocol": "TCP"},
            {"action": "Deny", "ipVersion": 6},
        ],
    }
    _, d = render(np("icmp", spec))
    assert rules(d, PI("ingress", "default", "prod/icmp")) == [
        f"meta nfproto ipv4 meta l4proto 1 icmp type 8 icmp code 0 {ALLOW}",
        "meta nfproto ipv4 meta l4proto 1 icmp type . icmp code != { 8 . 0 } drop",
        "meta nfproto ipv4 meta l4proto 1 icmp type != 3 drop",
        f"meta nfproto ipv6 meta l4proto 58 icmpv6 type 128 {ALLOW}",
        f"meta l4proto 17 {PASS}",
        'meta l4proto != 6 log prefix "calico-packet" level info',
        "meta nfproto ipv6 drop",
    ]


def test_options_and_felix_configuration_decide_deny_log_and_host_actions():
    felix = doc("FelixConfiguration", "default", {"nftablesFilterDenyAction": "Reject", "logPrefix": "felix-said"})
    spec = {"selector": "app == 'web'", "ingress": [{"action": "Log"}, {"action": "Deny"}]}
    _, d = render(np("deny", spec), felix)
    assert rules(d, PI("ingress", "default", "prod/deny")) == ['log prefix "felix-said" level info', "reject"]
    assert rules(d, WEB_IN)[-1] == "reject"
    assert rules(d, names.WL_TO_HOST)[-1] == "drop"  # Felix's default endpoint-to-host action

    opts = Options(deny_action="drop", log_prefix="mine", endpoint_to_host_action="accept")
    _, d = render(np("deny", spec), felix, options=opts)
    assert rules(d, PI("ingress", "default", "prod/deny")) == ['log prefix "mine" level info', "drop"]
    assert rules(d, names.WL_TO_HOST)[-1] == "accept"


def test_a_set_nobody_is_in_drops_the_rule_or_the_condition():
    spec = {
        "selector": "app == 'web'",
        "ingress": [
            {"action": "Allow", "source": {"selector": "app == 'nobody'"}},
            {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["nosuchport"]}},
            {"action": "Deny", "source": {"notSelector": "app == 'nobody'"}},
            {"action": "Deny", "ipVersion": 4, "source": {"notSelector": "app == 'nobody'"}},
        ],
    }
    _, d = render(doc("GlobalNetworkPolicy", "empty", spec))
    # An empty positive set can never match; "not in an empty set" always holds.
    assert rules(d, PI("ingress", "default", "empty")) == ["drop", "meta nfproto ipv4 drop"]
    assert not any(n.startswith("cali60") for n in d.sets)  # no IPv6 addresses anywhere: no v6 sets


def test_network_sets_make_interval_sets_with_collapsed_members():
    netset = doc("NetworkSet", "office", {"nets": ["10.65.0.0/24", "192.0.2.0/25", "192.0.2.128/25"]}, "prod", {"app": "client"})
    spec = {"selector": "app == 'web'", "ingress": [{"action": "Allow", "source": {"selector": "app == 'client'"}}]}
    _, d = render(np("office", spec), netset)
    [client_set] = sel_set(d, "10.65.1.9")
    st = d.sets[client_set]
    assert st.flags == {"interval"}
    # The client pod (10.65.0.4) is inside 10.65.0.0/24; the two /25s merge.
    assert st.elements == {"10.65.0.0/24", "192.0.2.0/24", "10.65.1.9"}


# --- chains ---------------------------------------------------------------------------


def test_endpoint_chain_tiers_pass_groups_profiles_and_final_drop():
    tiers = [
        doc("Tier", "security", {"order": 100, "defaultAction": "Deny"}),
        doc("Tier", "platform", {"order": 200, "defaultAction": "Pass"}),
    ]
    gnp = [
        doc("GlobalNetworkPolicy", f"security.{n}", {"tier": "security", "order": o, "selector": "app == 'web'", "ingress": [{"action": "Pass"}]})
        for n, o in (("a", 1), ("b", 2))
    ] + [doc("GlobalNetworkPolicy", "platform.c", {"tier": "platform", "selector": "all()", "ingress": [{"action": "Log"}]})]
    _, d = render(*tiers, *gnp, np("web-in", {"selector": "app == 'web'", "ingress": [{"action": "Allow"}]}))
    group = group_chain_name("ingress", "security", ("security.a", "security.b"))
    assert rules(d, WEB_IN) == [
        *CONNTRACK,
        CLEAR_MARKS,
        CLEAR_PASS,
        f"jump {group}",
        RETURN_IF_ACCEPTED,
        f"{IF_NOT_PASSED} drop",  # security: Deny at the end unless a policy passed
        CLEAR_PASS,
        f"jump {PI('ingress', 'platform', 'platform.c')}",
        RETURN_IF_ACCEPTED,  # platform: default action Pass, no drop
        CLEAR_PASS,
        f"jump {PI('ingress', 'default', 'prod/web-in')}",
        RETURN_IF_ACCEPTED,
        f"{IF_NOT_PASSED} drop",
        f"jump {names.profile_chain('ingress', 'kns.prod')}",
        RETURN_IF_ACCEPTED,
        "drop",
    ]
    assert rules(d, group) == [
        f"jump {PI('ingress', 'security', 'security.a')}",
        RETURN_IF_ACCEPTED,
        f"{IF_NOT_PASSED} jump {PI('ingress', 'security', 'security.b')}",
        RETURN_IF_ACCEPTED,
    ]
    assert rules(d, names.profile_chain("ingress", "kns.prod")) == [ALLOW]
    # Workload egress: VXLAN and IP-in-IP from workloads are dropped before policy.
    assert rules(d, names.workload_chain("egress", "caliweb"))[3:5] == ["meta l4proto 17 th dport 4789 drop", "meta l4proto 4 drop"]


def test_dispatch_verdict_maps_and_static_chains():
    _, d = render()
    assert dict(d.maps[names.FROM_WL_DISPATCH].elements) == {
        f'"cali{p}"': f"goto cali-fw-cali{p}" for p in ("web", "db", "client")
    }
    assert dict(d.maps[names.TO_WL_DISPATCH].elements) == {f'"cali{p}"': f"goto cali-tw-cali{p}" for p in ("web", "db", "client")}
    assert d.maps[names.TO_WL_DISPATCH].type == ("ifname", ":", "verdict")
    assert rules(d, names.FROM_WL_DISPATCH) == [f"iifname vmap @{names.FROM_WL_DISPATCH}", "drop"]
    assert rules(d, names.FROM_HEP_DISPATCH) == [f"iifname vmap @{names.FROM_HEP_DISPATCH}"]  # unknown host iface: not ours
    assert d.chains["filter-FORWARD"].base == ("filter", "forward", 0, "accept")
    assert d.chains["raw-PREROUTING"].base == ("filter", "prerouting", -300, "accept")
    assert d.chains["nat-POSTROUTING"].base == ("nat", "postrouting", 100, "accept")
    assert 'iifname "cali*" jump cali-from-wl-dispatch' in rules(d, "filter-FORWARD")
    assert 'iifname "cali*" goto cali-wl-to-host' in rules(d, "filter-INPUT")
    assert rules(d, names.NAT_OUTGOING) == ["ip saddr @cali40masq-ipam-pools ip daddr != @cali40all-ipam-pools masquerade"]
    # Anti-spoofing: each local workload may send from its own address only.
    assert d.sets[names.WL_SOURCES[4]].elements == {'"caliweb" . 10.65.0.2', '"calidb" . 10.65.0.3', '"caliclient" . 10.65.0.4'}
    assert f'iifname "cali*" iifname . ip saddr != @{names.WL_SOURCES[4]} drop' in rules(d, "raw-PREROUTING")
    # No IPv6 workload: every IPv6 packet from a workload is spoofed, bar link-local ones.
    assert 'iifname "cali*" ip6 saddr != fe80::/10 ip6 saddr != :: meta nfproto ipv6 drop' in rules(d, "raw-PREROUTING")


def test_spoofing_allowed_prefixes_interface_prefixes_and_no_ipv6():
    felix = doc(
        "FelixConfiguration",
        "default",
        {"workloadSourceSpoofing": "Any", "interfacePrefix": "cali,tap", "ipv6Support": False},
    )
    spoofer = wep("spoof", "prod", "10.65.0.9/32", {"app": "x"})
    spoofer["spec"]["allowSpoofedSourcePrefixes"] = ["10.99.0.0/24"]
    _, d = render(felix, spoofer)
    assert {'"calispoof" . 10.65.0.9', '"calispoof" . 10.99.0.0/24'} <= d.sets[names.WL_SOURCES[4]].elements
    assert names.WL_SOURCES[6] not in d.sets
    forward = rules(d, "filter-FORWARD")
    assert forward[0] == "meta nfproto ipv6 accept"  # IPv6 off: not Calico's to filter
    assert 'iifname "tap*" jump cali-from-wl-dispatch' in forward
    assert not any("ip6" in r for c in d.chains.values() for r in c.rules)


def test_host_endpoints_failsafe_forward_untracked_and_pre_dnat():
    heps = [
        doc("HostEndpoint", "node1-eth0", {"node": "node1", "interfaceName": "eth0", "expectedIPs": ["198.51.100.2"]}, labels={"host": "yes"}),
        doc("HostEndpoint", "node1-all", {"node": "node1", "interfaceName": "*"}, labels={"all": "yes"}),
    ]
    policies = [
        doc("GlobalNetworkPolicy", "host-in", {"selector": "host == 'yes'", "ingress": [{"action": "Deny", "protocol": "TCP"}]}),
        doc(
            "GlobalNetworkPolicy",
            "fwd",
            {"selector": "host == 'yes'", "applyOnForward": True, "egress": [{"action": "Allow"}], "types": ["Egress"]},
        ),
        doc(
            "GlobalNetworkPolicy",
            "raw",
            {"selector": "host == 'yes'", "doNotTrack": True, "applyOnForward": True, "ingress": [{"action": "Deny", "protocol": "UDP"}]},
        ),
        doc(
            "GlobalNetworkPolicy",
            "dnat",
            {"selector": "host == 'yes'", "preDNAT": True, "applyOnForward": True, "ingress": [{"action": "Deny", "protocol": "SCTP"}]},
        ),
    ]
    opts = Options(deny_action="reject", failsafe_inbound=["22", "tcp:10.0.0.0/8:6443"])
    _, d = render(*heps, *policies, options=opts)
    fh = rules(d, "cali-fh-eth0")
    assert fh[:4] == [*CONNTRACK, CLEAR_MARKS, "jump cali-failsafe-in"]
    assert fh[-1] == "reject"
    assert rules(d, names.FAILSAFE_IN) == ["meta l4proto 6 th dport 22 accept", "ip saddr 10.0.0.0/8 meta l4proto 6 th dport 6443 accept"]
    assert "meta l4proto 17 th dport 53 accept" in rules(d, names.FAILSAFE_OUT)  # Felix's default outbound ports
    assert dict(d.maps[names.FROM_HEP_DISPATCH].elements) == {'"eth0"': "goto cali-fh-eth0"}
    # interfaceName "*": every non-workload interface without a host endpoint of its own.
    assert rules(d, names.FROM_HEP_DISPATCH)[-1] == 'iifname != "cali*" goto cali-fh-any-interface-at-all'
    assert dict(d.maps[names.TO_HEP_FORWARD].elements)['"eth0"'] == "goto cali-thfw-eth0"
    assert rules(d, "cali-fhfw-eth0") == []  # no forward ingress policy: forwarded traffic untouched
    raw = rules(d, "raw-cali-fh-eth0")
    assert "jump cali-failsafe-in" in raw and "meta mark & 0x00010000 != 0 notrack return" in raw
    assert rules(d, PI("ingress", "default", "raw")) == ["meta l4proto 17 drop"]  # never reject before filter
    assert dict(d.maps[names.MANGLE_FROM_HEP].elements) == {'"eth0"': "goto mangle-cali-fh-eth0"}
    assert rules(d, PI("ingress", "default", "dnat")) == ["meta l4proto 132 drop"]


# --- names ----------------------------------------------------------------------------


def test_names_follow_felix():
    assert names.set_name("s:qMt7iLlGDhvLnCjM0l9nzxbQKTP0Z0CPlpqQ5A", 4) == "cali40s-qMt7iLlGDhvLnCjM0l9nzxb"
    assert names.set_name("masq-ipam-pools", 6) == "cali60masq-ipam-pools"
    assert names.profile_chain("ingress", "kns.default") == "cali-pri-kns.default"
    long = names.policy_chain("egress", "default", "a-namespace/a-rather-long-policy-name")
    assert long.startswith("cali-po-_") and len(long) == 28
    assert names.workload_chain("egress", "cali12345678901") == "cali-fw-cali12345678901"
    assert names.host_chain("ingress", "eth0", "untracked") == "raw-cali-fh-eth0"
    odd = names.profile_chain("ingress", "weird name")  # not an nft identifier: hashed
    assert " " not in odd and len(odd) == 28


# --- transactions ---------------------------------------------------------------------


def _desired(*docs, renderer=None):
    model = compile(state_of(*docs))
    return (renderer or Renderer()).render(model, effective(model, None))


WEB_POLICY = {"selector": "app == 'web'", "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "app == 'client'"}, "destination": {"ports": [80]}}]}


def test_plan_creates_the_whole_table_then_only_what_changed():
    r = Renderer()
    first = _desired(np("web-in", WEB_POLICY), renderer=r)
    created = plan(first, None)
    assert created.lines == (f"nft table inet calico created: {len(first.chains)} chains, {len(first.sets)} sets, 9 maps",)
    assert created.text.startswith("add table inet calico\n")
    assert plan(first, first.state).empty

    changed = json.loads(json.dumps(WEB_POLICY))
    changed["ingress"][0]["destination"]["ports"] = [8080]
    second = _desired(np("web-in", changed), renderer=r)
    step = plan(second, first.state, first.state)
    chain = PI("ingress", "default", "prod/web-in")
    assert step.lines == (f"nft chain {chain} updated (1 rules)",)
    body = step.text.splitlines()
    assert body[0] == f"flush chain inet calico {chain}"
    assert len(body) == 2 and body[1].startswith(f"add rule inet calico {chain} ") and "th dport 8080" in body[1]


def test_plan_set_elements_retyping_deletions_and_repairs():
    r = Renderer()
    first = _desired(np("web-in", WEB_POLICY), renderer=r)
    [client_set] = sel_set(first, "10.65.0.4")
    # A second client appears: one element added; the policy chain is untouched.
    more = _desired(np("web-in", WEB_POLICY), wep("client2", "prod", "10.65.0.5/32", {"app": "client"}), renderer=r)
    step = plan(more, first.state, first.state)
    assert f"add element inet calico {client_set} {{ 10.65.0.5 }}" in step.text
    assert not any(line.startswith(("flush", "delete")) for line in step.text.splitlines())
    # A network set joins: the set must become an interval set, so it is made again and
    # the chains that use it are flushed first and refilled after.
    netset = doc("NetworkSet", "office", {"nets": ["192.0.2.0/24"]}, "prod", {"app": "client"})
    wider = _desired(np("web-in", WEB_POLICY), netset, renderer=r)
    step = plan(wider, first.state, first.state)
    lines = step.text.splitlines()
    chain = PI("ingress", "default", "prod/web-in")
    flush, delete = lines.index(f"flush chain inet calico {chain}"), lines.index(f"delete set inet calico {client_set}")
    add = lines.index(f"add set inet calico {client_set} {{ type ipv4_addr; flags interval; }}")
    refill = next(i for i, line in enumerate(lines) if line.startswith(f"add rule inet calico {chain} "))
    assert flush < delete < add < refill
    # The policy goes: its chain is flushed and deleted after the endpoint chain stops
    # jumping to it; its sets go last.
    gone = _desired(renderer=r)
    step = plan(gone, first.state, first.state)
    lines = step.text.splitlines()
    assert lines.index(f"flush chain inet calico {WEB_IN}") < lines.index(f"delete chain inet calico {chain}")
    assert lines[-1] == f"delete set inet calico {client_set}"
    assert f"nft chain {chain} deleted" in step.lines
    # What the kernel lost behind our back is reported as repaired.
    broken = parse_table(_as_json(first, drop_chain=chain, drop_element=(client_set, "10.65.1.9")), "inet", "calico")
    step = plan(first, broken, first.state)
    assert f"nft chain {chain} added (1 rules) (repaired: it was missing)" in step.lines
    assert f"nft set {client_set}: +1 -0 elements (repaired)" in step.lines


def _as_json(desired, drop_chain=None, drop_element=None):
    """``nft -j list table`` output for a desired table, as the kernel would print it."""
    items = [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": "calico", "handle": 1}}]
    for name, st in desired.sets.items():
        elems = []
        for e in sorted(st.elements):
            if drop_element == (name, e):
                continue
            if st.type[0] == "ifname":
                iface, addr = e.split(" . ")
                elems.append({"concat": [iface.strip('"'), addr]})
            elif " . " in e:
                addr, proto, port = e.split(" . ")
                elems.append({"concat": [addr, {"6": "tcp", "17": "udp"}.get(proto, int(proto)), int(port)]})
            elif "/" in e:
                addr, length = e.split("/")
                elems.append({"prefix": {"addr": addr, "len": int(length)}})
            else:
                elems.append(e)
        obj = {"family": "inet", "name": name, "table": "calico", "type": st.type[0] if len(st.type) == 1 else list(st.type), "elem": elems}
        if st.flags:
            obj["flags"] = sorted(st.flags)
        items.append({"set": obj})
    for name, ms in desired.maps.items():
        elem = [[k.strip('"'), {v.split()[0]: {"target": v.split()[1]}}] for k, v in ms.elements.items()]
        items.append({"map": {"family": "inet", "name": name, "table": "calico", "type": "ifname", "map": "verdict", "elem": elem}})
    for name, chain in desired.chains.items():
        if name == drop_chain:
            continue
        obj = {"family": "inet", "table": "calico", "name": name}
        if chain.base:
            obj.update(type=chain.base[0], hook=chain.base[1], prio=chain.base[2], policy=chain.base[3])
        items.append({"chain": obj})
        for comment in chain.comments:
            items.append({"rule": {"family": "inet", "table": "calico", "chain": name, "comment": comment, "expr": []}})
    items.append({"table": {"family": "inet", "name": "filter", "handle": 2}})  # another table: ignored
    items.append({"chain": {"family": "inet", "table": "filter", "name": "input"}})
    return {"nftables": items}


def test_read_back_parser_gives_the_desired_state_back():
    _, d = render(np("web-in", WEB_POLICY))
    back = parse_table(_as_json(d), "inet", "calico")
    assert back.chains == d.state.chains
    assert back.sets == d.state.sets
    assert back.maps == d.state.maps
    assert "input" not in back.chains


# --- options --------------------------------------------------------------------------


def _bind(table: str):
    config = cfg.parse(f'[policy]\ntype = "nftables"\n[policy.nftables]\n{table}\n')

    def installed(slot):
        return {"policy": ["nftables"], "datastore": ["etcd"], "ipam": ["calico-ipam"], "routing": ["bird"]}[slot]

    plugin = NftablesPolicy()
    return cfg.bind_plugins(config, installed, lambda slot, name: plugin.pycalico_config_schema(slot=slot, name=name), "calico.toml")


def test_options_table_is_checked_with_toml_paths():
    bound = _bind('deny_action = "reject"\nfailsafe_outbound = []\nendpoint_to_host_action = "return"')
    assert bound.policy.options == Options(deny_action="reject", failsafe_outbound=(), endpoint_to_host_action="return")
    assert bound.policy.options.failsafe("outbound") == ()
    assert bound.policy.options.failsafe("inbound") is None  # from FelixConfiguration, else Felix's defaults
    with pytest.raises(cfg.ConfigError) as err:
        _bind('deny_action = "rejct"')
    assert "calico.toml: policy.nftables.deny_action: must be one of 'drop', 'reject', got 'rejct'" in str(err.value)
    with pytest.raises(cfg.ConfigError) as err:
        _bind('failsafe_inbound = ["tcp:22", "icmp:8"]')
    assert "policy.nftables.failsafe_inbound[1]: 'icmp:8' is not [<tcp|udp|sctp>:[<net>:]]<port>" in str(err.value)
    with pytest.raises(cfg.ConfigError) as err:
        _bind("refresh_secs = 5")
    assert "did you mean 'refresh_seconds'?" in str(err.value)


# --- nft -c: the kernel's own check, in a namespace of our own --------------------------


def _root_inodes() -> set[int]:
    found = {0xEFFFFFF9, os.stat("/proc/self/ns/net").st_ino}  # the initial namespace, and ours
    try:
        found.add(os.stat("/proc/1/ns/net").st_ino)
    except PermissionError:
        pass
    return found


@pytest.fixture
def scratch_netns():
    ok, why = netns.available()
    if not ok:
        pytest.skip(why)
    name = f"pcnftu{os.getpid()}"
    netns.add(name)
    try:
        assert os.stat(f"/run/netns/{name}").st_ino not in _root_inodes()
        yield name
    finally:
        netns.delete(name)


def nft_check(ns: str, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "-c", "-f", "-"], input=script, capture_output=True, text=True)


@pytest.mark.lab
def test_nft_check_accepts_every_rendered_kind(scratch_netns):
    tier = doc("Tier", "security", {"order": 100, "defaultAction": "Pass"})
    heps = [doc("HostEndpoint", "node1-eth0", {"node": "node1", "interfaceName": "eth0"}, labels={"host": "yes"})]
    six = wep("six", "prod", "fd00::6/128", {"app": "six"}, ports=[("http", 80)])
    netset = doc("GlobalNetworkSet", "office", {"nets": ["192.0.2.0/24", "2001:db8::/64"]}, labels={"app": "client"})
    everything = {
        "selector": "all()",
        "ingress": [
            {"action": "Allow", "protocol": "TCP", "source": {"selector": "app == 'client'", "ports": ["http"]}, "destination": {"ports": [80, "1000:2000", "http"], "notPorts": [81]}},
            {"action": "Log", "source": {"nets": ["10.0.0.0/8", "11.0.0.0/8"]}, "destination": {"ports": [1, 2]}, "protocol": "UDP"},
            {"action": "Deny", "protocol": "ICMP", "notICMP": {"type": 8, "code": 0}},
            {"action": "Allow", "protocol": "ICMPv6", "icmp": {"type": 128, "code": 0}},
            {"action": "Pass", "notProtocol": "SCTP", "source": {"notSelector": "app == 'db'", "notNets": ["10.9.0.0/16"]}},
            {"action": "Deny", "destination": {"notPorts": ["http"]}, "protocol": "TCP"},
            {"action": "Allow", "source": {"nets": ["fd00::/64"]}},
        ],
        "egress": [{"action": "Allow", "destination": {"selector": "app == 'six'"}}],
    }
    policies = [
        doc("GlobalNetworkPolicy", "security.all", {"tier": "security", "selector": "all()", **{k: v for k, v in everything.items() if k != "selector"}}),
        doc("GlobalNetworkPolicy", "raw", {"selector": "host == 'yes'", "doNotTrack": True, "applyOnForward": True, "ingress": [{"action": "Deny", "protocol": "UDP"}]}),
        doc("GlobalNetworkPolicy", "dnat", {"selector": "host == 'yes'", "preDNAT": True, "applyOnForward": True, "ingress": [{"action": "Allow"}]}),
        doc("GlobalNetworkPolicy", "fwd", {"selector": "host == 'yes'", "applyOnForward": True, "ingress": [{"action": "Allow"}]}),
        np("prod-all", everything),
    ]
    _, d = render(tier, *heps, six, netset, *policies, options=Options(deny_action="reject"))
    res = nft_check(scratch_netns, "\n".join(full(d)) + "\n")
    assert res.returncode == 0, res.stderr
    # The incremental scripts too: from this table to one without the policies.
    gone = _desired()
    step = plan(gone, d.state, d.state)
    res = nft_check(scratch_netns, "\n".join(full(d)) + "\n" + step.text)
    assert res.returncode == 0, res.stderr
    assert subprocess.run(["ip", "netns", "exec", scratch_netns, "nft", "list", "ruleset"], capture_output=True, text=True).stdout == ""


@pytest.mark.lab
def test_the_table_read_back_from_the_kernel_equals_the_rendered_state(scratch_netns):
    netset = doc("GlobalNetworkSet", "office", {"nets": ["192.0.2.0/24"]}, labels={"app": "client"})
    six = wep("six", "prod", "fd00::6/128", {"app": "client"}, ports=[("http", 80)])
    spec = {"selector": "all()", "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "app == 'client'"}, "destination": {"ports": ["http"]}}]}
    model, d = render(np("p", spec), netset, six)
    plugin = NftablesPolicy()
    result = {}

    def run():
        tid = threading.get_native_id()
        assert os.stat(f"/proc/self/task/{tid}/ns/net").st_ino not in _root_inodes()
        result["lines"] = plugin.reconcile_model(model)
        result["back"] = plugin.dataplane().nft.read()

    netns.run_in_netns(scratch_netns, run, timeout=60)
    assert result["lines"][0].startswith("nft table inet calico created")
    back = result["back"]
    assert back.sets == d.state.sets
    assert back.maps == d.state.maps
    assert back.chains == d.state.chains


# --- the dataplane loop, with a fake nft ------------------------------------------------


class FakeNft:
    """Stands in for :class:`~pycalico.plugins.policy.nftables.kernel.Nft`: remembers the
    table it was given, fails the first ``failures`` scripts, counts generations."""

    def __init__(self, failures=0):
        self.table = None
        self.failures = failures
        self.scripts = []
        self.generation = 7

    def read(self):
        return self.table

    def apply(self, script):
        from pycalico.plugins.policy.nftables.kernel import NftError

        self.scripts.append(script)
        if self.failures:
            self.failures -= 1
            raise NftError("nft -f failed: Error: Could not process rule: Device or resource busy", script)
        self.generation += 1


def test_the_dataplane_reads_back_only_when_the_generation_moved_and_retries(monkeypatch):
    from pycalico.plugins.policy.nftables import dataplane as dp_module

    fake = FakeNft()
    monkeypatch.setattr(dp_module, "generation", lambda: fake.generation)
    dp = dp_module.Dataplane(fake)
    model = compile(state_of(np("web-in", WEB_POLICY)))
    eff = effective(model, None)
    assert dp.apply(model, eff)[0].startswith("nft table inet calico created")
    fake.table = dp.written  # what the kernel now holds
    assert dp.reads == 1 and dp.apply(model, eff) == [] and dp.reads == 1  # generation unchanged: no read
    fake.generation += 1  # somebody else committed something
    assert dp.apply(model, eff) == [] and dp.reads == 2
    # A failed transaction: read back and try again; a second failure writes everything.
    changed = json.loads(json.dumps(WEB_POLICY))
    changed["ingress"][0]["destination"]["ports"] = [81]
    model = compile(state_of(np("web-in", changed)))
    fake.failures = 2
    before = len(fake.scripts)
    lines = dp.apply(model, eff)
    assert lines == [f"nft table inet calico rebuilt (an incremental update failed: nft -f failed: Error: Could not "
                     f"process rule: Device or resource busy): {len(dp.written.chains)} chains, 4 sets, 9 maps"]
    assert fake.scripts[before].startswith("flush chain") and fake.scripts[before + 1] == fake.scripts[before]
    assert fake.scripts[-1].startswith("delete table inet calico\nadd table inet calico\n")
    assert dp.reads == 4 and dp.generation is not None  # read back after each failure
    # Three failures: the pass raises (the agent's loop retries on its next pass).
    fake.failures = 3
    fake.table = None
    with pytest.raises(Exception, match="Device or resource busy"):
        dp.apply(compile(state_of()), eff)
    assert dp.generation is None  # the next pass reads the table back first


# --- pass after pass --------------------------------------------------------------------


def _table(desired):
    return (
        {n: (c.base, c.rules) for n, c in desired.chains.items()},
        dict(desired.sets),
        {n: dict(m.elements) for n, m in desired.maps.items()},
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rendering_only_the_changes_gives_the_whole_table_and_the_same_transaction(seed):
    """Along a random walk of changes, the renderer fed each pass's model (and its
    changes) gives the table a fresh renderer gives, and planning only what it touched
    gives the transaction a full comparison gives."""
    compiler, renderer = Compiler(), Renderer()
    before = None
    incremental = 0
    for step, what, state in walk(seed):
        model = compiler.compile(state)
        eff = effective(model, None)
        got = renderer.render(model, eff)
        want = Renderer().render(model, eff)
        assert _table(got) == _table(want), (step, what)
        if before is not None and got.touched is not None:
            incremental += 1
            assert got.touched.since == before.serial
            only = plan(got, before.state, before.state, only_touched=True)
            every = plan(got, before.state, before.state)
            assert sorted(only.text.splitlines()) == sorted(every.text.splitlines()), (step, what)
            assert sorted(only.lines) == sorted(every.lines), (step, what)
        before = got
    assert incremental > 50  # most passes rendered only the changes
