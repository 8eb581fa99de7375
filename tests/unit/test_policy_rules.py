"""pycalico.core.policy: Calico's selector rewrites, rule normalisation and ids.

Expected strings marked "Calico:" are copied from Calico's own tests
(``libcalico-go/lib/backend/syncersv1/updateprocessors/*_test.go``,
``libcalico-go/lib/selector/parser/parser_test.go``).
"""

import json

import pytest

from pycalico.core.policy import ids, selectors
from pycalico.core.policy.rules import (
    PortRange,
    normalise_policy,
    normalise_profile,
    normalise_rule,
    protocol_value,
)
from pycalico.core.resources.codec import load_resources
from pycalico.core.resources.policy import Rule as ApiRule


def api_rule(**doc):
    """A v3 Rule, loaded (and validated) as part of a profile manifest."""
    profile = {"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "p"}}
    profile["spec"] = {"ingress": [doc]}
    (res,) = load_resources(json.dumps(profile))
    return res.spec.ingress[0]


def one(text):
    (res,) = load_resources(text)
    return res


# --- selectors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "uid"),
    [
        # Calico: parser_test.go canonicalisationTests.
        ("", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        (" (all() )", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        ("! (has( b)||! has(a ))", "!(has(b) || !has(a))", "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
        ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")', "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"),
    ],
)
def test_selector_set_ids_match_calico(text, canonical, uid):
    assert selectors.canonical(text) == canonical
    assert ids.selector_set_id(selectors.canonical(text)) == uid


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Calico: parser_test.go "Visitor tests" (prefix "visited/").
        ("k == 'v'", 'visited/k == "v"'),
        ("k starts with 'v'", 'visited/k starts with "v"'),
        ("k == 'v' && x == 'y'", '(visited/k == "v" && visited/x == "y")'),
        ("k == 'v' || has(x)", '(visited/k == "v" || has(visited/x))'),
        ("!(k == 'v')", '!visited/k == "v"'),
        ("k not in {'v'}", 'visited/k not in {"v"}'),
        (
            "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
            '!(!((visited/k == "v" && has(visited/t)) || all()) && visited/a in {"b", "c"})',
        ),
    ],
)
def test_label_prefix_like_calicos_visitor(text, expected):
    assert selectors.with_prefix(text, "visited/") == expected


def test_network_policy_selector():
    # Calico: networkpolicyprocessor_test.go.
    assert (
        selectors.network_policy_selector("mylabel == 'selectme'", "namespace2", "role == 'development'")
        == "((mylabel == 'selectme') && projectcalico.org/namespace == 'namespace2') && pcsa.role == \"development\""
    )
    assert selectors.network_policy_selector(None, "x", None) == "projectcalico.org/namespace == 'x'"
    expected = "(a == 'b') && projectcalico.org/namespace == 'x'"
    assert selectors.network_policy_selector("a == 'b'", "x", None) == expected


def test_global_policy_selector():
    # Calico: globalnetworkpolicyprocessor_test.go.
    assert (
        selectors.global_policy_selector("mylabel == 'selectme'", None, "role == 'development'")
        == "(mylabel == 'selectme') && pcsa.role == \"development\""
    )
    assert selectors.global_policy_selector("", "all()", None) == "has(projectcalico.org/namespace)"
    assert selectors.global_policy_selector("has(a)", "team == 'red'", None) == '(has(a)) && pcns.team == "red"'
    assert selectors.global_policy_selector(None, None, "all()") == "has(projectcalico.org/serviceaccount)"


@pytest.mark.parametrize(
    ("ns_sel", "sel", "sa", "not_sel", "ns", "expected"),
    [
        # Calico: rules_test.go.
        (None, "has(foo)", "", None, "", "has(foo)"),
        (None, None, "", None, "", ""),
        (None, "has(a)", "", "has(label1)", "namespace2", "(projectcalico.org/namespace == 'namespace2') && (has(a))"),
        (None, None, "", "has(label2)", "namespace2", "projectcalico.org/namespace == 'namespace2'"),
        ("namespacelabel1 == 'value1'", None, "", "has(label2)", "", 'pcns.namespacelabel1 == "value1"'),
        (
            "key == 'value'",
            "projectcalico.org/orchestrator == 'k8s'",
            "",
            None,
            "namespace",
            "(pcns.key == \"value\") && (projectcalico.org/orchestrator == 'k8s')",
        ),
        (
            "!has(key) || (has(key) && !key in {'value'})",
            None,
            "",
            None,
            "namespace",
            '(!has(pcns.key) || (has(pcns.key) && !pcns.key in {"value"}))',
        ),
        ("namespace == 'red'", "has(label1)", "", None, "namespace", '(pcns.namespace == "red") && (has(label1))'),
        ("all()", "has(label2)", "", None, "namespace", "(has(projectcalico.org/namespace)) && (has(label2))"),
        ("global()", "has(label3)", "", None, "namespace", "(!has(projectcalico.org/namespace)) && (has(label3))"),
    ],
)
def test_entity_selector(ns_sel, sel, sa, not_sel, ns, expected):
    assert selectors.entity_selector(ns_sel, sel, sa, not_sel, ns) == expected


def test_service_account_selectors():
    # Calico: rules_test.go "should parse a serviceaccount match".
    sa = selectors.service_accounts_selector(("sa1", "sa2"), "key == 'value1'")
    assert sa == '(pcsa.key == "value1") && (projectcalico.org/serviceaccount in {"sa1", "sa2"})'
    assert selectors.entity_selector(None, None, sa, None, "namespace") == (
        "(projectcalico.org/namespace == 'namespace') && "
        '((pcsa.key == "value1") && (projectcalico.org/serviceaccount in {"sa1", "sa2"}))'
    )
    sa3 = selectors.service_accounts_selector(("sa3",), "key == 'value2'")
    assert selectors.entity_selector("nskey == 'nsvalue'", "has(label1)", sa3, None, "namespace") == (
        '(pcns.nskey == "nsvalue") && (((pcsa.key == "value2") && '
        '(projectcalico.org/serviceaccount in {"sa3"})) && (has(label1)))'
    )
    assert selectors.service_accounts_selector(None, None) == ""


# --- rules ------------------------------------------------------------------------------


def test_protocols_become_numbers():
    assert [protocol_value(p) for p in ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite", 47, "47")] == [
        6,
        17,
        1,
        58,
        132,
        136,
        47,
        47,
    ]
    assert protocol_value(None) is None


def test_rule_full_normalisation():
    rule = normalise_rule(
        api_rule(
            action="Allow",
            ipVersion=4,
            protocol="TCP",
            notProtocol="UDP",
            source={
                "nets": ["10.100.10.1/32"],
                "selector": "mylabel == 'value1'",
                "ports": [80, "1000:2000"],
                "notNets": ["192.168.40.1/32"],
                "notSelector": "has(label1)",
                "notPorts": [443],
            },
            destination={"nets": ["10.100.1.0/24"], "ports": ["http", 8080]},
            metadata={"annotations": {"fizz": "buzz"}},
        ),
        "ns2",
    )
    assert (rule.action, rule.ip_version, rule.protocol, rule.not_protocol) == ("allow", 4, 6, 17)
    src, dst = rule.source, rule.destination
    assert src.nets == ("10.100.10.1/32",) and src.not_nets == ("192.168.40.1/32",)
    # The notSelector folds into the namespace-scoped positive selector (rule_scanner.go).
    assert src.selector == '((projectcalico.org/namespace == "ns2" && mylabel == "value1") && !has(label1))'
    assert src.not_selector is None and src.not_ip_sets == ()
    assert src.ip_sets == (ids.selector_set_id(src.selector),)
    assert src.ports == (PortRange(80, 80), PortRange(1000, 2000)) and src.not_ports == (PortRange(443, 443),)
    # Destination: numeric and named ports; no selector, so the named port set is over all().
    assert dst.ports == (PortRange(8080, 8080),) and dst.named_ports == ("http",)
    assert dst.named_port_sets == (ids.named_port_set_id("all()", "tcp", "http"),)
    assert dst.selector is None and dst.ip_sets == ()
    assert rule.annotations == (("fizz", "buzz"),)
    assert {s.id for s in rule.sets} == {*src.ip_sets, *dst.named_port_sets}


def test_not_selector_without_positive_selector_stays_separate():
    rule = normalise_rule(api_rule(action="Deny", source={"notSelector": "has(a)"}))
    assert rule.source.selector is None
    assert rule.source.not_selector == "has(a)"
    assert rule.source.not_ip_sets == (ids.selector_set_id("has(a)"),)


def test_not_selector_in_namespaced_policy_scopes_to_the_namespace():
    rule = normalise_rule(api_rule(action="Allow", source={"notSelector": "has(a)"}), "x")
    assert rule.source.selector == '(projectcalico.org/namespace == "x" && !has(a))'
    assert rule.source.not_ip_sets == ()


def test_named_ports_only_need_no_selector_set():
    destination = {"selector": "app == 'db'", "ports": ["dns"]}
    rule = normalise_rule(api_rule(action="Allow", protocol="UDP", destination=destination))
    dst = rule.destination
    assert dst.ip_sets == ()  # covered by the named-port set, which is filtered by the selector
    assert dst.named_port_sets == (ids.named_port_set_id('app == "db"', "udp", "dns"),)
    (spec,) = rule.sets
    assert (spec.kind, spec.selector, spec.named_port, spec.protocol, spec.set_type) == (
        "named-port",
        'app == "db"',
        "dns",
        17,
        "hash:ip,port",
    )


def test_named_port_without_protocol_is_tcp():
    rule = normalise_rule(api_rule(action="Allow", destination={"ports": ["http"]}))
    assert rule.protocol is None
    assert rule.destination.named_port_sets == (ids.named_port_set_id("all()", "tcp", "http"),)


def test_icmp_fields_and_actions():
    rule = normalise_rule(api_rule(action="Pass", protocol="ICMP", icmp={"type": 8, "code": 0}, notICMP={"type": 3}))
    assert (rule.action, rule.protocol, rule.icmp_type, rule.icmp_code, rule.not_icmp_type, rule.not_icmp_code) == (
        "pass",
        1,
        8,
        0,
        3,
        None,
    )
    assert normalise_rule(api_rule(action="Log")).action == "log"


def test_rule_ids_are_stable_and_content_based():
    a = normalise_rule(api_rule(action="Allow", protocol="TCP", destination={"ports": [80]}))
    b = normalise_rule(api_rule(action="Allow", protocol="TCP", destination={"ports": [80]}))
    c = normalise_rule(api_rule(action="Allow", protocol="TCP", destination={"ports": [81]}))
    assert a == b and hash(a) == hash(b) and a.id == b.id and len(a.id) == 16
    assert a.id != c.id


def test_services_are_kept_and_given_calicos_set_ids():
    services = {"name": "kube-dns", "namespace": "kube-system"}
    rule = normalise_rule(api_rule(action="Allow", destination={"services": services}))
    assert rule.destination.service == ("kube-system", "kube-dns")
    assert rule.destination.ip_sets == (ids.unique_id("svc", "kube-system/kube-dns"),)


# --- policies and profiles ----------------------------------------------------------------


def test_network_policy():
    policy = normalise_policy(
        one("""
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: knp.default.web, namespace: x}
spec:
  order: 1000
  selector: projectcalico.org/orchestrator == 'k8s' && app == 'web'
  ingress:
  - action: Allow
    source: {selector: app == 'client'}
""")
    )
    assert policy.key == "x/knp.default.web"
    assert (policy.kind, policy.namespace, policy.tier, policy.order) == ("NetworkPolicy", "x", "default", 1000.0)
    assert policy.selector == (
        '((projectcalico.org/orchestrator == "k8s" && app == "web") && projectcalico.org/namespace == "x")'
    )
    assert (policy.governs_ingress, policy.governs_egress, policy.apply_on_forward) == (True, False, True)
    assert policy.ingress[0].source.selector == '(projectcalico.org/namespace == "x" && app == "client")'
    assert policy.egress == ()


def test_global_policy_flags_types_and_ids():
    text = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: host-guard}
spec:
  selector: has(host)
  doNotTrack: true
  applyOnForward: true
  egress: [{action: Deny}]
"""
    policy = normalise_policy(one(text))
    assert policy.key == "host-guard" and policy.namespace == ""
    assert (policy.do_not_track, policy.pre_dnat, policy.apply_on_forward) == (True, False, True)
    assert (policy.governs_ingress, policy.governs_egress) == (False, True)  # only egress rules: [Egress]
    assert policy.order is None and policy.sort_key == (float("inf"), "host-guard//GlobalNetworkPolicy")
    assert normalise_policy(one(text)).id == policy.id
    assert normalise_policy(one(text.replace("Deny", "Allow"))).id != policy.id


def test_profile():
    profile = normalise_profile(
        one("""
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.x}
spec:
  labelsToApply: {pcns.ns: x}
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
""")
    )
    assert profile.labels == (("pcns.ns", "x"),)
    assert [r.action for r in profile.ingress + profile.egress] == ["allow", "allow"]


def test_api_rule_type_is_the_resources_rule():
    assert isinstance(api_rule(action="Allow"), ApiRule)
