"""Policy: rules, NetworkPolicy, GlobalNetworkPolicy, Tier, Profile, NetworkSet, GlobalNetworkSet.

From ``api/pkg/apis/projectcalico/v3/`` (policy_common.go, networkpolicy.go,
globalnetworkpolicy.go, tier.go, profile.go, networkset.go, globalnetworkset.go) and the
checks of ``libcalico-go/lib/validator/v3/validator.go``.
"""

from __future__ import annotations

import re

import attrs

from pycalico.core.resources.base import Many, each, field, model
from pycalico.core.resources.meta import ConditionStatus, Resource
from pycalico.core.resources.types import (
    LABEL_FMT,
    SUBDOMAIN_FMT,
    Port,
    Protocol,
    annotation_problems,
    check_cidr,
    check_name,
    check_net,
    check_port,
    check_protocol,
    check_selector,
    is_named_port,
    label_problems,
    network,
    protocol_is,
    supports_ports,
)
from pycalico.core.schema import check, in_range, one_of, validated

ACTIONS = ("Allow", "Deny", "Log", "Pass")
POLICY_TYPES = ("Ingress", "Egress")
PERFORMANCE_HINTS = ("AssumeNeededOnEveryNode",)
GLOBAL = "global()"
PORTS_NEED_PROTOCOL = "rules that specify ports must set protocol to TCP or UDP or SCTP"

# Tiers Calico creates, and the order each must keep.
DEFAULT_TIER = "default"
TIER_ORDERS = {"default": 1_000_000.0, "kube-admin": 1_000.0, "kube-baseline": 10_000_000.0}

_NP_NAME = re.compile(rf"({LABEL_FMT})(\.{LABEL_FMT})?|(knp|ossg)\.default\.({SUBDOMAIN_FMT})")
_GNP_NAME = re.compile(rf"({LABEL_FMT}\.)?{LABEL_FMT}")
_TIER_NAME = re.compile(LABEL_FMT)


@model
class ICMPFields:
    type: int | None = field(in_range(0, 254))
    code: int | None = field(in_range(0, 255))

    def _checks(self):
        if self.code is not None and self.type is None:
            yield "code", "ICMP code specified without an ICMP type"


@model
class ServiceMatch:
    name: str | None = field(validated(check_name))
    namespace: str | None = field(validated(check_name))


@model
class ServiceAccountMatch:
    names: tuple[str, ...] | None = field()
    selector: str | None = field(validated(check_selector))


@model
class HTTPPath:
    exact: str | None = field()
    prefix: str | None = field()

    def _checks(self):
        if self.exact and self.prefix:
            yield "", "both 'exact' and 'prefix' are set; use one"
            return
        value = self.exact or self.prefix
        if not value:
            yield "", "either 'exact' or 'prefix' must be set"
        elif not value.startswith("/") or any(c in value for c in "? #"):
            yield (
                "exact" if self.exact else "prefix",
                f"invalid path {value!r}: must start with '/' and not contain '?', '#' or spaces",
            )


@model
class HTTPMatch:
    methods: tuple[str, ...] | None = field()
    paths: tuple[HTTPPath, ...] | None = field()

    def _checks(self):
        methods = self.methods or ()
        if len(set(methods)) != len(methods):
            yield "methods", f"duplicate methods in {list(methods)}"


@model
class RuleMetadata:
    annotations: dict[str, str] | None = field(Many(annotation_problems))


def _global_only(selector: str) -> bool:
    return selector.replace(" ", "").replace("\t", "") == GLOBAL


@model
class EntityRule:
    nets: tuple[str, ...] | None = field(each(check_net))
    selector: str | None = field(validated(check_selector))
    namespace_selector: str | None = field(validated(check_selector))
    services: ServiceMatch | None = field()
    ports: tuple[Port, ...] | None = field(each(check_port))
    not_nets: tuple[str, ...] | None = field(each(check_net))
    not_selector: str | None = field(validated(check_selector))
    not_ports: tuple[Port, ...] | None = field(each(check_port))
    service_accounts: ServiceAccountMatch | None = field()

    def _checks(self):
        if self.selector and GLOBAL in self.selector:
            yield "selector", f"{GLOBAL} can only be used in an EntityRule namespaceSelector"
        ns = self.namespace_selector or ""
        if "global(" in ns and not _global_only(ns):
            yield "namespaceSelector", f"{GLOBAL} cannot be combined with other selectors"
        if self.services is not None:
            if not self.services.name:
                yield "services", "must specify a service name"
            if self.namespace_selector:
                yield "services", "cannot specify namespaceSelector and services on the same rule"
            if self.selector or self.not_selector:
                yield "services", "cannot specify selector/notSelector and services on the same rule"
            if self.service_accounts is not None:
                yield "services", "cannot specify serviceAccounts and services on the same rule"
            if self.nets or self.not_nets:
                yield "services", "cannot specify nets/notNets and services on the same rule"


@model
class Rule:
    action: str | None = field(one_of(*ACTIONS))
    ip_version: int | None = field(check(lambda v: v in (4, 6), "must be 4 or 6, got {value!r}"))
    protocol: Protocol | None = field(validated(check_protocol))
    icmp: ICMPFields | None = field()
    not_protocol: Protocol | None = field(validated(check_protocol))
    not_icmp: ICMPFields | None = field(key="notICMP")
    source: EntityRule | None = field()
    destination: EntityRule | None = field()
    http: HTTPMatch | None = field()
    metadata: RuleMetadata | None = field()

    def _checks(self):
        if self.action is None:
            yield "action", "is required"
        for side_name, side in (("source", self.source), ("destination", self.destination)):
            if side is None:
                continue
            for attr, name in (("ports", "ports"), ("not_ports", "notPorts")):
                ports = getattr(side, attr) or ()
                if not ports:
                    continue
                if self.protocol is None:
                    if not all(is_named_port(p) for p in ports):
                        yield f"{side_name}.{name}", PORTS_NEED_PROTOCOL
                elif not supports_ports(self.protocol):
                    yield f"{side_name}.{name}", PORTS_NEED_PROTOCOL
        if self.http is not None:
            if self.protocol is not None and not protocol_is(self.protocol, "TCP"):
                yield "protocol", "rules that specify HTTP fields must set protocol to TCP or leave it empty"
            if self.action not in (None, "Allow"):
                yield "http", "only valid for Allow rules"
        icmpish = protocol_is(self.protocol, "ICMP") or protocol_is(self.protocol, "ICMPv6")
        if self.icmp is not None and not icmpish:
            yield "icmp", "rules that specify ICMP fields must set protocol to ICMP or ICMPv6"
        for proto in (self.protocol, self.not_protocol):
            if protocol_is(proto, "ICMP") and self.ip_version not in (None, 4):
                yield "ipVersion", "must be 4 with protocol ICMP"
            if protocol_is(proto, "ICMPv6") and self.ip_version not in (None, 6):
                yield "ipVersion", "must be 6 with protocol ICMPv6"
        yield from self._net_version_checks()
        dest = self.destination
        if dest is not None and dest.services is not None:
            if dest.ports:
                yield "destination.ports", "cannot specify ports with a service selector"
            if dest.not_ports:
                yield "destination.notPorts", "cannot specify notPorts with a service selector"

    def _net_version_checks(self):
        seen: set[int] = set()
        for side_name, side in (("source", self.source), ("destination", self.destination)):
            if side is None:
                continue
            for attr, name in (("nets", "nets"), ("not_nets", "notNets")):
                versions = set()
                for text in getattr(side, attr) or ():
                    try:
                        versions.add(network(text).version)
                    except ValueError:
                        pass  # reported by the field check
                if not versions:
                    continue
                where = f"{side_name}.{name}"
                if self.ip_version is not None and versions != {self.ip_version}:
                    yield where, "rule IP version doesn't match CIDR version"
                if len(versions) > 1 or (seen and versions != seen):
                    yield where, "rule contains both IPv4 and IPv6 CIDRs"
                seen |= versions


def default_policy_types(ingress, egress) -> tuple[str, ...]:
    """Calico's default for an empty ``types`` (``api/pkg/defaults/networkpolicy.go``)."""
    if egress and ingress:
        return ("Ingress", "Egress")
    if egress:
        return ("Egress",)
    return ("Ingress",)


def _policy_checks(spec, global_policy: bool):
    types = spec.types or ()
    for t in sorted({t for t in types if types.count(t) > 1}):
        yield "types", f"{t!r} type specified more than once"
    for i, rule in enumerate(spec.egress or ()):
        if rule.source is not None and rule.source.services is not None:
            yield f"egress[{i}].source.services", "not allowed in egress rule source"
        if rule.http is not None:
            yield f"egress[{i}].http", "not allowed in egress rules"
        if global_policy and rule.destination is not None and rule.destination.services is not None:
            if not rule.destination.services.namespace:
                yield f"egress[{i}].destination.services.namespace", "must specify a namespace"
    for i, rule in enumerate(spec.ingress or ()):
        if rule.destination is not None and rule.destination.services is not None:
            yield f"ingress[{i}].destination.services", "not allowed in ingress rule destination"
        if global_policy and rule.source is not None and rule.source.services is not None:
            if not rule.source.services.namespace:
                yield f"ingress[{i}].source.services.namespace", "must specify a namespace"
    for name, value in (("selector", spec.selector), ("serviceAccountSelector", spec.service_account_selector)):
        if value and GLOBAL in value:
            yield name, f"{GLOBAL} can only be used in an EntityRule namespaceSelector"
    hints = spec.performance_hints or ()
    if len(set(hints)) != len(hints):
        yield "performanceHints", "hints must be unique"


class _Policy(Resource):
    """What NetworkPolicy and GlobalNetworkPolicy share: spec defaults and a name rule."""

    NAME_RE: re.Pattern

    def _defaults(self):
        return attrs.evolve(self, spec=self.spec.with_defaults())

    def _name_problem(self, name: str) -> str | None:
        problem = super()._name_problem(name)
        if problem is None and not self.NAME_RE.fullmatch(name):
            problem = (
                f"{name!r} is not a valid policy name: use lower case alphanumeric characters or '-', "
                "with at most one '.'"
            )
        return problem


@model
class _PolicySpec:
    """The spec fields NetworkPolicy and GlobalNetworkPolicy share."""

    tier: str | None = field(validated(check_name))
    order: float | None = field()
    ingress: tuple[Rule, ...] | None = field()
    egress: tuple[Rule, ...] | None = field()
    selector: str | None = field(validated(check_selector))
    types: tuple[str, ...] | None = field(each(lambda v: _one_of(v, POLICY_TYPES)))
    service_account_selector: str | None = field(validated(check_selector))
    performance_hints: tuple[str, ...] | None = field(each(lambda v: _one_of(v, PERFORMANCE_HINTS)))

    def with_defaults(self):
        """Calico's defaults: types from the rules present, the default tier."""
        changes = {}
        if not self.types:
            changes["types"] = default_policy_types(self.ingress, self.egress)
        if not self.tier:
            changes["tier"] = DEFAULT_TIER
        return attrs.evolve(self, **changes) if changes else self


@model
class NetworkPolicySpec(_PolicySpec):
    def _checks(self):
        yield from _policy_checks(self, global_policy=False)


def _one_of(value, choices) -> None:
    if value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")


@model
class NetworkPolicy(_Policy):
    KIND = "NetworkPolicy"
    PLURAL = "networkpolicies"
    NAMESPACED = True
    NAME_RE = _NP_NAME

    spec: NetworkPolicySpec = field(factory=NetworkPolicySpec)
    status: ConditionStatus | None = field()


@model
class GlobalNetworkPolicySpec(_PolicySpec):
    do_not_track: bool | None = field()
    pre_dnat: bool | None = field(key="preDNAT")
    apply_on_forward: bool | None = field()
    namespace_selector: str | None = field(validated(check_selector))

    def _checks(self):
        if self.do_not_track and self.pre_dnat:
            yield "preDNAT", "preDNAT and doNotTrack cannot both be true"
        if self.pre_dnat and self.egress:
            yield "egress", "a preDNAT policy cannot have egress rules"
        if self.pre_dnat and "Egress" in (self.types or ()):
            yield "types", "a preDNAT policy cannot have the Egress type"
        if not self.apply_on_forward and (self.do_not_track or self.pre_dnat):
            yield "applyOnForward", "must be true if either preDNAT or doNotTrack is true"
        yield from _policy_checks(self, global_policy=True)
        if self.namespace_selector and GLOBAL in self.namespace_selector:
            yield "namespaceSelector", f"{GLOBAL} can only be used in an EntityRule namespaceSelector"


@model
class GlobalNetworkPolicy(_Policy):
    KIND = "GlobalNetworkPolicy"
    PLURAL = "globalnetworkpolicies"
    NAME_RE = _GNP_NAME

    spec: GlobalNetworkPolicySpec = field(factory=GlobalNetworkPolicySpec)


@model
class TierSpec:
    order: float | None = field()
    default_action: str | None = field(one_of("Deny", "Pass"))


@model
class Tier(Resource):
    KIND = "Tier"
    PLURAL = "tiers"

    spec: TierSpec = field(factory=TierSpec)

    def _defaults(self):
        if self.spec.default_action is None:
            return attrs.evolve(self, spec=attrs.evolve(self.spec, default_action="Deny"))
        return self

    def _name_problem(self, name: str) -> str | None:
        if len(name) > 63:
            return f"name is too long by {len(name) - 63} characters (at most 63 for a tier)"
        if not _TIER_NAME.fullmatch(name):
            return f"{name!r} is not a valid tier name: use lower case alphanumeric characters or '-' (no '.')"
        return None

    def _resource_checks(self):
        required = TIER_ORDERS.get(self.name)
        if required is not None and self.spec.order != required:
            yield "spec.order", f"the {self.name} tier's order must be {required:.0f}"


@model
class ProfileSpec:
    ingress: tuple[Rule, ...] | None = field()
    egress: tuple[Rule, ...] | None = field()
    labels_to_apply: dict[str, str] | None = field(Many(label_problems))


@model
class Profile(Resource):
    KIND = "Profile"
    PLURAL = "profiles"
    API_VERSIONS = ("projectcalico.org/v3",)

    spec: ProfileSpec = field(factory=ProfileSpec)


@model
class NetworkSetSpec:
    nets: tuple[str, ...] | None = field(each(check_cidr))


_NAMESPACE_LABEL = "projectcalico.org/namespace"


def _no_namespace_label(res: Resource):
    if _NAMESPACE_LABEL in (res.metadata.labels or {}):
        yield f"metadata.labels.{_NAMESPACE_LABEL}", f"{_NAMESPACE_LABEL} is not a valid label name"


@model
class NetworkSet(Resource):
    KIND = "NetworkSet"
    PLURAL = "networksets"
    NAMESPACED = True

    spec: NetworkSetSpec = field(factory=NetworkSetSpec)

    def _resource_checks(self):
        return _no_namespace_label(self)


@model
class GlobalNetworkSet(Resource):
    KIND = "GlobalNetworkSet"
    PLURAL = "globalnetworksets"

    spec: NetworkSetSpec = field(factory=NetworkSetSpec)

    def _resource_checks(self):
        return _no_namespace_label(self)
