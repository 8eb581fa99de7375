"""pycalico.plugins.policy.iptables: names, hashes and rule text rendered from a compiled model.

Where Felix's own output is known, the test holds ours to it: chain names from Felix's unit
and FV tests, rule hashes from an ``iptables-save`` of a running calico-node (failsafe
chains, the start of host endpoint chains).
"""

import pytest

from pycalico.core.config import ConfigError, parse
from pycalico.core.plugins import Plugins, Registry
from pycalico.core.policy import Compiler, compile
from pycalico.core.policy.ids import length_limited_id
from pycalico.plugins.policy.iptables import Options, plugin
from pycalico.plugins.policy.iptables import chains as c
from pycalico.plugins.policy.iptables.chains import Chain, Rule
from pycalico.plugins.policy.iptables.diff import plan, plan_table
from pycalico.plugins.policy.iptables.endpoints import dispatch_chains, in_iface
from pycalico.plugins.policy.iptables.ipsets import plan_sets
from pycalico.plugins.policy.iptables.kernel import SetState, TableState
from pycalico.plugins.policy.iptables.ruleset import Renderer, policy_chain_name, render_config
from pycalico.plugins.policy.iptables.static import failsafe_chains
from tests.policy_world import policy_yaml, walk, yaml_state

BASE = """
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.prod}
spec:
  labelsToApply: {pcns.projectcalico.org/name: prod, pcns.env: prod}
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node1-k8s-web-eth0, namespace: prod, labels: {app: web}}
spec:
  node: node1
  orchestrator: k8s
  pod: web
  endpoint: eth0
  interfaceName: caliweb0
  ipNetworks: [10.65.0.2/32, "fd00::2/128"]
  profiles: [kns.prod]
  ports: [{name: http, port: 8080, protocol: TCP}]
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool}
spec: {cidr: 10.65.0.0/16, natOutgoing: true}
""" + "".join(
    f"""---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: {node}-k8s-{pod}-eth0, namespace: prod, labels: {{app: {app}}}}}
spec: {{node: {node}, orchestrator: k8s, pod: {pod}, endpoint: eth0, interfaceName: cali{pod}0,
       ipNetworks: [{ip}/32], profiles: [kns.prod]}}
"""
    for node, pod, app, ip in (("node1", "db", "db", "10.65.0.3"), ("node2", "far", "client", "10.65.1.9"))
)


def state(text="", node="node1"):
    return yaml_state(BASE + ("---\n" + text if text.strip() else ""), node)


def gnp(name, ingress="", egress="", selector="app == 'web'", extra=""):
    return policy_yaml(name, selector, ingress=ingress, egress=egress, extra=extra)


def render(text="", version=4, options=None, node="node1"):
    model = compile(state(text, node))
    return model, Renderer().render(model, render_config(model, options or Options()), (version,))[version]


def body(chain):
    """The rules without the hash comment."""
    return [r.body for r in chain.rules]


def policy_rules(text, name, direction="ingress", version=4, options=None):
    model, rs = render(text, version, options)
    policy = model.policies[name]
    chain = rs.tables["filter"].chains[policy_chain_name(policy, direction)]
    return body(chain), rs


# --- names ------------------------------------------------------------------------------


def test_length_limited_ids_match_felix_hashutils_tests():
    assert length_limited_id("felix", "1234", 10) == "felix1234"
    assert length_limited_id("felix", "123456", 11) == "felix123456"
    assert length_limited_id("felix", "_2345", 10) == "felix_kMQI"
    assert length_limited_id("felix", "12345678910", 13) == "felix_Y2QCZIS"


def test_policy_chain_names_match_felix():
    # felix/rules/policy_test.go: a name too long for 28 characters is hashed.
    assert c.chain_name("cali-pi-", "long-policy-name-that-gets-hashed") == "cali-pi-_ffOMcf6pikpiZ6hgKcW"
    # Felix FV (tiered policy names): v1 CRDs name it default.policy-1, the v3 API policy-1.
    assert c.chain_name("cali-pi-", "default/default.policy-1") == "cali-pi-_l_CMLPBmpkyZIIwB62k"
    model, rs = render(gnp("policy-1", ingress="[{action: Allow}]"))
    assert policy_chain_name(model.policies["policy-1"], "ingress") == "cali-pi-default/policy-1"
    assert "cali-po-default/policy-1" not in rs.tables["filter"].chains  # no egress rules: not referenced


def test_network_policy_and_profile_chain_names():
    np = """apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: prod}
spec: {selector: app == 'web', ingress: [{action: Allow}]}
---
"""
    model, rs = render(np)
    name = policy_chain_name(model.policies["prod/allow-web"], "ingress")
    assert name == c.chain_name("cali-pi-", "default/prod/allow-web")
    assert len(name) == 28 and name.startswith("cali-pi-_")
    assert name in rs.tables["filter"].chains
    assert {"cali-pri-kns.prod", "cali-pro-kns.prod"} <= set(rs.tables["filter"].chains)
    assert c.chain_name(c.HOST_TO, c.ALL_INTERFACES) == "cali-th-any-interface-at-all"
    assert c.chain_name(c.HOST_TO_FORWARD, c.ALL_INTERFACES).startswith("cali-thfw-_")


# --- hashes (from a calico-node's iptables-save) ----------------------------------------------

FELIX_FAILSAFE_IN = ["wWFQM43tJU7wwnFZ", "LwNV--R8MjeUYacw", "QOO5NUOqOSS1_Iw0", "cwZWoBSwVeIAZmVN",
                     "7FbNXT91kugE_upR", "8Ftbkk2dRH2eEeq1", "-JoRSaAQZPJAegMo", "PUKij4Rn9njHfVTi",
                     "vSprVE-4rient0wc"]
FELIX_FAILSAFE_OUT = ["82hjfji-wChFhAqL", "TNM3RfEjbNr72hgH", "ycxKitIl4u3dK0HR", "hxjEWyxdkXXkdvut",
                      "cA_GLtruuvG88KiO", "ALz4foMyfue7vaqK", "zvCXe1uOiQ8adzhn", "Lppo9JuKR7AyZoWQ",
                      "EoOkKdH0fekirfk8"]


def test_failsafe_rule_hashes_are_felix_ones():
    model = compile(state())
    cfg = render_config(model, Options()).static
    fin, fout = failsafe_chains(cfg, 4, "filter")
    assert list(fin.hashes) == FELIX_FAILSAFE_IN
    assert list(fout.hashes) == FELIX_FAILSAFE_OUT
    assert fin.line(0) == '-A cali-failsafe-in -m comment --comment "cali:wWFQM43tJU7wwnFZ" -p tcp ' \
                          "-m multiport --destination-ports 22 --jump ACCEPT"


def test_host_endpoint_chain_starts_hash_like_felix():
    hep = """apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-all, labels: {host: "true"}}
spec: {node: node1, interfaceName: "*"}
---
"""
    _, rs = render(hep)
    th = rs.tables["filter"].chains["cali-th-any-interface-at-all"]
    fh = rs.tables["filter"].chains["cali-fh-any-interface-at-all"]
    assert th.hashes[2] == "Pk4AU-xuUwtwrLN6" and th.rules[2].body == "--jump cali-failsafe-out"
    assert fh.hashes[2] == "NnqjZhu9yccY4C7-"
    # The mangle egress chain (allow = RETURN, so the accept bit is set first).
    assert rs.tables["mangle"].chains["cali-th-any-interface-at-all"].hashes[3] == "isLh7I8mMajLdhSv"
    # A "*" host endpoint is the default of the dispatch chains; traffic to workloads skips it.
    to_host = body(rs.tables["filter"].chains[c.TO_HOST_DISPATCH])
    assert to_host[0].endswith("--out-interface cali+ --jump RETURN")
    assert to_host[-1] == "--goto cali-th-any-interface-at-all"


def test_hashes_chain_the_previous_rule():
    a = Chain("cali-x", [Rule((), c.ACCEPT), Rule((), c.DROP)])
    b = Chain("cali-x", [Rule((), c.DROP), Rule((), c.DROP)])
    other = Chain("cali-y", [Rule((), c.ACCEPT), Rule((), c.DROP)])
    assert a.hashes[1] != b.hashes[1]  # same rule, different rule before it
    assert a.hashes[0] != other.hashes[0]  # same rule, other chain
    assert all(len(h) == 16 for h in a.hashes)


# --- policy rules -------------------------------------------------------------------------


def test_allow_with_ports_named_port_and_selector():
    rules, rs = policy_rules(
        gnp("web", ingress="[{action: Allow, protocol: TCP, source: {selector: app == 'db'},"
                           " destination: {ports: [80, '1000:2000', http]}}]"),
        "web",
    )
    sel = [n for n in rs.ipsets if n.startswith("cali40s:")][0]
    named = [n for n in rs.ipsets if n.startswith("cali40n:")][0]
    assert rules == [
        '-m comment --comment "Policy default/web ingress" --jump MARK --set-mark 0x0/0xc0000',
        "-p tcp -m multiport --destination-ports 80,1000:2000 --jump MARK --set-mark 0x40000/0x40000",
        f"-m set --match-set {named} dst,dst --jump MARK --set-mark 0x40000/0x40000",
        f"-p tcp -m set --match-set {sel} src -m mark --mark 0x40000/0x40000 --jump MARK --set-mark 0x10000/0x10000",
    ]
    assert rs.ipsets[sel].members == {"10.65.0.3"}
    assert rs.ipsets[named].members == {"10.65.0.2,tcp:8080"} and rs.ipsets[named].set_type == "hash:ip,port"


def test_single_port_range_needs_no_block_and_more_than_15_slots_split():
    rules, _ = policy_rules(gnp("p", ingress="[{action: Allow, protocol: UDP, destination: {ports: ['5000:5010']}}]"), "p")
    assert rules[0].endswith("-p udp -m multiport --destination-ports 5000:5010 --jump MARK --set-mark 0x10000/0x10000")
    ports = ", ".join(str(p) for p in range(1, 20))
    rules, _ = policy_rules(gnp("p", ingress=f"[{{action: Allow, protocol: TCP, destination: {{ports: [{ports}]}}}}]"), "p")
    assert "--destination-ports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 --jump MARK" in rules[1]
    assert "--destination-ports 16,17,18,19 --jump MARK" in rules[2]


def test_nets_and_not_nets():
    rules, _ = policy_rules(gnp("p", ingress="[{action: Deny, source: {nets: [10.1.0.0/16], notNets: [10.1.2.0/24]}}]"), "p")
    # Two CIDR matches on one side: the negated one becomes a block.
    assert rules == [
        '-m comment --comment "Policy default/p ingress" --jump MARK --set-mark 0x40000/0xc0000',
        "--source 10.1.2.0/24 --jump MARK --set-mark 0x0/0x40000",
        "--source 10.1.0.0/16 -m mark --mark 0x40000/0x40000 --jump DROP",
    ]
    rules, _ = policy_rules(gnp("p", ingress="[{action: Deny, destination: {notNets: [10.9.0.0/16]}}]"), "p")
    assert rules[0].endswith("! --destination 10.9.0.0/16 --jump DROP")
    rules, _ = policy_rules(gnp("p", ingress="[{action: Allow, source: {nets: [10.1.0.0/16, 10.2.0.0/16]}}]"), "p")
    assert [r.split(" --jump")[0] for r in rules[1:3]] == ["--source 10.1.0.0/16", "--source 10.2.0.0/16"]
    assert rules[3] == "-m mark --mark 0x40000/0x40000 --jump MARK --set-mark 0x10000/0x10000"


def test_rules_of_the_other_ip_version_are_left_out():
    text = gnp("p", ingress="[{action: Allow, source: {nets: [10.1.0.0/16]}}, {action: Deny, source: {nets: ['fd00::/8']}}]")
    v4, _ = policy_rules(text, "p", version=4)
    v6, _ = policy_rules(text, "p", version=6)
    assert any("10.1.0.0/16" in r for r in v4) and not any("fd00" in r for r in v4)
    assert v6[0].endswith("--source fd00::/8 --jump DROP") and not any("10.1" in r for r in v6)
    # "not everything" is dropped, as Felix does.
    v4, _ = policy_rules(gnp("p", ingress="[{action: Deny, source: {notNets: [0.0.0.0/0]}}]"), "p")
    assert v4 == ['-m comment --comment "Policy default/p ingress"']


def test_not_selector_icmp_and_protocols():
    rules, rs = policy_rules(
        gnp("p", ingress="[{action: Allow, protocol: ICMP, icmp: {type: 8, code: 0}, source: {notSelector: app == 'db'}},"
                         " {action: Deny, protocol: 47}, {action: Allow, notProtocol: UDP},"
                         " {action: Allow, protocol: ICMP, notICMP: {type: 3}}]"),
        "p",
    )
    not_sel = [n for n in rs.ipsets if n.startswith("cali40s:")][0]
    assert rules[0].endswith(f"-p icmp -m icmp --icmp-type 8/0 -m set ! --match-set {not_sel} src "
                             "--jump MARK --set-mark 0x10000/0x10000")
    assert "-p 47 --jump DROP" in rules
    assert "! -p udp --jump MARK --set-mark 0x10000/0x10000" in rules
    assert "-p icmp -m icmp ! --icmp-type 3 --jump MARK --set-mark 0x10000/0x10000" in rules
    v6, _ = policy_rules(gnp("p", ingress="[{action: Allow, protocol: ICMPv6, icmp: {type: 128}}]"), "p", version=6)
    assert v6[0].endswith("-p icmpv6 -m icmp6 --icmpv6-type 128 --jump MARK --set-mark 0x10000/0x10000")


def test_actions_log_pass_deny_and_reject():
    text = gnp("p", ingress="[{action: Log, protocol: TCP}, {action: Pass, protocol: UDP}, {action: Deny}]")
    rules, _ = policy_rules(text, "p")
    assert rules == [
        '-m comment --comment "Policy default/p ingress" -p tcp --jump LOG --log-prefix "calico-packet: " --log-level 5',
        "-p udp --jump MARK --set-mark 0x20000/0x20000",
        "-m mark --mark 0x20000/0x20000 --jump RETURN",
        "--jump DROP",
    ]
    rules, _ = policy_rules(text, "p", options=Options(deny_action="REJECT", log_prefix="%t-%n"))
    assert rules[-1] == "--jump REJECT"
    assert '--log-prefix "default-p: "' in rules[0]


def test_trailing_return_is_stripped_and_annotations_are_comments():
    rules, _ = policy_rules(gnp("p", egress="[{action: Allow, metadata: {annotations: {team: blue}}}]",
                                selector="app == 'web'"), "p", direction="egress")
    assert rules == ['-m comment --comment "team=blue" -m comment --comment "Policy default/p egress" '
                     "--jump MARK --set-mark 0x10000/0x10000"]


# --- endpoint chains --------------------------------------------------------------------------

TIERED = """apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: platform}
spec: {order: 200, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: sec}
spec: {tier: security, order: 1, selector: app == 'web', ingress: [{action: Pass}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: plat}
spec: {tier: platform, order: 1, selector: app == 'web', ingress: [{action: Deny, protocol: UDP}]}
---
"""


def test_workload_chain_tiers_pass_end_of_tier_drop_profiles():
    _, rs = render(TIERED + gnp("web", ingress="[{action: Allow}]"))
    tw = body(rs.tables["filter"].chains["cali-tw-caliweb0"])
    pi = c.chain_name("cali-pi-", "security/sec")
    assert tw == [
        "-m conntrack --ctstate RELATED,ESTABLISHED --jump ACCEPT",
        "-m conntrack --ctstate INVALID --jump DROP",
        "--jump MARK --set-mark 0x0/0x30000",
        '-m comment --comment "Start of tier security" --jump MARK --set-mark 0x0/0x20000',
        f"-m mark --mark 0x0/0x20000 --jump {pi}",
        '-m comment --comment "Return if policy accepted" -m mark --mark 0x10000/0x10000 --jump RETURN',
        '-m comment --comment "Drop if no policies passed packet" -m mark --mark 0x0/0x20000 --jump DROP',
        '-m comment --comment "Start of tier platform" --jump MARK --set-mark 0x0/0x20000',
        f"-m mark --mark 0x0/0x20000 --jump {c.chain_name('cali-pi-', 'platform/plat')}",
        '-m comment --comment "Return if policy accepted" -m mark --mark 0x10000/0x10000 --jump RETURN',
        # platform's default action is Pass: no drop at its end
        '-m comment --comment "Start of tier default" --jump MARK --set-mark 0x0/0x20000',
        "-m mark --mark 0x0/0x20000 --jump cali-pi-default/web",
        '-m comment --comment "Return if policy accepted" -m mark --mark 0x10000/0x10000 --jump RETURN',
        '-m comment --comment "Drop if no policies passed packet" -m mark --mark 0x0/0x20000 --jump DROP',
        "--jump cali-pri-kns.prod",
        '-m comment --comment "Return if profile accepted" -m mark --mark 0x10000/0x10000 --jump RETURN',
        '-m comment --comment "Drop if no profiles matched" --jump DROP',
    ]
    fw = body(rs.tables["filter"].chains["cali-fw-caliweb0"])
    assert '-m comment --comment "Drop VXLAN encapped packets originating in workloads" -p 17 ' \
           "-m multiport --destination-ports 4789 --jump DROP" in fw
    assert fw[-3:] == [
        "--jump cali-pro-kns.prod",
        '-m comment --comment "Return if profile accepted" -m mark --mark 0x10000/0x10000 --jump RETURN',
        '-m comment --comment "Drop if no profiles matched" --jump DROP',
    ]
    # Only the local endpoints get chains.
    assert "cali-tw-califar0" not in rs.tables["filter"].chains


def test_policies_sharing_a_selector_form_a_group():
    text = "".join(gnp(f"p{i}", ingress=f"[{{action: Allow, protocol: TCP, destination: {{ports: [{80 + i}]}}}}]",
                       extra=f"  order: {i}") for i in range(7))
    _, rs = render(text)
    chains = rs.tables["filter"].chains
    tw = body(chains["cali-tw-caliweb0"])
    group = [r.split("--jump ")[1] for r in tw if "--jump cali-gi-" in r]
    assert len(group) == 1 and len(group[0]) == 28
    g = body(chains[group[0]])
    assert g[0] == "--jump cali-pi-default/p0"
    assert g[1] == "-m mark --mark 0x0/0x30000 --jump cali-pi-default/p1"
    assert g[5] == '-m comment --comment "Return on verdict" -m mark ! --mark 0x0/0x30000 --jump RETURN'
    assert g[6] == "--jump cali-pi-default/p5"
    assert all(f"cali-pi-default/p{i}" in chains for i in range(7))


def test_dispatch_tree_and_unknown_interfaces():
    drop = (Rule((), c.DROP, ("Unknown interface",)),)
    out = dispatch_chains("cali-from-wl-dispatch", ["calia1", "calia2", "calib1"], in_iface, lambda n: c.goto("cali-fw-" + n), drop)
    by_name = {ch.name: body(ch) for ch in out}
    assert by_name["cali-from-wl-dispatch"] == [
        "--in-interface calia+ --goto cali-from-wl-dispatch-a",
        "--in-interface calib1 --goto cali-fw-calib1",
        '-m comment --comment "Unknown interface" --jump DROP',
    ]
    assert by_name["cali-from-wl-dispatch-a"] == [
        "--in-interface calia1 --goto cali-fw-calia1",
        "--in-interface calia2 --goto cali-fw-calia2",
        '-m comment --comment "Unknown interface" --jump DROP',
    ]
    _, rs = render()
    assert body(rs.tables["filter"].chains["cali-to-wl-dispatch"]) == [
        "--out-interface calidb0 --goto cali-tw-calidb0",
        "--out-interface caliweb0 --goto cali-tw-caliweb0",
        '-m comment --comment "Unknown interface" --jump DROP',
    ]


# --- static chains and hooks -------------------------------------------------------------------


def test_hooks_nat_outgoing_and_anti_spoofing():
    model, rs = render()
    f = rs.tables["filter"]
    assert [r.body for r in f.inserts["FORWARD"].rules] == ["--jump cali-FORWARD"]
    assert [r.body for r in f.appends["FORWARD"].rules] == [
        '-m comment --comment "Policy explicitly accepted packet." -m mark --mark 0x10000/0x10000 --jump ACCEPT',
        "--jump MARK --set-mark 0x10000/0x10000",
    ]
    assert body(rs.tables["nat"].chains["cali-nat-outgoing"]) == [
        "-m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst --jump MASQUERADE"
    ]
    assert rs.ipsets["cali40masq-ipam-pools"].members == {"10.65.0.0/16"}
    raw = body(rs.tables["raw"].chains["cali-PREROUTING"])
    assert "--in-interface cali+ --jump MARK --set-mark 0x40000/0x40000" in raw
    assert "-m mark --mark 0x40000/0x40000 -m rpfilter --invert --validmark --jump DROP" in raw
    assert body(rs.tables["filter"].chains["cali-wl-to-host"])[-1] == \
        '-m comment --comment "Configured DefaultEndpointToHostAction" --jump ACCEPT'
    _, rs = render(options=Options(endpoint_to_host_action="DROP", chain_insert_mode="append"))
    assert body(rs.tables["filter"].chains["cali-wl-to-host"])[-1].endswith("--jump DROP")
    assert not rs.tables["filter"].inserts["INPUT"].rules
    assert [r.body for r in rs.tables["filter"].appends["INPUT"].rules] == ["--jump cali-INPUT"]
    # IPv6: no natOutgoing pool, so the chain is empty and no pool set is used.
    _, rs6 = render(version=6)
    assert body(rs6.tables["nat"].chains["cali-nat-outgoing"]) == []
    assert "-p 58 -m icmp6 --icmpv6-type 135 --jump ACCEPT" in body(rs6.tables["filter"].chains["cali-wl-to-host"])


def test_spoofable_prefixes_skip_rpf():
    text = """apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {workloadSourceSpoofing: Any}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node1-k8s-vm-eth0, namespace: prod}
spec: {node: node1, orchestrator: k8s, pod: vm, endpoint: eth0, interfaceName: calivm0,
       ipNetworks: [10.65.0.9/32], profiles: [kns.prod], allowSpoofedSourcePrefixes: [192.0.2.0/24]}
---
"""
    _, rs = render(text)
    assert body(rs.tables["raw"].chains["cali-rpf-skip"]) == ["--in-interface calivm0 --source 192.0.2.0/24 --jump ACCEPT"]


def test_failsafe_options_override_felix_configuration():
    _, rs = render(options=Options(failsafe_inbound=("tcp:22", "udp:161@10.0.0.0/8"), failsafe_outbound=()))
    assert body(rs.tables["filter"].chains["cali-failsafe-in"]) == [
        "-p tcp -m multiport --destination-ports 22 --jump ACCEPT",
        "-p udp -m multiport --destination-ports 161 --source 10.0.0.0/8 --jump ACCEPT",
    ]
    assert body(rs.tables["filter"].chains["cali-failsafe-out"]) == []


def test_a_changed_policy_re_renders_only_its_chain():
    r, compiler = Renderer(), Compiler()
    model = compiler.compile(state(gnp("a", ingress="[{action: Allow}]") + gnp("b", ingress="[{action: Deny}]", selector="app == 'db'")))
    cfg = render_config(model, Options())
    first = r.render(model, cfg, (4,))[4]
    model2 = compiler.compile(state(gnp("a", ingress="[{action: Allow}]") + gnp("b", ingress="[{action: Log}]", selector="app == 'db'")))
    second = r.render(model2, render_config(model2, Options()), (4,))[4]
    f1, f2 = first.tables["filter"].chains, second.tables["filter"].chains
    assert f1["cali-pi-default/a"] is f2["cali-pi-default/a"]
    assert f1["cali-pi-default/b"] != f2["cali-pi-default/b"]
    assert f1["cali-tw-calidb0"] is f2["cali-tw-calidb0"]
    assert second.touched.since == first.serial
    assert second.touched.chains["filter"] == {"cali-pi-default/b"} and not second.touched.sets


# --- options --------------------------------------------------------------------------------


def bind(table):
    config = parse(f'[policy]\ntype = "iptables"\n[policy.iptables]\n{table}\n')
    registry = Registry({"policy": {"iptables": plugin}}, installed=False)
    return Plugins.load(config, registry=registry, configure=False, slots=("policy",)).config.policy.options


def test_options_table():
    opts = bind('backend = "legacy"\nmark_mask = 0xff000000\nfailsafe_inbound = ["tcp:22"]\nrefresh_seconds = 0')
    assert opts == Options(backend="legacy", mark_mask=0xFF000000, failsafe_inbound=("tcp:22",), refresh_seconds=0)
    assert c.Marks.from_mask(opts.mark_mask) == c.Marks(0x1000000, 0x2000000, 0x4000000, 0x8000000)
    assert bind("") == Options()
    with pytest.raises(ConfigError) as err:
        bind('backend = "iptables"')
    assert "policy.iptables.backend: must be one of 'auto', 'nft', 'legacy'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        bind('failsafe_inbound = ["tcp:99999"]\nmark_mask = 7')
    text = str(err.value)
    assert "policy.iptables.failsafe_inbound[0]: 'tcp:99999' is not protocol:port" in text
    assert "policy.iptables.mark_mask: needs at least 4 bits set" in text


def test_reject_only_in_the_filter_table():
    text = """apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {host: "true"}}
spec: {node: node1, interfaceName: eth0}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: untracked}
spec: {selector: host == 'true', doNotTrack: true, applyOnForward: true, ingress: [{action: Deny, protocol: UDP}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: normal}
spec: {selector: host == 'true', ingress: [{action: Deny, protocol: UDP}]}
---
"""
    _, rs = render(text, options=Options(deny_action="REJECT"))
    raw = rs.tables["raw"].chains
    assert body(raw[c.chain_name("cali-pi-", "default/untracked")])[0].endswith("-p udp --jump DROP")
    assert body(raw["cali-fh-eth0"])[-2:] == [  # untracked: NOTRACK what policy allows, no drop at the end
        "-m mark --mark 0x10000/0x10000 --jump NOTRACK",
        '-m comment --comment "Return if policy accepted" -m mark --mark 0x10000/0x10000 --jump RETURN',
    ]
    assert body(rs.tables["filter"].chains["cali-pi-default/normal"])[0].endswith("-p udp --jump REJECT")
    assert body(rs.tables["filter"].chains["cali-fh-eth0"])[-1].endswith("--jump REJECT")
    assert body(rs.tables["mangle"].chains["cali-th-eth0"])[-1] == '-m comment --comment "Drop if no profiles matched" --jump DROP'
    assert "--in-interface eth0 --goto cali-fh-eth0" in body(raw[c.FROM_HOST_DISPATCH])


def _snapshot(rs):
    tables = {
        t: ({n: ch.hashes for n, ch in spec.chains.items()},
            {k: ch.hashes for k, ch in spec.inserts.items()},
            {k: ch.hashes for k, ch in spec.appends.items()})
        for t, spec in rs.tables.items()
    }
    return tables, {n: (s.set_type, s.family, s.members) for n, s in rs.ipsets.items()}


def _as_tables(rs):
    """What the kernel holds once ``rs`` is written, as the dataplane remembers it."""
    return {t: plan_table(t, rs.version, spec, TableState()).result for t, spec in rs.tables.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rendering_only_the_changes_gives_the_whole_ruleset_and_the_same_restore(seed):
    """Along a random walk of changes, the renderer fed each pass's model (and its changes)
    gives the rulesets a fresh renderer gives, and planning only what it touched gives the
    restore input and IP set changes a full comparison gives."""
    compiler, kept = Compiler(), Renderer()
    before = None
    incremental = 0
    for step, what, state in walk(seed):
        model = compiler.compile(state)
        cfg = render_config(model, Options())
        got = kept.render(model, cfg, (4, 6))
        want = Renderer().render(model, cfg, (4, 6))
        for v in (4, 6):
            assert _snapshot(got[v]) == _snapshot(want[v]), (step, what, v)
            if before is None or got[v].touched is None:
                continue
            incremental += 1
            assert got[v].touched.since == before[v].serial
            have = _as_tables(before[v])
            full, only = plan(got[v], have), plan(got[v], have, got[v].touched)
            assert [sorted(p.lines) for p in only] == [sorted(p.lines) for p in full], (step, what, v)
            sets = {n: SetState(n, d.set_type, d.family, d.maxelem, d.members) for n, d in before[v].ipsets.items()}
            names = got[v].touched.sets
            assert plan_sets(got[v].ipsets, sets, names).lines == plan_sets(got[v].ipsets, sets).lines, (step, what)
        before = got
    assert incremental > 100  # most passes rendered only the changes
