"""Normalised rules, policies and profiles: what a dataplane matches on.

The v3 API objects go through Calico's processing before Felix renders them:

* ``libcalico-go/lib/backend/syncersv1/updateprocessors/`` turns each rule into the backend
  form: actions in lower case (``Pass`` is ``next-tier``, here ``pass``), protocol names
  in lower case, one combined selector per side (namespace scoping, ``pcns.``/``pcsa.``
  prefixes; see :mod:`.selectors`);
* ``felix/calc/rule_scanner.go`` turns selectors and named ports into IP set ids: the
  notSelector is folded into the positive selector when there is one; named ports are
  split from numeric ones and become ``ip,port`` sets filtered by the positive selector
  (protocol TCP unless the rule says UDP or SCTP); a side with only named ports needs no
  separate selector set.

A dataplane renders each :class:`Rule` 1:1: every listed condition must hold; numeric
ports OR named-port sets; ``nets`` OR'ed; ``not_*`` lists are "none of".
"""

from __future__ import annotations

import ipaddress
from typing import Literal

import attrs

from pycalico.core.policy import ids, ipsets
from pycalico.core.policy.ipsets import SetSpec
from pycalico.core.policy.selectors import (
    canonical,
    combine_negation,
    entity_selector,
    global_policy_selector,
    network_policy_selector,
    service_accounts_selector,
)
from pycalico.core.resources.policy import default_policy_types
from pycalico.core.resources.types import parse_port, protocol_number

Action = Literal["allow", "deny", "pass", "log"]
Direction = Literal["ingress", "egress"]

ACTIONS: dict[str, Action] = {"Allow": "allow", "Deny": "deny", "Pass": "pass", "Log": "log"}
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "udplite": 136}
TCP, UDP, SCTP = 6, 17, 132


def protocol_value(value: int | str | None) -> int | None:
    """A rule or endpoint protocol as its number: ``"TCP"`` and ``6`` are 6."""
    if value is None:
        return None
    number = protocol_number(value)
    if number is not None:
        return number
    try:
        return PROTOCOLS[str(value).lower()]
    except KeyError:
        raise ValueError(f"unknown protocol {value!r}") from None


@attrs.frozen
class PortRange:
    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


@attrs.frozen
class Side:
    """One side (source or destination) of a rule, after Calico's processing.

    ``selector`` is the combined positive selector (namespace scoping, namespace and service
    account selectors, and the notSelector folded in when possible); ``not_selector`` the
    notSelector when it could not be folded. ``ip_sets`` / ``not_ip_sets`` are the ids the
    address must be in / in none of; ``named_port_sets`` are OR'ed with ``ports``. A
    destination service set (``hash:ip,port``, see :class:`~.ipsets.SetSpec`) in ``ip_sets``
    is matched on address and port together, as Felix's ``DstIPPortSetIDs``.
    """

    nets: tuple[str, ...] = ()
    not_nets: tuple[str, ...] = ()
    selector: str | None = None
    not_selector: str | None = None
    ports: tuple[PortRange, ...] = ()
    named_ports: tuple[str, ...] = ()
    not_ports: tuple[PortRange, ...] = ()
    not_named_ports: tuple[str, ...] = ()
    ip_sets: tuple[str, ...] = ()
    not_ip_sets: tuple[str, ...] = ()
    named_port_sets: tuple[str, ...] = ()
    not_named_port_sets: tuple[str, ...] = ()
    service: tuple[str, str] | None = None  # (namespace, name)


@attrs.frozen
class Rule:
    """A normalised rule. ``id`` is a short hash of everything else."""

    action: Action
    ip_version: int | None = None
    protocol: int | None = None
    not_protocol: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    not_icmp_type: int | None = None
    not_icmp_code: int | None = None
    source: Side = Side()
    destination: Side = Side()
    http: bool = False  # an HTTP match is present (not enforced by the L3/L4 dataplanes)
    annotations: tuple[tuple[str, str], ...] = ()
    sets: tuple[SetSpec, ...] = ()  # every set the rule refers to
    id: str = ""


def _nets(values) -> tuple[str, ...]:
    return tuple(str(ipaddress.ip_network(v, strict=False)) for v in values or ())


def _ports(values) -> tuple[tuple[PortRange, ...], tuple[str, ...]]:
    numeric, named = [], []
    for value in values or ():
        parsed = parse_port(value)
        if isinstance(parsed, str):
            named.append(parsed)
        else:
            numeric.append(PortRange(*parsed))
    return tuple(numeric), tuple(named)


def _side(entity, namespace: str, named_port_protocol: int, include_ports: bool) -> tuple[Side, list[SetSpec]]:
    """One side of a rule, and the sets it refers to."""
    if entity is None:
        return Side(), []
    sa = entity.service_accounts
    sa_sel = service_accounts_selector(sa.names, sa.selector) if sa is not None else ""
    positive = entity_selector(entity.namespace_selector, entity.selector, sa_sel, entity.not_selector, namespace)
    positive, negated = combine_negation(positive, entity.not_selector or "")
    positive = canonical(positive) if positive else ""
    negated = canonical(negated) if negated else ""
    ports, named = _ports(entity.ports)
    not_ports, not_named = _ports(entity.not_ports)

    # Named ports become ip,port sets filtered by the positive selector (all() without one),
    # the negated ones too: the rule can only match where the positive selector does.
    port_selector = positive or canonical("all()")
    np_sets = [ipsets.named_port_set(port_selector, named_port_protocol, n) for n in named]
    not_np_sets = [ipsets.named_port_set(port_selector, named_port_protocol, n) for n in not_named]
    sel_sets = [ipsets.selector_set(positive)] if positive and (ports or not named) else []
    not_sel_sets = [ipsets.selector_set(negated)] if negated else []
    service = None
    if entity.services is not None:
        service = (entity.services.namespace or namespace, entity.services.name)
        sel_sets.append(ipsets.service_set(*service, include_ports=include_ports))
    side = Side(
        nets=_nets(entity.nets),
        not_nets=_nets(entity.not_nets),
        selector=positive or None,
        not_selector=negated or None,
        ports=ports,
        named_ports=named,
        not_ports=not_ports,
        not_named_ports=not_named,
        ip_sets=tuple(s.id for s in sel_sets),
        not_ip_sets=tuple(s.id for s in not_sel_sets),
        named_port_sets=tuple(s.id for s in np_sets),
        not_named_port_sets=tuple(s.id for s in not_np_sets),
        service=service,
    )
    return side, np_sets + not_np_sets + sel_sets + not_sel_sets


def normalise_rule(rule, namespace: str = "") -> Rule:
    """A v3 ``Rule`` of a policy in ``namespace`` ("" for global policies and profiles)."""
    protocol = protocol_value(rule.protocol)
    named_port_protocol = protocol if protocol in (UDP, SCTP) else TCP
    source, src_sets = _side(rule.source, namespace, named_port_protocol, include_ports=False)
    destination, dst_sets = _side(rule.destination, namespace, named_port_protocol, include_ports=True)
    annotations = ()
    if rule.metadata is not None and rule.metadata.annotations:
        annotations = tuple(sorted(rule.metadata.annotations.items()))
    sets: dict[str, SetSpec] = {}
    for spec in src_sets + dst_sets:
        sets.setdefault(spec.id, spec)
    icmp, not_icmp = rule.icmp, rule.not_icmp
    normalised = Rule(
        action=ACTIONS[rule.action or "Allow"],
        ip_version=rule.ip_version,
        protocol=protocol,
        not_protocol=protocol_value(rule.not_protocol),
        icmp_type=icmp.type if icmp else None,
        icmp_code=icmp.code if icmp else None,
        not_icmp_type=not_icmp.type if not_icmp else None,
        not_icmp_code=not_icmp.code if not_icmp else None,
        source=source,
        destination=destination,
        http=rule.http is not None,
        annotations=annotations,
        sets=tuple(sets.values()),
    )
    return attrs.evolve(normalised, id=ids.content_hash(normalised))


# Felix's stand-in for a profile an endpoint names but the datastore lacks
# (``DummyDropRules`` in ``felix/calc/active_rules_calculator.go``).
_DROP = attrs.evolve(Rule(action="deny"), id=ids.content_hash(Rule(action="deny")))


@attrs.frozen
class Policy:
    """A normalised NetworkPolicy or GlobalNetworkPolicy.

    ``key`` names it: ``<namespace>/<name>`` for a NetworkPolicy (``knp.default.*`` included),
    ``<name>`` for a GlobalNetworkPolicy. ``selector`` is the canonical endpoint selector
    Felix evaluates. ``id`` hashes the content, so a changed policy gets a new id.
    """

    key: str
    kind: str
    namespace: str
    name: str
    tier: str
    order: float | None
    selector: str
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]
    governs_ingress: bool
    governs_egress: bool
    do_not_track: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False
    id: str = ""

    def rules(self, direction: Direction) -> tuple[Rule, ...]:
        return self.ingress if direction == "ingress" else self.egress

    @property
    def sort_key(self) -> tuple[float, str]:
        """Felix's order within a tier: order (none = last), then name/namespace/kind."""
        order = float("inf") if self.order is None else self.order
        return order, f"{self.name}/{self.namespace}/{self.kind}"


def policy_key(kind: str, namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if kind == "NetworkPolicy" else name


def normalise_policy(resource) -> Policy:
    """A NetworkPolicy or GlobalNetworkPolicy resource as Felix sees it."""
    spec = resource.spec
    kind = type(resource).KIND
    namespace = resource.namespace if kind == "NetworkPolicy" else ""
    if kind == "NetworkPolicy":
        selector = network_policy_selector(spec.selector, namespace, spec.service_account_selector)
        flags = {"apply_on_forward": True}  # Calico sets it for every NetworkPolicy
    else:
        selector = global_policy_selector(spec.selector, spec.namespace_selector, spec.service_account_selector)
        flags = {
            "do_not_track": bool(spec.do_not_track),
            "pre_dnat": bool(spec.pre_dnat),
            "apply_on_forward": bool(spec.apply_on_forward),
        }
    types = {t.lower() for t in (spec.types or default_policy_types(spec.ingress, spec.egress))}
    policy = Policy(
        key=policy_key(kind, namespace, resource.name),
        kind=kind,
        namespace=namespace,
        name=resource.name,
        tier=spec.tier or "default",
        order=None if spec.order is None else float(spec.order),
        selector=canonical(selector),
        ingress=tuple(normalise_rule(r, namespace) for r in spec.ingress or ()),
        egress=tuple(normalise_rule(r, namespace) for r in spec.egress or ()),
        governs_ingress="ingress" in types,
        governs_egress="egress" in types,
        **flags,
    )
    return attrs.evolve(policy, id=ids.content_hash(policy))


@attrs.frozen
class Profile:
    """A normalised Profile; ``missing`` marks Felix's drop-all stand-in for an absent one."""

    name: str
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]
    labels: tuple[tuple[str, str], ...] = ()
    missing: bool = False
    id: str = ""

    def rules(self, direction: Direction) -> tuple[Rule, ...]:
        return self.ingress if direction == "ingress" else self.egress


def normalise_profile(resource) -> Profile:
    spec = resource.spec
    profile = Profile(
        name=resource.name,
        ingress=tuple(normalise_rule(r) for r in spec.ingress or ()),
        egress=tuple(normalise_rule(r) for r in spec.egress or ()),
        labels=tuple(sorted((spec.labels_to_apply or {}).items())),
    )
    return attrs.evolve(profile, id=ids.content_hash(profile))


def missing_profile(name: str) -> Profile:
    profile = Profile(name=name, ingress=(_DROP,), egress=(_DROP,), missing=True)
    return attrs.evolve(profile, id=ids.content_hash(profile))


# Calico provides this one (allow everything both ways) whether or not it is stored.
DEFAULT_ALLOW_PROFILE = "projectcalico-default-allow"


def default_allow_profile() -> Profile:
    allow = attrs.evolve(Rule(action="allow"), id=ids.content_hash(Rule(action="allow")))
    profile = Profile(name=DEFAULT_ALLOW_PROFILE, ingress=(allow,), egress=(allow,))
    return attrs.evolve(profile, id=ids.content_hash(profile))
