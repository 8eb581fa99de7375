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
from collections.abc import Hashable, Iterable, Mapping
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


def _members(spec: SetSpec, src: MemberSource) -> list[tuple[int, str]]:
    """What ``src`` puts in the set of ``spec`` when it matches the set's selector."""
    if spec.kind == "selector":
        return [(n.version, str(n)) for net in src.nets for n in _split_default(net)]
    proto = PROTOCOL_NAMES[spec.protocol]
    numbers = {port for name, protocol, port in src.ports if name == spec.named_port and protocol == spec.protocol}
    return [(net.version, f"{net.network_address},{proto}:{p}") for net in src.nets for p in numbers]


class SetIndex:
    """The members of the wanted sets, kept current as sources and wanted sets change.

    Sources (endpoints, network sets) are put by key; a set is wanted by each owner that
    refers to it (:meth:`want` / :meth:`unwant` in pairs). A new selector is run over the
    sources once, grouped by identical labels; a changed source is run through the
    selectors of the wanted sets; only the sets whose members may have moved are rebuilt.
    Service sets stay empty: they need Kubernetes Services and EndpointSlices, which the
    desired state does not carry.
    """

    def __init__(self) -> None:
        self._sources: dict[Hashable, MemberSource] = {}
        self._label_keys: dict[Hashable, tuple] = {}
        self._groups: dict[tuple, tuple[Mapping[str, str], set[Hashable]]] = {}
        self._specs: dict[str, SetSpec] = {}
        self._wanted: dict[str, int] = {}
        self._by_selector: dict[str, set[str]] = {}  # selector -> ids of its sets
        self._matching: dict[str, set[Hashable]] = {}  # selector -> keys of the sources it matches
        self._sets: dict[str, IPSet] = {}
        self._dirty: set[str] = set()
        self._order_dirty = False
        self._changed: set[str] = set()

    def put_source(self, key: Hashable, src: MemberSource | None) -> None:
        """Add, replace (``src``) or remove (None) the source under ``key``."""
        old = self._sources.get(key)
        if src is None and old is None:
            return
        labels = tuple(sorted(src.labels.items())) if src is not None else None
        relabelled = labels != self._label_keys.get(key)
        if relabelled:
            self._ungroup(key)
            if src is not None:
                group = self._groups.setdefault(labels, (src.labels, set()))
                group[1].add(key)
                self._label_keys[key] = labels
        if src is None:
            del self._sources[key]
        else:
            self._sources[key] = src
        content_changed = old is None or src is None or old.nets != src.nets or old.ports != src.ports
        for selector, set_ids in self._by_selector.items():
            matching = self._matching[selector]
            was = key in matching
            if relabelled:
                now = src is not None and parse(selector).evaluate(src.labels)
                if now:
                    matching.add(key)
                elif was:
                    matching.discard(key)
            else:
                now = was
            if (was or now) and (was != now or content_changed):
                self._dirty.update(set_ids)

    def _ungroup(self, key: Hashable) -> None:
        labels = self._label_keys.pop(key, None)
        if labels is not None:
            members = self._groups[labels][1]
            members.discard(key)
            if not members:
                del self._groups[labels]

    def want(self, spec: SetSpec) -> None:
        count = self._wanted.get(spec.id, 0)
        self._wanted[spec.id] = count + 1
        if count:
            return
        self._specs[spec.id] = spec
        self._dirty.add(spec.id)
        self._order_dirty = True
        if spec.selector is None or spec.kind == "service":
            return
        set_ids = self._by_selector.get(spec.selector)
        if set_ids is None:
            set_ids = self._by_selector[spec.selector] = set()
            evaluate = parse(spec.selector).evaluate
            self._matching[spec.selector] = {k for labels, keys in self._groups.values() if evaluate(labels) for k in keys}
        set_ids.add(spec.id)

    def unwant(self, spec: SetSpec) -> None:
        count = self._wanted[spec.id] - 1
        if count:
            self._wanted[spec.id] = count
            return
        del self._wanted[spec.id]
        del self._specs[spec.id]
        if self._sets.pop(spec.id, None) is not None:
            self._changed.add(spec.id)
        self._dirty.discard(spec.id)
        set_ids = self._by_selector.get(spec.selector) if spec.selector is not None else None
        if set_ids is not None:
            set_ids.discard(spec.id)
            if not set_ids:
                del self._by_selector[spec.selector]
                del self._matching[spec.selector]

    def sets(self) -> dict[str, IPSet]:
        """Every wanted set with its members, by id, in id order (the dict is the index's own).

        A set whose members are as they were stays the same object.
        """
        for set_id in self._dirty:
            spec = self._specs[set_id]
            members: list[tuple[int, str]] = []
            if spec.kind != "service":
                for key in self._matching[spec.selector]:
                    members += _members(spec, self._sources[key])
            ipset = IPSet(spec, *_sorted(members))
            if ipset != self._sets.get(set_id):
                self._sets[set_id] = ipset
                self._changed.add(set_id)
        self._dirty.clear()
        if self._order_dirty:
            self._sets = dict(sorted(self._sets.items()))
            self._order_dirty = False
        return self._sets

    def take_changed(self) -> set[str]:
        """The ids of the sets made, dropped or given other members since the last call."""
        changed, self._changed = self._changed, set()
        return changed


def pool_sets(pools: Iterable[tuple[Network, bool]]) -> tuple[IPSet, IPSet]:
    """Felix's ``all-ipam-pools`` and ``masq-ipam-pools`` from (pool CIDR, natOutgoing) pairs."""
    pools = list(pools)
    all_pools = IPSet(SetSpec(ids.ALL_POOLS_SET, "pools"), *_sorted((n.version, str(n)) for n, _ in pools))
    masq = IPSet(SetSpec(ids.MASQ_POOLS_SET, "pools"), *_sorted((n.version, str(n)) for n, nat in pools if nat))
    return all_pools, masq
