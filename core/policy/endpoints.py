"""Endpoints and network sets as Felix's label index sees them.

Labels are the effective ones (``felix/labelindex/``): the endpoint's own labels win over
those its profiles apply (``labelsToApply``), and among profiles the first listed wins.
A workload endpoint's own labels are adjusted as Calico stores and syncs them
(``libcalico-go/lib/clientv3/workloadendpoint.go``, ``.../updateprocessors/workloadendpointprocessor.go``):
``projectcalico.org/namespace`` and ``projectcalico.org/orchestrator`` are set from the
endpoint, labels starting ``pcns.`` or ``pcsa.`` are dropped (only profiles may set them, so
a pod cannot claim another namespace), and ``projectcalico.org/serviceaccount`` comes from
``serviceAccountName``. A namespaced NetworkSet gets the namespace label and inherits from
the ``kns.<namespace>`` profile.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Literal

import attrs

from pycalico.core.policy.ipsets import MemberSource, Network
from pycalico.core.policy.rules import protocol_value
from pycalico.core.policy.selectors import (
    NAMESPACE_LABEL,
    NAMESPACE_PREFIX,
    ORCHESTRATOR_LABEL,
    SERVICE_ACCOUNT_LABEL,
    SERVICE_ACCOUNT_PREFIX,
)
from pycalico.core.resources.types import parse_cidr

EndpointKind = Literal["WorkloadEndpoint", "HostEndpoint"]
NAMESPACE_PROFILE_PREFIX = "kns."


@attrs.frozen(order=True)
class EndpointKey:
    kind: EndpointKind
    namespace: str  # "" for host endpoints
    name: str

    def __str__(self) -> str:
        prefix = "wep" if self.kind == "WorkloadEndpoint" else "hep"
        return f"{prefix}:{self.namespace}/{self.name}" if self.namespace else f"{prefix}:{self.name}"


@attrs.frozen
class NamedPort:
    name: str
    protocol: int
    port: int


@attrs.frozen
class Endpoint:
    """A workload or host endpoint, with everything policy needs of it.

    ``addresses`` are bare IPs (a workload's ipNetworks, a host endpoint's expectedIPs);
    ``labels`` are the effective labels as sorted pairs (see :attr:`label_map`).
    """

    key: EndpointKey
    node: str
    interface: str | None
    addresses: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]
    profiles: tuple[str, ...]
    ports: tuple[NamedPort, ...] = ()
    pod: str | None = None
    allow_spoofed_source_prefixes: tuple[str, ...] = ()

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def is_workload(self) -> bool:
        return self.key.kind == "WorkloadEndpoint"

    def address(self, version: int) -> str | None:
        """The endpoint's first address of IP ``version``, if any."""
        return next((a for a in self.addresses if ipaddress.ip_address(a).version == version), None)


def effective_labels(own: Mapping[str, str], profiles: tuple[str, ...], profile_labels: Mapping[str, Mapping]) -> dict:
    """Own labels over inherited ones; the first profile that sets a label wins."""
    merged: dict[str, str] = {}
    for name in reversed(profiles):
        merged.update(profile_labels.get(name) or {})
    merged.update(own)
    return merged


def workload_own_labels(wep) -> dict[str, str]:
    labels = {
        k: v
        for k, v in (wep.metadata.labels or {}).items()
        if not k.startswith(NAMESPACE_PREFIX) and not k.startswith(SERVICE_ACCOUNT_PREFIX)
    }
    labels[NAMESPACE_LABEL] = wep.namespace
    labels[ORCHESTRATOR_LABEL] = wep.spec.orchestrator or ""
    if wep.spec.service_account_name:
        labels[SERVICE_ACCOUNT_LABEL] = wep.spec.service_account_name
    return labels


def _networks(texts) -> tuple[Network, ...]:
    return tuple(parse_cidr(t)[1] for t in texts or ())


def workload_endpoint(wep, profile_labels: Mapping[str, Mapping]) -> Endpoint | None:
    """The endpoint of a WorkloadEndpoint; None without addresses (Felix skips those)."""
    spec = wep.spec
    if not spec.ip_networks:
        return None
    profiles = tuple(spec.profiles or ())
    labels = effective_labels(workload_own_labels(wep), profiles, profile_labels)
    ports = tuple(
        NamedPort(p.name, protocol_value(p.protocol), p.port) for p in spec.ports or () if p.name and p.port
    )
    return Endpoint(
        key=EndpointKey("WorkloadEndpoint", wep.namespace, wep.name),
        node=spec.node or "",
        interface=spec.interface_name,
        addresses=tuple(str(parse_cidr(n)[0]) for n in spec.ip_networks),
        labels=tuple(sorted(labels.items())),
        profiles=profiles,
        ports=ports,
        pod=spec.pod,
        allow_spoofed_source_prefixes=tuple(str(parse_cidr(p)[1]) for p in spec.allow_spoofed_source_prefixes or ()),
    )


def host_endpoint(hep, profile_labels: Mapping[str, Mapping]) -> Endpoint:
    spec = hep.spec
    profiles = tuple(spec.profiles or ())
    labels = effective_labels(hep.metadata.labels or {}, profiles, profile_labels)
    ports = tuple(NamedPort(p.name, protocol_value(p.protocol), p.port) for p in spec.ports or () if p.name and p.port)
    return Endpoint(
        key=EndpointKey("HostEndpoint", "", hep.name),
        node=spec.node or "",
        interface=spec.interface_name,
        addresses=tuple(str(ipaddress.ip_address(a)) for a in spec.expected_ips or ()),
        labels=tuple(sorted(labels.items())),
        profiles=profiles,
        ports=ports,
    )


def endpoint_source(endpoint: Endpoint) -> MemberSource:
    return MemberSource(
        labels=endpoint.label_map,
        nets=tuple(ipaddress.ip_network(a) for a in endpoint.addresses),
        ports=tuple((p.name, p.protocol, p.port) for p in endpoint.ports),
    )


def network_set_source(netset, profile_labels: Mapping[str, Mapping]) -> MemberSource:
    """A NetworkSet (namespace label, ``kns.<ns>`` parent) or GlobalNetworkSet."""
    own = dict(netset.metadata.labels or {})
    profiles: tuple[str, ...] = ()
    if type(netset).NAMESPACED:
        own[NAMESPACE_LABEL] = netset.namespace
        profiles = (NAMESPACE_PROFILE_PREFIX + netset.namespace,)
    return MemberSource(
        labels=effective_labels(own, profiles, profile_labels),
        nets=_networks(netset.spec.nets),
    )
