"""pycalico.core.policy: sets and their members, tier and policy order, the compiled model."""

import pytest

from pycalico.core.policy import compile, ids
from pycalico.core.policy.model import DEFAULT_FAILSAFE_INBOUND, DEFAULT_FAILSAFE_OUTBOUND, ProtoPort
from tests.policy_world import policy_yaml, yaml_state

BASE = """
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.web}
spec:
  labelsToApply: {pcns.team: blue, pcns.projectcalico.org/name: web, tier: from-profile}
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: ksa.web.api}
spec:
  labelsToApply: {pcsa.projectcalico.org/name: api, tier: from-second-profile, extra: 'yes'}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-k8s-api-eth0
  namespace: web
  labels: {app: api, pcns.team: red, projectcalico.org/namespace: elsewhere}
spec:
  node: node1
  orchestrator: k8s
  pod: api
  endpoint: eth0
  interfaceName: caliapi0
  serviceAccountName: api
  ipNetworks: [10.65.0.1/32, "fd00::1/128"]
  allowSpoofedSourcePrefixes: [10.99.0.0/24]
  profiles: [kns.web, ksa.web.api]
  ports:
  - {name: http, port: 8080, protocol: TCP}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node2-k8s-db-eth0, namespace: web, labels: {app: db}}
spec:
  node: node2
  orchestrator: k8s
  pod: db
  endpoint: eth0
  interfaceName: calidb0
  ipNetworks: [10.65.1.7/32]
  profiles: [kns.web]
  ports: [{name: http, port: 9090, protocol: TCP}]
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node1-k8s-pending-eth0, namespace: web, labels: {app: api}}
spec: {node: node1, orchestrator: k8s, pod: pending, endpoint: eth0, interfaceName: calipend0, profiles: [kns.web]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node2-eth0, labels: {app: api, host: "true"}}
spec: {node: node2, interfaceName: eth0, expectedIPs: [198.51.100.2], ports: [{name: http, port: 80, protocol: TCP}]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: office, namespace: web, labels: {app: api}}
spec: {nets: [203.0.113.0/24]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: everything, labels: {app: api}}
spec: {nets: [0.0.0.0/0]}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.65.0.0/16, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: internal}
spec: {cidr: 10.70.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods6}
spec: {cidr: "fd00::/64", natOutgoing: true}
"""


def state(text="", node="node1"):
    return yaml_state(BASE + ("---\n" + text if text.strip() else ""), node)


def policy(name, selector="app == 'api'", order=None, tier=None, types=None, ingress="[{action: Allow}]",
           kind="GlobalNetworkPolicy", extra=""):
    return policy_yaml(name, selector, kind=kind, order=order, tier=tier, types=types, ingress=ingress, extra=extra)


API = ("WorkloadEndpoint", "web", "node1-k8s-api-eth0")


def api_chain(model, direction="ingress"):
    (resolved,) = [r for r in model.endpoints.values() if r.endpoint.key.name == API[2]]
    return resolved.ingress if direction == "ingress" else resolved.egress


# --- endpoints and labels -------------------------------------------------------------------


def test_effective_labels_of_a_workload():
    model = compile(state())
    api = model.find("web", "api")
    assert api.label_map == {
        "app": "api",
        "projectcalico.org/namespace": "web",  # set from the endpoint, not the stored label
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "api",
        "pcns.team": "blue",  # own pcns.* labels are dropped; the profile's apply
        "pcns.projectcalico.org/name": "web",
        "pcsa.projectcalico.org/name": "api",
        "tier": "from-profile",  # the first profile wins
        "extra": "yes",
    }
    assert api.addresses == ("10.65.0.1", "fd00::1")
    assert [(p.name, p.protocol, p.port) for p in api.ports] == [("http", 6, 8080), ("dns", 17, 53)]


def test_workload_without_addresses_is_skipped():
    model = compile(state(), scope="cluster")
    with pytest.raises(KeyError):
        model.find("web", "pending")
    assert len(model.endpoints) == 3


def test_local_scope_resolves_this_nodes_endpoints():
    assert {str(k) for k in compile(state()).endpoints} == {"wep:web/node1-k8s-api-eth0"}
    assert {str(k) for k in compile(state(node="node2")).endpoints} == {"wep:web/node2-k8s-db-eth0", "hep:node2-eth0"}


# --- sets -----------------------------------------------------------------------------------


def test_selector_set_members_come_from_every_kind_of_endpoint_and_network_set():
    text = policy("from-api", "has(host)", ingress="[{action: Allow, source: {selector: app == 'api'}}]")
    model = compile(state(text), scope="cluster")
    rule = model.policies["from-api"].ingress[0]
    (set_id,) = rule.source.ip_sets
    assert set_id == ids.selector_set_id('app == "api"')
    ipset = model.ip_sets[set_id]
    assert ipset.name(4) == ("cali40" + set_id)[:31]
    assert len(ipset.name(6)) == 31 and ipset.name(6).startswith("cali60s:")
    assert ipset.members_v4 == (
        "0.0.0.0/1",  # a /0 is stored as two /1s
        "10.65.0.1/32",
        "128.0.0.0/1",
        "198.51.100.2/32",
        "203.0.113.0/24",
    )
    assert ipset.members_v6 == ("fd00::1/128",)
    assert ipset.spec.set_type == "hash:net"


def test_namespaced_network_set_inherits_the_namespace_profile():
    source = "pcns.team == 'blue' && !has(projectcalico.org/orchestrator)"
    text = policy("pcns", "has(host)", ingress=f"[{{action: Allow, source: {{selector: {source}}}}}]")
    model = compile(state(text), scope="cluster")
    (set_id,) = model.policies["pcns"].ingress[0].source.ip_sets
    assert model.ip_sets[set_id].members_v4 == ("203.0.113.0/24",)


def test_named_port_set_members():
    text = policy("to-http", "has(host)", ingress="[{action: Allow, protocol: TCP, destination: {ports: [http]}}]")
    model = compile(state(text), scope="cluster")
    (set_id,) = model.policies["to-http"].ingress[0].destination.named_port_sets
    ipset = model.ip_sets[set_id]
    assert ipset.spec.set_type == "hash:ip,port"
    assert ipset.members_v4 == ("10.65.0.1,tcp:8080", "10.65.1.7,tcp:9090", "198.51.100.2,tcp:80")
    assert ipset.members_v6 == ("fd00::1,tcp:8080",)


def test_named_port_set_filtered_by_selector_and_protocol():
    rules = "[{action: Allow, protocol: UDP, destination: {selector: app == 'api', ports: [dns, http]}}]"
    text = policy("dns", "has(host)", ingress=rules)
    model = compile(state(text), scope="cluster")
    dst = model.policies["dns"].ingress[0].destination
    dns, http = (model.ip_sets[s] for s in dst.named_port_sets)
    assert dns.members_v4 == ("10.65.0.1,udp:53",)
    assert http.members_v4 == ()  # http is TCP everywhere
    assert dst.ip_sets == ()


def test_only_sets_of_active_policies_are_built():
    inactive = policy("nobody", "app == 'nobody'", ingress="[{action: Allow, source: {selector: app == 'ghost'}}]")
    model = compile(state(inactive))
    assert "nobody" not in model.policies
    assert ids.selector_set_id('app == "ghost"') not in model.ip_sets


def test_pool_sets_for_nat_outgoing():
    model = compile(state())
    assert model.nat.all_pools.members_v4 == ("10.65.0.0/16", "10.70.0.0/16")
    assert model.nat.masq_pools.members_v4 == ("10.65.0.0/16",)
    assert model.nat.masq_pools.members_v6 == ("fd00::/64",)
    assert model.nat.enabled
    assert model.nat.masq_pools.name(4) == "cali40masq-ipam-pools"
    assert model.ip_sets["all-ipam-pools"] is model.nat.all_pools


# --- order ----------------------------------------------------------------------------------


def test_policies_order_then_name_nil_last():
    text = "".join(
        [
            policy("zeta", order=10),
            policy("alpha", order=10),
            policy("no-order"),
            policy("early", order=1.5),
            policy("also-no-order"),
            policy("ns-pol", order=10, kind="NetworkPolicy"),
        ]
    )
    chain = api_chain(compile(state(text)))
    assert [t.name for t in chain.tiers] == ["default"]
    # Ties on order break on "name/namespace/kind".
    assert chain.tiers[0].policies == ("early", "alpha", "web/ns-pol", "zeta", "also-no-order", "no-order")


def test_tiers_in_order_with_their_default_actions():
    text = (
        "apiVersion: projectcalico.org/v3\nkind: Tier\n"
        "metadata: {name: first}\nspec: {order: 10, defaultAction: Pass}\n---\n"
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: unordered}\nspec: {}\n---\n"
        + policy("in-default", order=1)
        + policy("first.p", tier="first")
        + policy("unordered.p", tier="unordered")
        + policy("ghost.p", tier="ghost")  # no such Tier resource
        + policy("kube-admin.p", tier="kube-admin")
    )
    model = compile(state(text))
    chain = api_chain(model)
    assert [(t.name, t.default_action, t.policies) for t in chain.tiers] == [
        ("first", "Pass", ("first.p",)),
        ("kube-admin", "Pass", ("kube-admin.p",)),
        ("default", "Deny", ("in-default",)),
        ("unordered", "Deny", ("unordered.p",)),
        ("ghost", "Deny", ("ghost.p",)),
    ]
    # Existing tiers first, by order (none last), then tiers that policies name but do not exist.
    assert [(t.name, t.order, t.exists) for t in model.tiers] == [
        ("first", 10.0, True),
        ("kube-admin", 1000.0, True),
        ("default", 1_000_000.0, True),
        ("kube-baseline", 10_000_000.0, True),
        ("unordered", None, True),
        ("ghost", None, False),
    ]


def test_policy_types_pick_the_directions():
    text = (
        policy("in-only", types="[Ingress]")
        + policy("out-only", types="[Egress]", ingress="", extra="  egress: [{action: Allow}]")
        + policy("both", types="[Ingress, Egress]")
        + policy("defaulted", ingress="", extra="  egress: [{action: Deny}]")  # egress rules only: [Egress]
    )
    model = compile(state(text))
    assert api_chain(model, "ingress").policy_keys == ("both", "in-only")
    assert api_chain(model, "egress").policy_keys == ("both", "defaulted", "out-only")


def test_no_policy_means_profiles_only():
    chain = api_chain(compile(state()))
    assert chain.tiers == () and chain.profiles == ("kns.web", "ksa.web.api")


def test_workloads_ignore_untracked_and_pre_dnat_policies():
    text = policy("raw", extra="  doNotTrack: true\n  applyOnForward: true") + policy(
        "pre", extra="  preDNAT: true\n  applyOnForward: true"
    )
    model = compile(state(text))
    assert api_chain(model).tiers == ()
    assert model.policies == {}


def test_host_endpoint_chains():
    text = (
        policy("normal", "has(host)")
        + policy("forwarded", "has(host)", extra="  applyOnForward: true")
        + policy(
            "raw",
            "has(host)",
            types="[Ingress, Egress]",
            extra="  doNotTrack: true\n  applyOnForward: true\n  egress: [{action: Allow}]",
        )
        + policy("pre", "has(host)", extra="  preDNAT: true\n  applyOnForward: true")
    )
    model = compile(state(text, node="node2"))
    (hep,) = model.host_endpoints
    assert hep.ingress.policy_keys == ("forwarded", "normal")
    assert hep.forward_ingress.policy_keys == ("forwarded",)
    assert hep.untracked_ingress.policy_keys == hep.untracked_egress.policy_keys == ("raw",)
    assert hep.pre_dnat_ingress.policy_keys == ("pre",)
    assert [t.default_action for t in hep.untracked_ingress.tiers + hep.pre_dnat_ingress.tiers] == ["Pass", "Pass"]
    assert hep.untracked_ingress.profiles == () and hep.ingress.profiles == ()


def test_namespaced_policy_selects_only_its_namespace():
    text = policy("np", "app == 'api'", kind="NetworkPolicy").replace("namespace: web", "namespace: other")
    assert api_chain(compile(state(text))).tiers == ()
    assert api_chain(compile(state(policy("np", "app == 'api'", kind="NetworkPolicy")))).policy_keys == ("web/np",)


def test_policy_selector_sees_inherited_labels():
    model = compile(state(policy("by-profile", "pcns.team == 'blue' && tier == 'from-profile'")))
    assert api_chain(model).policy_keys == ("by-profile",)


# --- model-level data -------------------------------------------------------------------------


def test_failsafe_defaults_and_overrides():
    model = compile(state())
    assert model.failsafe.inbound == DEFAULT_FAILSAFE_INBOUND
    assert [f"{p.protocol}:{p.port}" for p in model.failsafe.inbound] == [
        "tcp:22", "udp:68", "tcp:179", "tcp:2379", "tcp:2380", "tcp:5473", "tcp:6443", "tcp:6666", "tcp:6667",
    ]  # fmt: skip
    assert [f"{p.protocol}:{p.port}" for p in DEFAULT_FAILSAFE_OUTBOUND] == [
        "udp:53", "udp:67", "tcp:179", "tcp:2379", "tcp:2380", "tcp:5473", "tcp:6443", "tcp:6666", "tcp:6667",
    ]  # fmt: skip
    felix = """
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  failsafeInboundHostPorts: [{protocol: TCP, port: 22}]
  failsafeOutboundHostPorts: [{protocol: UDP, port: 53}]
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.node1}
spec:
  failsafeInboundHostPorts: [{protocol: tcp, port: 2222, net: 192.0.2.0/24}]
"""
    node1 = compile(state(felix))
    assert node1.failsafe.inbound == (ProtoPort("tcp", 2222, "192.0.2.0/24"),)  # the node's own wins
    assert node1.failsafe.outbound == (ProtoPort("udp", 53),)
    assert compile(state(felix, node="node2")).failsafe.inbound == (ProtoPort("tcp", 22),)


FELIX = "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: %s\n"


def test_anti_spoofing():
    model = compile(state())
    (spoof,) = model.anti_spoofing
    assert (spoof.interface, spoof.addresses) == ("caliapi0", ("10.65.0.1/32", "fd00::1/128"))
    assert spoof.allowed_prefixes == ()  # workloadSourceSpoofing is Disabled by default
    (spoof,) = compile(state(FELIX % "{workloadSourceSpoofing: Any}")).anti_spoofing
    assert spoof.allowed_prefixes == ("10.99.0.0/24",)


def test_settings_from_felix_configuration():
    settings = compile(state(FELIX % "{vxlanPort: 8472, iptablesFilterDenyAction: Reject}")).settings
    assert (settings.vxlan_port, settings.iptables_filter_deny_action) == (8472, "Reject")
    assert settings.nftables_filter_deny_action == "Drop"
    assert compile(state()).settings.vxlan_port == 4789


def test_missing_and_builtin_profiles():
    text = """
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth1}
spec: {node: node1, interfaceName: eth1, profiles: [projectcalico-default-allow, not-there]}
"""
    model = compile(state(text))
    assert [r.action for r in model.profiles["projectcalico-default-allow"].ingress] == ["allow"]
    assert model.profiles["not-there"].missing and [r.action for r in model.profiles["not-there"].egress] == ["deny"]


def test_compile_is_deterministic_and_ids_track_content():
    text = policy("p1", order=5, ingress="[{action: Allow, protocol: TCP, destination: {ports: [http]}}]")
    a, b = compile(state(text)), compile(state(text))
    assert list(a.ip_sets) == list(b.ip_sets) and list(a.policies) == list(b.policies)
    assert a.policies["p1"].id == b.policies["p1"].id
    assert api_chain(a).id == api_chain(b).id
    changed = compile(state(text.replace("order: 5", "order: 6")))
    assert changed.policies["p1"].id != a.policies["p1"].id
    assert api_chain(changed).id == api_chain(a).id  # same chain structure
    assert api_chain(compile(state(text + policy("p2")))).id != api_chain(a).id


def test_model_is_frozen():
    model = compile(state())
    with pytest.raises(AttributeError):
        model.node_name = "other"
    with pytest.raises(TypeError):
        model.policies["x"] = None
    rule = next(iter(model.profiles["kns.web"].ingress))
    assert hash(rule) == hash(rule)
