"""pycalico.core.policy.evaluate: the packet judge, on Kubernetes-conformance-style cases.

The cluster of Kubernetes' network policy e2e tests: namespaces x, y, z (label ``ns``),
pods a, b, c in each (label ``pod``), every pod serving 80 and 81 over TCP and UDP under
named ports ``serve-<port>-<proto>``. Policies are written as Calico NetworkPolicies the
way Calico converts Kubernetes ones (``knp.default.<name>``, order 1000, selectors
AND'ed with ``projectcalico.org/orchestrator == 'k8s'``).

Matrices read as in the e2e tests: rows are sources, columns destinations, ``.`` means
allowed and ``X`` blocked. A pod always reaches itself (the packet never leaves it).
"""

import json

import pytest

from pycalico.core.calc import DesiredState
from pycalico.core.policy import Peer, compile, format_matrix, reachability, verdict
from pycalico.core.resources.codec import load_resource, load_resources
from policy_world import doc

NAMESPACES = "xyz"
PODS = "abc"
NAMES = [f"{ns}{pod}" for ns in NAMESPACES for pod in PODS]
K8S = "projectcalico.org/orchestrator == 'k8s'"
X_PODS = f"{K8S} && projectcalico.org/namespace == 'x'"


def cluster_resources():
    """Profiles and workload endpoints of the 3x3 cluster (pods spread over three nodes)."""
    docs = []
    for i, ns in enumerate(NAMESPACES, 1):
        ns_labels = {"pcns.ns": ns, "pcns.kubernetes.io/metadata.name": ns, "pcns.projectcalico.org/name": ns}
        allow = [{"action": "Allow"}]
        docs.append(doc("Profile", f"kns.{ns}", {"labelsToApply": ns_labels, "ingress": allow, "egress": allow}))
        docs.append(doc("Profile", f"ksa.{ns}.default", {"labelsToApply": {"pcsa.projectcalico.org/name": "default"}}))
        for j, pod in enumerate(PODS, 1):
            ports = [
                {"name": f"serve-{port}-{proto.lower()}", "port": port, "protocol": proto}
                for port in (80, 81)
                for proto in ("TCP", "UDP")
            ]
            spec = {
                "node": f"node{j}",
                "orchestrator": "k8s",
                "pod": pod,
                "endpoint": "eth0",
                "interfaceName": f"cali{ns}{pod}0000",
                "ipNetworks": [f"10.0.{i}.{j}/32"],
                "profiles": [f"kns.{ns}", f"ksa.{ns}.default"],
                "serviceAccountName": "default",
                "ports": ports,
            }
            docs.append(doc("WorkloadEndpoint", f"node{j}-k8s-{pod}-eth0", spec, namespace=ns, labels={"pod": pod}))
    return [load_resource(d) for d in docs]


def state_of(resources, node="node1"):
    kinds = {}
    for res in resources:
        kinds.setdefault(type(res).KIND, []).append(res)
    return DesiredState(node_name=node, revision=1, resources={k: tuple(v) for k, v in kinds.items()})


def build(policies="", extra=()):
    resources = cluster_resources() + list(extra) + (load_resources(policies) if policies.strip() else [])
    return compile(state_of(resources), scope="cluster")


def peers(model):
    return {f"{ns}{pod}": model.find(ns, pod) for ns in NAMESPACES for pod in PODS}


def parse_matrix(text):
    """``{(src, dst): allowed}`` from a table of rows ``<src> <cell> <cell> ...``."""
    lines = [line.split() for line in text.strip().splitlines()]
    header, rows = lines[0], lines[1:]
    return {(row[0], dst): cell == "." for row in rows for dst, cell in zip(header, row[1:], strict=True)}


def check(model, expected, protocol="TCP", port=80, **kwargs):
    results = reachability(model, peers(model), protocol, port, **kwargs)
    want = parse_matrix(expected)
    wrong = [f"{a}->{b}: {results[(a, b)]}" for a in NAMES for b in NAMES if results[(a, b)].allowed != want[(a, b)]]
    assert not wrong, "\n" + format_matrix(results, NAMES) + "\n" + "\n".join(wrong)


ALL_ALLOWED = """
    xa xb xc ya yb yc za zb zc
xa  .  .  .  .  .  .  .  .  .
xb  .  .  .  .  .  .  .  .  .
xc  .  .  .  .  .  .  .  .  .
ya  .  .  .  .  .  .  .  .  .
yb  .  .  .  .  .  .  .  .  .
yc  .  .  .  .  .  .  .  .  .
za  .  .  .  .  .  .  .  .  .
zb  .  .  .  .  .  .  .  .  .
zc  .  .  .  .  .  .  .  .  .
"""

ONLY_INTO_XA_FROM = """
    xa xb xc ya yb yc za zb zc
xa  .  .  .  .  .  .  .  .  .
xb  {xb}  .  .  .  .  .  .  .  .
xc  {xc}  .  .  .  .  .  .  .  .
ya  {ya}  .  .  .  .  .  .  .  .
yb  {yb}  .  .  .  .  .  .  .  .
yc  {yc}  .  .  .  .  .  .  .  .
za  {za}  .  .  .  .  .  .  .  .
zb  {zb}  .  .  .  .  .  .  .  .
zc  {zc}  .  .  .  .  .  .  .  .
"""


def into_xa(*allowed):
    """Everything allowed except into x/a, which only ``allowed`` sources reach."""
    return ONLY_INTO_XA_FROM.format(**{n: "." if n in allowed else "X" for n in NAMES if n != "xa"})


def knp(name, selector, ingress=None, egress=None, types=None, namespace="x"):
    spec = {"order": 1000, "selector": f"{K8S} && {selector}" if selector else K8S}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types is None:
        types = ["Ingress"] if egress is None else ["Egress"] if ingress is None else ["Ingress", "Egress"]
    spec["types"] = types
    return json.dumps(doc("NetworkPolicy", f"knp.default.{name}", spec, namespace=namespace)) + "\n---\n"


def gnp(name, selector, **spec):
    return json.dumps(doc("GlobalNetworkPolicy", name, {"selector": selector, **spec})) + "\n---\n"


def allow(**fields):
    return {"action": "Allow", **fields}


def into_a(name, *rules):
    """A Kubernetes policy of namespace x selecting pod a, with ingress ``rules``."""
    return build(knp(name, "pod == 'a'", ingress=list(rules)))


def pods(selector=None, namespace_selector=None):
    """A Kubernetes peer as Calico converts it."""
    side = {"selector": f"{K8S} && {selector}" if selector else K8S}
    if namespace_selector is not None:
        side["namespaceSelector"] = namespace_selector
    return side


# --- the cases ----------------------------------------------------------------------------


def test_no_policy_profiles_allow_everything():
    check(build(), ALL_ALLOWED)


def test_default_deny_ingress():
    check(
        build(knp("deny-ingress", None, ingress=[])),
        """
    xa xb xc ya yb yc za zb zc
xa  .  X  X  .  .  .  .  .  .
xb  X  .  X  .  .  .  .  .  .
xc  X  X  .  .  .  .  .  .  .
ya  X  X  X  .  .  .  .  .  .
yb  X  X  X  .  .  .  .  .  .
yc  X  X  X  .  .  .  .  .  .
za  X  X  X  .  .  .  .  .  .
zb  X  X  X  .  .  .  .  .  .
zc  X  X  X  .  .  .  .  .  .
""",
    )


def test_deny_all_egress():
    check(
        build(knp("deny-egress", None, egress=[])),
        """
    xa xb xc ya yb yc za zb zc
xa  .  X  X  X  X  X  X  X  X
xb  X  .  X  X  X  X  X  X  X
xc  X  X  .  X  X  X  X  X  X
ya  .  .  .  .  .  .  .  .  .
yb  .  .  .  .  .  .  .  .  .
yc  .  .  .  .  .  .  .  .  .
za  .  .  .  .  .  .  .  .  .
zb  .  .  .  .  .  .  .  .  .
zc  .  .  .  .  .  .  .  .  .
""",
    )


def test_allow_from_pod_selector():
    model = build(knp("allow-b", "pod == 'a'", ingress=[{"action": "Allow", "source": pods("pod == 'b'")}]))
    check(model, into_xa("xb"))


def test_allow_from_namespace_selector():
    model = into_a("allow-y", allow(source=pods(namespace_selector="ns == 'y'")))
    check(model, into_xa("ya", "yb", "yc"))


def test_namespace_and_pod_selector_in_one_peer():
    source = pods("pod == 'b'", namespace_selector="ns == 'y'")
    check(build(knp("and", "pod == 'a'", ingress=[{"action": "Allow", "source": source}])), into_xa("yb"))


def test_namespace_or_pod_selector_as_two_peers():
    ingress = [
        {"action": "Allow", "source": pods(namespace_selector="ns == 'y'")},
        {"action": "Allow", "source": pods("pod == 'b'")},
    ]
    check(build(knp("or", "pod == 'a'", ingress=ingress)), into_xa("ya", "yb", "yc", "xb"))


def test_empty_namespace_selector_means_every_namespace():
    model = into_a("all-ns", allow(source=pods("pod == 'c'", namespace_selector="all()")))
    check(model, into_xa("xc", "yc", "zc"))


def test_numeric_ports():
    model = into_a("port-81", allow(protocol="TCP", destination={"ports": [81]}))
    check(model, into_xa(), port=80)
    check(model, ALL_ALLOWED, port=81)
    check(model, into_xa(), protocol="UDP", port=81)


def test_port_range():
    model = into_a("range", allow(protocol="TCP", destination={"ports": ["81:90"]}))
    check(model, into_xa(), port=80)
    check(model, ALL_ALLOWED, port=81)


def test_named_ports():
    model = into_a("named", allow(protocol="TCP", destination={"ports": ["serve-81-tcp"]}))
    check(model, into_xa(), port=80)
    check(model, ALL_ALLOWED, port=81)
    check(model, into_xa(), protocol="UDP", port=81)


def test_named_udp_port():
    model = into_a("named-udp", allow(protocol="UDP", destination={"ports": ["serve-80-udp"]}))
    check(model, ALL_ALLOWED, protocol="UDP", port=80)
    check(model, into_xa(), protocol="TCP", port=80)
    check(model, into_xa(), protocol="UDP", port=81)


def test_named_port_without_protocol_matches_tcp_only():
    model = into_a("named-any", allow(destination={"ports": ["serve-80-udp"]}))
    # Calico resolves a protocol-less named port as TCP; the pod's serve-80-udp is UDP.
    check(model, into_xa(), protocol="UDP", port=80)
    check(model, into_xa(), protocol="TCP", port=80)


def test_named_port_resolves_against_the_destination_pod():
    # Egress from x/a to port "serve-81-tcp" anywhere: only ports the destination names count.
    rule = allow(protocol="TCP", destination={"ports": ["serve-81-tcp"]})
    model = build(knp("egress-named", "pod == 'a'", egress=[rule]))
    assert verdict(model, model.find("x", "a"), model.find("y", "b"), "TCP", 81).allowed
    assert not verdict(model, model.find("x", "a"), model.find("y", "b"), "TCP", 80).allowed
    assert not verdict(model, model.find("x", "a"), "192.0.2.1", "TCP", 81).allowed  # not an endpoint with that port


def test_protocol_only_rule():
    model = build(knp("udp-only", "pod == 'a'", ingress=[{"action": "Allow", "protocol": "UDP"}]))
    check(model, ALL_ALLOWED, protocol="UDP", port=80)
    check(model, ALL_ALLOWED, protocol="UDP", port=5353)
    check(model, into_xa(), protocol="TCP", port=80)


def test_egress_rules():
    egress = [{"action": "Allow", "destination": pods("pod == 'b'", namespace_selector="ns == 'y'")}]
    check(
        build(knp("egress-to-yb", "pod == 'a'", egress=egress)),
        """
    xa xb xc ya yb yc za zb zc
xa  .  X  X  X  .  X  X  X  X
xb  .  .  .  .  .  .  .  .  .
xc  .  .  .  .  .  .  .  .  .
ya  .  .  .  .  .  .  .  .  .
yb  .  .  .  .  .  .  .  .  .
yc  .  .  .  .  .  .  .  .  .
za  .  .  .  .  .  .  .  .  .
zb  .  .  .  .  .  .  .  .  .
zc  .  .  .  .  .  .  .  .  .
""",
    )


def test_ingress_and_egress_policies_both_apply():
    text = knp("deny-ingress-y", None, ingress=[], namespace="y") + knp("deny-egress-x", "pod == 'c'", egress=[])
    check(
        build(text),
        """
    xa xb xc ya yb yc za zb zc
xa  .  .  .  X  X  X  .  .  .
xb  .  .  .  X  X  X  .  .  .
xc  X  X  .  X  X  X  X  X  X
ya  .  .  .  .  X  X  .  .  .
yb  .  .  .  X  .  X  .  .  .
yc  .  .  .  X  X  .  .  .  .
za  .  .  .  X  X  X  .  .  .
zb  .  .  .  X  X  X  .  .  .
zc  .  .  .  X  X  X  .  .  .
""",
    )


def test_ip_block_with_except():
    source = {"nets": ["10.0.2.0/24"], "notNets": ["10.0.2.2/32"]}
    model = build(knp("ipblock", "pod == 'a'", ingress=[{"action": "Allow", "source": source}]))
    check(model, into_xa("ya", "yc"))
    assert verdict(model, "10.0.2.77", model.find("x", "a"), "TCP", 80).allowed
    assert not verdict(model, "10.0.3.77", model.find("x", "a"), "TCP", 80).allowed


def test_egress_to_ip_block():
    rule = allow(destination={"nets": ["10.0.3.0/24", "192.0.2.0/24"]})
    model = build(knp("egress-block", "pod == 'a'", egress=[rule]))
    xa = model.find("x", "a")
    assert verdict(model, xa, model.find("z", "b"), "TCP", 80).allowed
    assert verdict(model, xa, "192.0.2.9", "UDP", 53).allowed
    assert not verdict(model, xa, model.find("y", "b"), "TCP", 80).allowed
    assert not verdict(model, xa, "198.51.100.1", "TCP", 80).allowed


def test_allow_all_after_default_deny():
    text = knp("deny-ingress", None, ingress=[]) + knp("allow-all", None, ingress=[{"action": "Allow"}])
    check(build(text), ALL_ALLOWED)


def test_global_policy_deny_before_kubernetes_allow():
    # The global policy selects every pod: into y and z (no other policy) whatever it does
    # not decide is dropped at the end of the tier; into x the Kubernetes policy allows.
    text = knp("allow-all", None, ingress=[allow()])
    text += gnp("deny-from-b", K8S, order=500, ingress=[{"action": "Deny", "source": {"selector": "pod == 'b'"}}])
    check(
        build(text),
        """
    xa xb xc ya yb yc za zb zc
xa  .  .  .  X  X  X  X  X  X
xb  X  .  X  X  X  X  X  X  X
xc  .  .  .  X  X  X  X  X  X
ya  .  .  .  .  X  X  X  X  X
yb  X  X  X  X  .  X  X  X  X
yc  .  .  .  X  X  .  X  X  X
za  .  .  .  X  X  X  .  X  X
zb  X  X  X  X  X  X  X  .  X
zc  .  .  .  X  X  X  X  X  .
""",
    )


def test_global_policy_after_kubernetes_policy_in_the_same_tier():
    # A policy with no matching rule hands on to the next one in the tier: order 2000 still allows c.
    text = knp("deny-ingress", None, ingress=[])
    text += gnp("allow-c", X_PODS, order=2000, ingress=[allow(source={"selector": "pod == 'c'"})])
    model = build(text)
    check(
        model,
        """
    xa xb xc ya yb yc za zb zc
xa  .  X  X  .  .  .  .  .  .
xb  X  .  X  .  .  .  .  .  .
xc  .  .  .  .  .  .  .  .  .
ya  X  X  X  .  .  .  .  .  .
yb  X  X  X  .  .  .  .  .  .
yc  .  .  .  .  .  .  .  .  .
za  X  X  X  .  .  .  .  .  .
zb  X  X  X  .  .  .  .  .  .
zc  .  .  .  .  .  .  .  .  .
""",
    )
    reason = verdict(model, model.find("y", "c"), model.find("x", "a"), "TCP", 80).steps[-1].where
    assert reason == "tier default, policy allow-c, ingress rule 0"


def test_pass_skips_the_rest_of_the_tier():
    # A Pass in an earlier policy skips the Kubernetes policy later in the same tier: the
    # packet goes to the profiles, which allow.
    text = knp("deny-ingress", None, ingress=[]) + json.dumps(
        doc(
            "GlobalNetworkPolicy",
            "triage",
            {
                "order": 10,
                "selector": X_PODS,
                "ingress": [
                    {"action": "Deny", "source": {"selector": "pod == 'c'"}},
                    {"action": "Pass", "source": {"namespaceSelector": "ns == 'z'"}},
                ],
            },
        )
    )
    check(
        build(text),
        """
    xa xb xc ya yb yc za zb zc
xa  .  X  X  .  .  .  .  .  .
xb  X  .  X  .  .  .  .  .  .
xc  X  X  .  .  .  .  .  .  .
ya  X  X  X  .  .  .  .  .  .
yb  X  X  X  .  .  .  .  .  .
yc  X  X  X  .  .  .  .  .  .
za  .  .  .  .  .  .  .  .  .
zb  .  .  .  .  .  .  .  .  .
zc  X  X  X  .  .  .  .  .  .
""",
    )


TIERS = """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100, defaultAction: %s}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.quarantine}
spec:
  tier: security
  order: 1
  selector: projectcalico.org/orchestrator == 'k8s' && pod == 'a'
  ingress:
  - action: Deny
    source: {namespaceSelector: ns == 'z'}
  - action: Pass
    source: {namespaceSelector: ns == 'y'}
  - action: Allow
    source: {selector: pod == 'b'}
---
"""


def test_tier_pass_goes_to_next_tier():
    # security tier (order 100, before default): z -> a denied; y -> a passed on to the
    # default tier (deny-ingress there); */b -> a allowed outright; the rest ends the tier.
    text = TIERS % "Deny" + knp("deny-ingress", None, ingress=[])
    model = build(text)
    check(
        model,
        """
    xa xb xc ya yb yc za zb zc
xa  .  X  X  X  .  .  X  .  .
xb  .  .  X  .  .  .  .  .  .
xc  X  X  .  X  .  .  X  .  .
ya  X  X  X  .  .  .  .  .  .
yb  X  X  X  .  .  .  .  .  .
yc  X  X  X  .  .  .  .  .  .
za  X  X  X  X  .  .  .  .  .
zb  X  X  X  X  .  .  X  .  .
zc  X  X  X  X  .  .  X  .  .
""",
    )
    assert verdict(model, model.find("x", "c"), model.find("y", "a"), "TCP", 80).steps[-1].where == (
        "end of tier security: no policy allowed or passed"
    )
    assert verdict(model, model.find("y", "c"), model.find("x", "a"), "TCP", 80).steps[-1].where == (
        "end of tier default: no policy allowed or passed"
    )


def test_tier_default_action_pass():
    # With defaultAction Pass, traffic no rule decides falls through to the default tier.
    model = build(TIERS % "Pass")
    check(
        model,
        """
    xa xb xc ya yb yc za zb zc
xa  .  .  .  .  .  .  .  .  .
xb  .  .  .  .  .  .  .  .  .
xc  .  .  .  .  .  .  .  .  .
ya  .  .  .  .  .  .  .  .  .
yb  .  .  .  .  .  .  .  .  .
yc  .  .  .  .  .  .  .  .  .
za  X  .  .  X  .  .  .  .  .
zb  X  .  .  X  .  .  X  .  .
zc  X  .  .  X  .  .  X  .  .
""",
    )


def test_log_rules_do_not_decide():
    ingress = [{"action": "Log"}, {"action": "Allow", "source": pods("pod == 'b'")}]
    check(build(knp("log", "pod == 'a'", ingress=ingress)), into_xa("xb"))


def test_icmp_rules():
    ingress = [{"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8}}]
    model = build(knp("ping", "pod == 'a'", ingress=ingress))
    xb, xa = model.find("x", "b"), model.find("x", "a")
    assert verdict(model, xb, xa, "ICMP", icmp_type=8, icmp_code=0).allowed
    assert not verdict(model, xb, xa, "ICMP", icmp_type=13, icmp_code=0).allowed
    assert not verdict(model, xb, xa, "TCP", 80).allowed


def test_not_protocol_and_not_ports():
    model = into_a("nots", allow(notProtocol="UDP"), allow(protocol="UDP", destination={"notPorts": [53, "1000:2000"]}))
    xb, xa = model.find("x", "b"), model.find("x", "a")
    assert verdict(model, xb, xa, "TCP", 80).allowed
    assert verdict(model, xb, xa, "UDP", 80).allowed
    assert not verdict(model, xb, xa, "UDP", 53).allowed
    assert not verdict(model, xb, xa, "UDP", 1500).allowed


def test_source_ports():
    ingress = [{"action": "Allow", "protocol": "UDP", "source": {"ports": [53]}}]
    model = build(knp("from-53", "pod == 'a'", ingress=ingress))
    xb, xa = model.find("x", "b"), model.find("x", "a")
    assert verdict(model, xb, xa, "UDP", 4000, src_port=53).allowed
    assert not verdict(model, xb, xa, "UDP", 4000, src_port=54).allowed
    assert not verdict(model, xb, xa, "UDP", 4000).allowed  # an ephemeral port


def test_not_selector_in_a_namespaced_policy_means_other_pods_of_the_namespace():
    model = build(knp("not-c", "pod == 'a'", ingress=[{"action": "Allow", "source": {"notSelector": "pod == 'c'"}}]))
    check(model, into_xa("xb"))


def test_global_not_selector_also_matches_outside_addresses():
    model = build(gnp("not-c", f"{X_PODS} && pod == 'a'", ingress=[allow(source={"notSelector": "pod == 'c'"})]))
    check(model, into_xa("xb", "ya", "yb", "za", "zb"))
    assert verdict(model, "192.0.2.1", model.find("x", "a"), "TCP", 80).allowed


def test_service_account_match():
    source = {"serviceAccounts": {"names": ["default"]}}
    sa = build(knp("sa", "pod == 'a'", ingress=[{"action": "Allow", "source": source}]))
    check(sa, into_xa("xb", "xc"))  # namespaced: service account "default" in x
    other = into_a("sa", allow(source={"serviceAccounts": {"names": ["builder"]}}))
    check(other, into_xa())


def test_network_sets_count_as_selector_members():
    netsets = load_resources("""
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {role: partner}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: office, namespace: x, labels: {role: office}}
spec: {nets: [203.0.113.0/25]}
""")
    text = knp("from-office", "pod == 'a'", ingress=[{"action": "Allow", "source": {"selector": "role == 'office'"}}])
    text += gnp("partners", f"{K8S} && pod == 'b'", ingress=[allow(source={"selector": "role == 'partner'"})])
    model = build(text, netsets)
    xa, xb = model.find("x", "a"), model.find("x", "b")
    assert verdict(model, "203.0.113.5", xa, "TCP", 80).allowed
    assert not verdict(model, "203.0.113.200", xa, "TCP", 80).allowed
    assert verdict(model, "192.0.2.44", xb, "TCP", 80).allowed
    assert not verdict(model, "198.51.100.1", xb, "TCP", 80).allowed


def test_missing_profile_drops():
    resources = [r for r in cluster_resources() if not (type(r).KIND == "Profile" and r.name == "kns.y")]
    model = compile(state_of(resources), scope="cluster")
    assert model.profiles["kns.y"].missing
    assert not verdict(model, model.find("x", "a"), model.find("y", "a"), "TCP", 80).allowed
    assert not verdict(model, model.find("y", "a"), model.find("x", "a"), "TCP", 80).allowed
    assert verdict(model, model.find("x", "a"), model.find("z", "a"), "TCP", 80).allowed


def test_vxlan_and_ipip_from_workloads_are_dropped():
    model = build()
    xa, ya = model.find("x", "a"), model.find("y", "a")
    assert not verdict(model, xa, ya, "UDP", 4789).allowed
    assert not verdict(model, xa, ya, 4).allowed
    assert verdict(model, xa, ya, "UDP", 4790).allowed
    moved = build("", [load_resource(doc("FelixConfiguration", "default", {"vxlanPort": 4790}))])
    assert verdict(moved, xa, ya, "UDP", 4789).allowed
    assert not verdict(moved, xa, ya, "UDP", 4790).allowed
    both = {"allowVXLANPacketsFromWorkloads": True, "allowIPIPPacketsFromWorkloads": True}
    allowed = build("", [load_resource(doc("FelixConfiguration", "default", both))])
    assert verdict(allowed, xa, ya, "UDP", 4789).allowed
    assert verdict(allowed, xa, ya, 4).allowed


def test_node_scope_only_applies_local_policy():
    text = knp("deny-ingress", None, ingress=[])
    model = compile(state_of(cluster_resources() + load_resources(text), node="node2"))
    # node2 hosts the b pods only; x/a's ingress policy is another node's business.
    assert {str(k) for k in model.endpoints} == {f"wep:{ns}/node2-k8s-b-eth0" for ns in NAMESPACES}
    assert verdict(model, model.find("y", "a"), model.find("x", "a"), "TCP", 80).allowed
    assert not verdict(model, model.find("y", "a"), model.find("x", "b"), "TCP", 80).allowed


def test_verdict_reasons():
    model = build(knp("allow-b", "pod == 'a'", ingress=[{"action": "Allow", "source": pods("pod == 'b'")}]))
    allowed = verdict(model, model.find("x", "b"), model.find("x", "a"), "TCP", 80)
    assert [(s.direction, s.outcome, s.where) for s in allowed.steps] == [
        ("egress", "allow", "profile kns.x, egress rule 0"),
        ("ingress", "allow", "tier default, policy x/knp.default.allow-b, ingress rule 0"),
    ]
    denied = verdict(model, model.find("x", "c"), model.find("x", "a"), "TCP", 80)
    assert denied.action == "deny" and "end of tier default" in denied.reason
    assert verdict(model, model.find("x", "a"), model.find("x", "a"), "TCP", 80).steps[0].where.startswith("to itself")
    assert str(Peer.address("10.0.0.1")) == "10.0.0.1"


def test_a_workload_sends_only_from_its_own_addresses():
    model = build()
    xa, yc = model.find("x", "a"), model.find("y", "c")
    judged = verdict(model, xa, yc, "UDP", 80, src_ip="10.0.1.2")  # x/b's address
    assert not judged.allowed
    assert [(s.direction, s.where) for s in judged.steps] == [
        ("egress", "anti-spoofing: 10.0.1.2 is not an address of the endpoint")]
    assert verdict(model, xa, yc, "UDP", 80, src_ip="10.0.1.1").allowed  # its own
    assert not verdict(model, xa, "198.51.100.9", "TCP", 80, src_ip="203.0.113.5").allowed


def test_allowed_spoofed_prefixes_need_workload_source_spoofing_any():
    spoofer = load_resource(doc("WorkloadEndpoint", "node1-k8s-s-eth0", {
        "node": "node1", "orchestrator": "k8s", "pod": "s", "endpoint": "eth0", "interfaceName": "calispoofer0",
        "ipNetworks": ["10.0.9.9/32"], "profiles": ["kns.x"], "allowSpoofedSourcePrefixes": ["10.0.1.0/24"]},
        namespace="x"))
    felix = load_resource(doc("FelixConfiguration", "default", {"workloadSourceSpoofing": "Any"}))
    for extra, allowed in (([spoofer], False), ([spoofer, felix], True)):
        model = build("", extra)
        judged = verdict(model, model.find("x", "s"), model.find("y", "c"), "UDP", 80, src_ip="10.0.1.3")
        assert judged.allowed == allowed, judged
    outside = verdict(model, model.find("x", "s"), model.find("y", "c"), "UDP", 80, src_ip="10.0.2.3")
    assert not outside.allowed  # not in the allowed prefixes


# --- host endpoints ---------------------------------------------------------------------------

HEP = """
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {host: node1}}
spec:
  node: node1
  interfaceName: eth0
  expectedIPs: [198.51.100.1]
  %s
"""


def test_host_endpoint_failsafe_ports():
    model = build("", load_resources(HEP % ""))
    hep = model.find("", "node1-eth0")
    outside = "198.51.100.9"
    for proto, port in (("TCP", 22), ("UDP", 68), ("TCP", 179), ("TCP", 2379), ("TCP", 6443)):
        result = verdict(model, outside, hep, proto, port)
        assert result.allowed and result.steps[-1].where == f"failsafe {proto.lower()}:{port}"
    # No policy and no profile: a host endpoint drops everything else.
    assert verdict(model, outside, hep, "TCP", 80).steps[-1].where == "no policy and no profile"
    assert not verdict(model, outside, hep, "UDP", 22).allowed
    for proto, port in (("UDP", 53), ("UDP", 67), ("TCP", 179), ("TCP", 5473)):
        assert verdict(model, hep, outside, proto, port).allowed
    assert not verdict(model, hep, outside, "TCP", 22).allowed


def test_host_endpoint_failsafes_beat_policy_and_profiles_open_the_rest():
    lock = gnp("lock-host", "has(host)", ingress=[{"action": "Deny"}], egress=[{"action": "Deny"}])
    model = build(lock, load_resources(HEP % "profiles: [projectcalico-default-allow]"))
    hep = model.find("", "node1-eth0")
    assert verdict(model, "198.51.100.9", hep, "TCP", 22).allowed
    assert not verdict(model, "198.51.100.9", hep, "TCP", 80).allowed
    open_model = build("", load_resources(HEP % "profiles: [projectcalico-default-allow]"))
    assert verdict(open_model, "198.51.100.9", open_model.find("", "node1-eth0"), "TCP", 80).allowed


def test_host_endpoint_failsafes_from_felix_configuration():
    felix = load_resources("""
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  failsafeInboundHostPorts: [{protocol: TCP, port: 2222}, {protocol: UDP, port: 500, net: 198.51.100.0/28}]
  failsafeOutboundHostPorts: []
""")
    model = build("", load_resources(HEP % "") + felix)
    hep = model.find("", "node1-eth0")
    assert not verdict(model, "198.51.100.9", hep, "TCP", 22).allowed
    assert verdict(model, "198.51.100.9", hep, "TCP", 2222).allowed
    assert verdict(model, "198.51.100.9", hep, "UDP", 500).allowed
    assert not verdict(model, "198.51.100.99", hep, "UDP", 500).allowed
    assert not verdict(model, hep, "198.51.100.9", "UDP", 53).allowed


def test_host_endpoint_untracked_and_pre_dnat_policies():
    text = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: raw-allow-ssh-alt}
spec:
  selector: has(host)
  doNotTrack: true
  applyOnForward: true
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [2200]}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: pre-dnat-block}
spec:
  selector: has(host)
  preDNAT: true
  applyOnForward: true
  ingress: [{action: Deny, source: {nets: [203.0.113.0/24]}}]
"""
    model = build(text, load_resources(HEP % "profiles: [projectcalico-default-allow]"))
    resolved = model.endpoints[model.find("", "node1-eth0").key]
    assert resolved.untracked_ingress.policy_keys == ("raw-allow-ssh-alt",)
    assert resolved.pre_dnat_ingress.policy_keys == ("pre-dnat-block",)
    assert resolved.ingress.policy_keys == ()  # neither is a normal policy
    hep = resolved.endpoint
    assert verdict(model, "203.0.113.1", hep, "TCP", 2200).steps[-1].where.startswith("untracked:")
    assert not verdict(model, "203.0.113.1", hep, "TCP", 80).allowed
    assert verdict(model, "198.51.100.9", hep, "TCP", 80).allowed


def test_workload_to_host_endpoint_traffic():
    model = build("", load_resources(HEP % "profiles: [projectcalico-default-allow]"))
    hep = model.find("", "node1-eth0")
    assert verdict(model, model.find("x", "a"), hep, "TCP", 80).allowed


@pytest.mark.parametrize("version", [6])
def test_ipv6_rules_do_not_apply_to_ipv4(version):
    model = build(knp("v6-only", "pod == 'a'", ingress=[{"action": "Allow", "ipVersion": version}]))
    check(model, into_xa())
