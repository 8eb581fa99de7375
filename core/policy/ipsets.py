"""Dataplane-neutral sets: what each selector, named port or pool list stands for.

Every selector a rule uses becomes a set of addresses, every named port a set of
``address,protocol:port`` members, as in Felix (``felix/calc/rule_scanner.go``,
``felix/labelindex/named_port_index.go``). Members come from every endpoint of the cluster
whose labels (its own, then those its profiles apply) match: workload endpoints (their
``ipNetworks``), host endpoints (their ``expectedIPs``) and network sets (their ``nets``;
Calico's label index holds all three). iptables renders these as ipsets, nftables as sets.

The kernel names are Felix's: ``cali40`` / ``cali60`` + id, cut to 31 characters.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Literal

import attrs

from pycalico.core.policy import ids
from pycalico.core.selector import parse

SetKind = Literal["selector", "named-port", "service", "pools"]
PROTOCOL_NAMES = {6: "tcp", 17: "udp", 132: "sctp"}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen
class SetSpec:
    """What a set stands for; ``id`` is Calico's."""

    id: str
    kind: SetKind
    selector: str | None = None  # canonical; for selector and named-port sets
    named_port: str | None = None
    protocol: int | None = None  # 6, 17 or 132 for a named-port set
    service: tuple[str, str] | None = None  # (namespace, name) of a service set
    include_ports: bool = False  # a service set of address + port members

    @property
    def set_type(self) -> Literal["hash:net", "hash:ip,port"]:
        """The kernel set type: addresses and CIDRs, or address + protocol + port."""
        return "hash:ip,port" if self.kind == "named-port" or self.include_ports else "hash:net"

    def name(self, version: int) -> str:
        return ids.ipset_name(self.id, version)


def selector_set(selector: str) -> SetSpec:
    return SetSpec(id=ids.selector_set_id(selector), kind="selector", selector=selector)


def named_port_set(selector: str, protocol: int, port_name: str) -> SetSpec:
    proto = PROTOCOL_NAMES[protocol]
    return SetSpec(
        id=ids.named_port_set_id(selector, proto, port_name),
        kind="named-port",
        selector=selector,
        named_port=port_name,
        protocol=protocol,
    )


def service_set(namespace: str, name: str, *, include_ports: bool) -> SetSpec:
    return SetSpec(
        id=ids.service_set_id(namespace, name, include_ports=include_ports),
        kind="service",
        service=(namespace, name),
        include_ports=include_ports,
    )


@attrs.frozen
class IPSet:
    """A set and its members, per IP version, sorted.

    Members are Felix's strings: ``10.0.0.1/32`` and ``10.1.0.0/16`` for address sets,
    ``10.0.0.1,tcp:8080`` for named-port sets (IPv6 likewise).
    """

    spec: SetSpec
    members_v4: tuple[str, ...] = ()
    members_v6: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.spec.id

    def name(self, version: int) -> str:
        return self.spec.name(version)

    def members(self, version: int) -> tuple[str, ...]:
        return self.members_v4 if version == 4 else self.members_v6


@attrs.frozen
class MemberSource:
    """One label-index entry: an endpoint or network set, with its effective labels."""

    labels: Mapping[str, str] = attrs.field(eq=False)
    nets: tuple[Network, ...]
    ports: tuple[tuple[str, int, int], ...] = ()  # (name, protocol number, port)


def _split_default(net: Network) -> tuple[Network, ...]:
    # The kernel sets cannot hold a /0: Felix stores two /1s instead.
    if net.prefixlen:
        return (net,)
    return tuple(net.subnets(prefixlen_diff=1))


def _sorted(members: Iterable[tuple[int, str]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    members = list(members)
    v4 = sorted({m for version, m in members if version == 4})
    v6 = sorted({m for version, m in members if version == 6})
    return tuple(v4), tuple(v6)


class _LabelGroups:
    """Sources grouped by identical labels, so each selector runs once per label set."""

    def __init__(self, sources: Iterable[MemberSource]) -> None:
        groups: dict[tuple, list[MemberSource]] = {}
        labels: dict[tuple, Mapping[str, str]] = {}
        for src in sources:
            key = tuple(sorted(src.labels.items()))
            groups.setdefault(key, []).append(src)
            labels.setdefault(key, src.labels)
        self._groups = [(labels[k], members) for k, members in groups.items()]
        self._cache: dict[str, tuple[MemberSource, ...]] = {}

    def matching(self, selector: str) -> tuple[MemberSource, ...]:
        found = self._cache.get(selector)
        if found is None:
            evaluate = parse(selector).evaluate
            found = tuple(src for labels, members in self._groups if evaluate(labels) for src in members)
            self._cache[selector] = found
        return found


def compute_sets(specs: Iterable[SetSpec], sources: Iterable[MemberSource]) -> dict[str, IPSet]:
    """The members of every set in ``specs``, by id."""
    groups = _LabelGroups(sources)
    result: dict[str, IPSet] = {}
    for spec in specs:
        if spec.id in result:
            continue
        members: list[tuple[int, str]] = []
        if spec.kind == "selector":
            for src in groups.matching(spec.selector):
                for net in src.nets:
                    members.extend((n.version, str(n)) for n in _split_default(net))
        elif spec.kind == "named-port":
            proto = PROTOCOL_NAMES[spec.protocol]
            for src in groups.matching(spec.selector):
                numbers = {
                    port for name, protocol, port in src.ports if name == spec.named_port and protocol == spec.protocol
                }
                for net in src.nets:
                    members.extend((net.version, f"{net.network_address},{proto}:{p}") for p in numbers)
        # Service sets need Kubernetes Services and EndpointSlices, which the desired state
        # does not carry: they stay empty.
        result[spec.id] = IPSet(spec, *_sorted(members))
    return result


def pool_sets(pools: Iterable[tuple[Network, bool]]) -> tuple[IPSet, IPSet]:
    """Felix's ``all-ipam-pools`` and ``masq-ipam-pools`` from (pool CIDR, natOutgoing) pairs."""
    pools = list(pools)
    all_pools = IPSet(SetSpec(ids.ALL_POOLS_SET, "pools"), *_sorted((n.version, str(n)) for n, _ in pools))
    masq = IPSet(SetSpec(ids.MASQ_POOLS_SET, "pools"), *_sorted((n.version, str(n)) for n, nat in pools if nat))
    return all_pools, masq
