"""IPPool and IPReservation (``api/pkg/apis/projectcalico/v3/ippool.go``, ``ipreservation.go``)."""

from __future__ import annotations

import ipaddress

import attrs

from pycalico.core.resources.base import each, field, model
from pycalico.core.resources.meta import ConditionStatus, Resource
from pycalico.core.resources.types import check_cidr, check_selector, parse_cidr
from pycalico.core.schema import one_of, validated

MODES = ("Always", "CrossSubnet", "Never")
ALLOWED_USES = ("Workload", "Tunnel", "LoadBalancer")
ASSIGNMENT_MODES = ("Automatic", "Manual")
BLOCK_SIZES = {4: (20, 32, 26), 6: (116, 128, 122)}  # min, max, default
_LINK_LOCAL = {4: ipaddress.ip_network("169.254.0.0/16"), 6: ipaddress.ip_network("fe80::/10")}


@model
class IPIPConfiguration:
    """The APIv1 ``ipip`` field; Calico refuses it in v3 manifests."""

    enabled: bool | None = field()
    mode: str | None = field()


@model
class IPPoolSpec:
    cidr: str | None = field(validated(check_cidr))
    vxlan_mode: str | None = field(one_of(*MODES))
    ipip_mode: str | None = field(one_of(*MODES))
    nat_outgoing: bool | None = field()
    disabled: bool | None = field()
    disable_bgp_export: bool | None = field(key="disableBGPExport")
    block_size: int | None = field()
    node_selector: str | None = field(validated(check_selector))
    namespace_selector: str | None = field(validated(check_selector))
    ipip: IPIPConfiguration | None = field()
    nat_outgoing_v1: bool | None = field(key="nat-outgoing")
    allowed_uses: tuple[str, ...] | None = field(each(lambda v: _one_of(v, ALLOWED_USES)))
    assignment_mode: str | None = field(one_of(*ASSIGNMENT_MODES))

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return parse_cidr(self.cidr or "")[1]

    def _checks(self):
        if not self.cidr:
            yield "cidr", "is required"
            return
        try:
            addr, net = parse_cidr(self.cidr)
        except ValueError:
            return  # reported by the field check
        version = net.version
        if addr != net.network_address:
            yield "cidr", f"{self.cidr!r} is not strictly masked (the network is {net})"
        if net.overlaps(_LINK_LOCAL[version]):
            yield "cidr", f"{self.cidr} overlaps with the IPv{version} link local range {_LINK_LOCAL[version]}"
        low, high, _ = BLOCK_SIZES[version]
        if self.block_size is not None:
            if not low <= self.block_size <= high:
                yield "blockSize", f"must be between {low} and {high} for IPv{version}, got {self.block_size}"
            elif not self.disabled and net.prefixlen > self.block_size:
                yield (
                    "cidr",
                    (
                        f"pool /{net.prefixlen} is smaller than its blocks (/{self.block_size}): "
                        "the prefix length must be at most the block size"
                    ),
                )
        ipip = self.ipip_mode not in (None, "Never")
        vxlan = self.vxlan_mode not in (None, "Never")
        if ipip and vxlan:
            yield "vxlanMode", "cannot enable both VXLAN and IPIP on the same IPPool"
        if version == 6 and ipip:
            yield "ipipMode", "IPIP is not supported on an IPv6 IP pool"
        uses = self.allowed_uses or ()
        if "LoadBalancer" in uses:
            for other in ("Workload", "Tunnel"):
                if other in uses:
                    yield "allowedUses", f"LoadBalancer cannot be used at the same time as {other}"
            if ipip or vxlan:
                yield "ipipMode", "neither IPIP nor VXLAN can be enabled on a LoadBalancer IP pool"
            if self.node_selector not in (None, "all()"):
                yield "nodeSelector", "a LoadBalancer IP pool must have node selector all()"
        if self.ipip is not None:
            yield "ipip", "is an APIv1 field and must not be set; use ipipMode"
        if self.nat_outgoing_v1:
            yield "nat-outgoing", "is an APIv1 field and must not be set; use natOutgoing"

    def with_defaults(self) -> IPPoolSpec:
        """Calico's create-time (and read-time) defaults."""
        changes: dict = {}
        try:
            version = parse_cidr(self.cidr or "")[1].version
        except ValueError:
            version = None
        if not self.block_size and version is not None:  # 0 means unset, as in Go
            changes["block_size"] = BLOCK_SIZES[version][2]
        if not self.node_selector:
            changes["node_selector"] = "all()"
        if not self.ipip_mode:
            changes["ipip_mode"] = "Never"
        if not self.vxlan_mode:
            changes["vxlan_mode"] = "Never"
        if not self.allowed_uses:
            changes["allowed_uses"] = ("Workload", "Tunnel")
        if self.assignment_mode is None:
            changes["assignment_mode"] = "Automatic"
        for flag in ("nat_outgoing", "disabled", "disable_bgp_export"):
            if getattr(self, flag) is None:
                changes[flag] = False
        return attrs.evolve(self, **changes) if changes else self


def _one_of(value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")


@model
class IPPool(Resource):
    KIND = "IPPool"
    PLURAL = "ippools"

    spec: IPPoolSpec = field(factory=IPPoolSpec)
    status: ConditionStatus | None = field()

    def _defaults(self) -> IPPool:
        return attrs.evolve(self, spec=self.spec.with_defaults())


@model
class IPReservationSpec:
    reserved_cidrs: tuple[str, ...] | None = field(each(check_cidr), key="reservedCIDRs")


@model
class IPReservation(Resource):
    KIND = "IPReservation"
    PLURAL = "ipreservations"

    spec: IPReservationSpec = field(factory=IPReservationSpec)
