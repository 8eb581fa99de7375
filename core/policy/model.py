"""The compiled policy of one node: :class:`PolicyModel` and the values it holds.

What the iptables and nftables plugins render, and what :mod:`.evaluate` judges packets by
(:mod:`.compiler` makes it):

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

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

import attrs

from pycalico.core import felixconfig
from pycalico.core.policy.endpoints import Endpoint, EndpointKey
from pycalico.core.policy.ipsets import IPSet
from pycalico.core.policy.resolve import ResolvedEndpoint, TierInfo
from pycalico.core.policy.rules import Policy, Profile

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


@attrs.frozen
class Changes:
    """What differs between a model and the model numbered ``since`` (the same compiler's
    previous pass), for a dataplane that rendered that one to redo only this.

    ``policies`` / ``profiles``: active ones added, removed or changed, by key / name;
    ``endpoints``: in-scope endpoints added, removed, resolved again, or whose policies
    moved in their tiers (a superset: an endpoint listed may render as before);
    ``ip_sets``: sets added, removed or with other members, by id; ``rest``: anything
    else a dataplane renders from changed (settings, tiers, failsafe ports, NAT pools,
    anti-spoofing). Changes to ``all_endpoints`` alone are not listed.
    """

    since: int
    policies: frozenset[str] = frozenset()
    profiles: frozenset[str] = frozenset()
    endpoints: frozenset[EndpointKey] = frozenset()
    ip_sets: frozenset[str] = frozenset()
    rest: bool = False


@attrs.frozen(eq=False)
class PolicyModel:
    """The compiled policy of one node (see the module docstring). Compare by ``id`` fields.

    ``serial`` numbers the model (unique in the process); ``changes`` says what differs
    from an earlier one, None when unknown (a first pass, or a model made from scratch).
    """

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
    serial: int = 0
    changes: Changes | None = None

    def changes_since(self, serial: int | None) -> Changes | None:
        """What differs from the model numbered ``serial``; None when that is not known."""
        if self.serial and self.serial == serial:
            return Changes(since=serial)  # the same model again: nothing
        if self.changes is not None and self.changes.since == serial:
            return self.changes
        return None

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


def _settings(configs: list) -> Settings:
    defaults = Settings()
    values = {}
    for field in attrs.fields(Settings):
        value = felixconfig.value(configs, field.name)
        values[field.name] = field.default if value is None else value
    return attrs.evolve(defaults, **values)


def _failsafe_ports(value) -> tuple[ProtoPort, ...] | None:
    if value is None:
        return None
    return tuple(ProtoPort((p.protocol or "TCP").lower(), p.port, p.net) for p in value)


def _failsafe(configs: list) -> Failsafe:
    inbound = _failsafe_ports(felixconfig.value(configs, "failsafe_inbound_host_ports"))
    outbound = _failsafe_ports(felixconfig.value(configs, "failsafe_outbound_host_ports"))
    return Failsafe(
        DEFAULT_FAILSAFE_INBOUND if inbound is None else inbound,
        DEFAULT_FAILSAFE_OUTBOUND if outbound is None else outbound,
    )


def felix_settings(state) -> tuple[Settings, Failsafe]:
    """The Felix settings and failsafe ports of ``state``'s node (FelixConfiguration ``node.<node>`` over ``default``)."""
    configs = felixconfig.configs(state)
    return _settings(configs), _failsafe(configs)
