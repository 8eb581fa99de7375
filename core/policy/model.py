"""``compile(state)``: the whole policy picture of one node, frozen.

What the iptables and nftables plugins render, and what :mod:`.evaluate` judges packets by:

* ``policies`` / ``profiles``: the normalised ones that apply to some endpoint (Felix
  programs only those), by key / name;
* ``endpoints``: each endpoint with its chains (the local ones; every endpoint of the
  cluster with ``scope="cluster"``), and ``all_endpoints`` for looking peers up;
* ``ip_sets``: every set the active rules use, with members from the whole cluster, plus
  Felix's ``all-ipam-pools`` and ``masq-ipam-pools``;
* ``failsafe`` ports for host endpoints, ``nat`` (natOutgoing pools), ``anti_spoofing``
  (each local workload's addresses) and the Felix ``settings`` the chains depend on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

import attrs

from pycalico.core.policy import ipsets
from pycalico.core.policy.endpoints import (
    Endpoint,
    EndpointKey,
    endpoint_source,
    host_endpoint,
    network_set_source,
    workload_endpoint,
)
from pycalico.core.policy.ipsets import IPSet
from pycalico.core.policy.resolve import PolicyIndex, ResolvedEndpoint, TierInfo, tiers_from
from pycalico.core.policy.rules import (
    DEFAULT_ALLOW_PROFILE,
    Policy,
    Profile,
    default_allow_profile,
    missing_profile,
    normalise_policy,
    normalise_profile,
)
from pycalico.core.resources.types import parse_cidr

Scope = Literal["node", "cluster"]


@attrs.frozen
class ProtoPort:
    """A failsafe port: protocol (``tcp``, ``udp``, ``sctp``), port, optional peer CIDR."""

    protocol: str
    port: int
    net: str | None = None


def _proto_ports(text: str) -> tuple[ProtoPort, ...]:
    return tuple(ProtoPort(p, int(n)) for p, n in (item.split(":") for item in text.split()))


# Felix's defaults (``felix/config/config_params.go``).
DEFAULT_FAILSAFE_INBOUND = _proto_ports("tcp:22 udp:68 tcp:179 tcp:2379 tcp:2380 tcp:5473 tcp:6443 tcp:6666 tcp:6667")
DEFAULT_FAILSAFE_OUTBOUND = _proto_ports("udp:53 udp:67 tcp:179 tcp:2379 tcp:2380 tcp:5473 tcp:6443 tcp:6666 tcp:6667")


@attrs.frozen
class Failsafe:
    """Accepted before any policy: ``inbound`` to this host, ``outbound`` from it."""

    inbound: tuple[ProtoPort, ...] = DEFAULT_FAILSAFE_INBOUND
    outbound: tuple[ProtoPort, ...] = DEFAULT_FAILSAFE_OUTBOUND


@attrs.frozen
class Settings:
    """The Felix settings the policy chains depend on (FelixConfiguration, node over global)."""

    interface_prefix: str = "cali"
    vxlan_port: int = 4789
    allow_vxlan_packets_from_workloads: bool = False
    allow_ipip_packets_from_workloads: bool = False
    default_endpoint_to_host_action: str = "Drop"
    iptables_filter_deny_action: str = "Drop"
    nftables_filter_deny_action: str = "Drop"
    log_prefix: str = "calico-packet"
    workload_source_spoofing: str = "Disabled"
    ipv6_support: bool = True


@attrs.frozen
class NatOutgoing:
    """natOutgoing: masquerade from ``masq_pools`` to anything outside ``all_pools``."""

    all_pools: IPSet
    masq_pools: IPSet

    @property
    def enabled(self) -> bool:
        return bool(self.masq_pools.members_v4 or self.masq_pools.members_v6)


@attrs.frozen
class AntiSpoof:
    """A local workload's allowed source addresses (RPF, raw-table checks)."""

    endpoint: EndpointKey
    interface: str | None
    addresses: tuple[str, ...]  # the endpoint's own /32 and /128 networks
    allowed_prefixes: tuple[str, ...]  # allowSpoofedSourcePrefixes, when workloadSourceSpoofing is Any


def _frozen_map(value: Mapping) -> Mapping:
    return MappingProxyType(dict(value))


@attrs.frozen(eq=False)
class PolicyModel:
    """The compiled policy of one node (see the module docstring). Compare by ``id`` fields."""

    node_name: str
    scope: Scope
    settings: Settings
    tiers: tuple[TierInfo, ...]
    policies: Mapping[str, Policy] = attrs.field(converter=_frozen_map)
    profiles: Mapping[str, Profile] = attrs.field(converter=_frozen_map)
    ip_sets: Mapping[str, IPSet] = attrs.field(converter=_frozen_map)
    endpoints: Mapping[EndpointKey, ResolvedEndpoint] = attrs.field(converter=_frozen_map)
    all_endpoints: Mapping[EndpointKey, Endpoint] = attrs.field(converter=_frozen_map)
    failsafe: Failsafe
    nat: NatOutgoing
    anti_spoofing: tuple[AntiSpoof, ...]

    @property
    def host_endpoints(self) -> tuple[ResolvedEndpoint, ...]:
        return tuple(r for r in self.endpoints.values() if not r.endpoint.is_workload)

    @property
    def workload_endpoints(self) -> tuple[ResolvedEndpoint, ...]:
        return tuple(r for r in self.endpoints.values() if r.endpoint.is_workload)

    def find(self, namespace: str, name: str) -> Endpoint:
        """A workload endpoint by namespace and endpoint or pod name, or a host endpoint by name."""
        for ep in self.all_endpoints.values():
            if ep.key.namespace == namespace and name in (ep.key.name, ep.pod):
                return ep
        raise KeyError(f"no endpoint {namespace}/{name}" if namespace else f"no endpoint {name}")


# --- Felix configuration ------------------------------------------------------------


def _felix_value(configs: list, attr: str):
    """The node-specific value if set, else the global one, else None."""
    for cfg in configs:
        value = getattr(cfg.spec, attr, None)
        if value is not None:
            return value
    return None


def _felix_configs(state) -> list:
    by_name = {c.name: c for c in state.of_kind("FelixConfiguration")}
    return [c for c in (by_name.get(f"node.{state.node_name}"), by_name.get("default")) if c is not None]


def _settings(configs: list) -> Settings:
    defaults = Settings()
    values = {}
    for field in attrs.fields(Settings):
        value = _felix_value(configs, field.name)
        values[field.name] = field.default if value is None else value
    return attrs.evolve(defaults, **values)


def _failsafe_ports(value) -> tuple[ProtoPort, ...] | None:
    if value is None:
        return None
    return tuple(ProtoPort((p.protocol or "TCP").lower(), p.port, p.net) for p in value)


def _failsafe(configs: list) -> Failsafe:
    inbound = _failsafe_ports(_felix_value(configs, "failsafe_inbound_host_ports"))
    outbound = _failsafe_ports(_felix_value(configs, "failsafe_outbound_host_ports"))
    return Failsafe(
        DEFAULT_FAILSAFE_INBOUND if inbound is None else inbound,
        DEFAULT_FAILSAFE_OUTBOUND if outbound is None else outbound,
    )


# --- compile ------------------------------------------------------------------------


def compile(state, *, scope: Scope = "node") -> PolicyModel:  # shadows the builtin inside this module only
    """Compile ``state`` (a :class:`~pycalico.core.calc.DesiredState`) into a :class:`PolicyModel`.

    ``scope="node"`` resolves the endpoints on ``state.node_name`` (what a dataplane
    programs); ``scope="cluster"`` resolves every endpoint of the cluster, as a packet judge
    needs to apply both ends' policy.
    """
    node = state.node_name
    configs = _felix_configs(state)
    settings = _settings(configs)

    profile_resources = {p.name: p for p in state.of_kind("Profile")}
    profile_labels = {name: p.spec.labels_to_apply or {} for name, p in profile_resources.items()}

    all_endpoints: dict[EndpointKey, Endpoint] = {}
    for wep in state.of_kind("WorkloadEndpoint"):
        ep = workload_endpoint(wep, profile_labels)
        if ep is not None:
            all_endpoints[ep.key] = ep
    for hep in state.of_kind("HostEndpoint"):
        ep = host_endpoint(hep, profile_labels)
        all_endpoints[ep.key] = ep
    all_endpoints = dict(sorted(all_endpoints.items()))

    targets = [ep for ep in all_endpoints.values() if scope == "cluster" or ep.node == node]

    all_policies = [
        normalise_policy(p) for kind in ("NetworkPolicy", "GlobalNetworkPolicy") for p in state.of_kind(kind)
    ]
    index = PolicyIndex(all_policies, tiers_from(state.of_kind("Tier")))
    endpoints = {ep.key: index.resolve(ep) for ep in targets}

    # Active policies and profiles: those some resolved endpoint uses.
    by_key = {p.key: p for p in all_policies}
    active_keys: set[str] = set()
    active_profiles: set[str] = set()
    for resolved in endpoints.values():
        for chain in _chains(resolved):
            active_keys.update(chain.policy_keys)
        active_profiles.update(resolved.endpoint.profiles)
    policies = {k: by_key[k] for k in sorted(active_keys)}
    profiles = {}
    for name in sorted(active_profiles):
        if name in profile_resources:
            profiles[name] = normalise_profile(profile_resources[name])
        elif name == DEFAULT_ALLOW_PROFILE:
            profiles[name] = default_allow_profile()
        else:
            profiles[name] = missing_profile(name)

    specs = {}
    for owner in (*policies.values(), *profiles.values()):
        for rule in (*owner.ingress, *owner.egress):
            for spec in rule.sets:
                specs.setdefault(spec.id, spec)
    sources = [endpoint_source(ep) for ep in all_endpoints.values()]
    for kind in ("NetworkSet", "GlobalNetworkSet"):
        sources += [network_set_source(s, profile_labels) for s in state.of_kind(kind)]
    ip_sets = ipsets.compute_sets(specs.values(), sources)

    pools = [(parse_cidr(p.spec.cidr)[1], bool(p.spec.nat_outgoing)) for p in state.of_kind("IPPool") if p.spec.cidr]
    all_pools, masq_pools = ipsets.pool_sets(pools)
    ip_sets[all_pools.id] = all_pools
    ip_sets[masq_pools.id] = masq_pools

    spoofing = settings.workload_source_spoofing == "Any"
    anti_spoofing = tuple(
        AntiSpoof(
            endpoint=ep.key,
            interface=ep.interface,
            addresses=tuple(str(ipaddress.ip_network(a)) for a in ep.addresses),
            allowed_prefixes=ep.allow_spoofed_source_prefixes if spoofing else (),
        )
        for ep in all_endpoints.values()
        if ep.is_workload and ep.node == node
    )

    return PolicyModel(
        node_name=node,
        scope=scope,
        settings=settings,
        tiers=index.tiers,
        policies=policies,
        profiles=profiles,
        ip_sets=dict(sorted(ip_sets.items())),
        endpoints=endpoints,
        all_endpoints=all_endpoints,
        failsafe=_failsafe(configs),
        nat=NatOutgoing(all_pools, masq_pools),
        anti_spoofing=anti_spoofing,
    )


def _chains(resolved: ResolvedEndpoint):
    for chain in (
        resolved.ingress,
        resolved.egress,
        resolved.forward_ingress,
        resolved.forward_egress,
        resolved.untracked_ingress,
        resolved.untracked_egress,
        resolved.pre_dnat_ingress,
    ):
        if chain is not None:
            yield chain
