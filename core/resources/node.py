"""Node (``libcalico-go/lib/apis/internalapi/node.go``): a Calico node's addresses and BGP settings."""

from __future__ import annotations

from pycalico.core.resources.base import each, field, model
from pycalico.core.resources.meta import Resource
from pycalico.core.resources.types import (
    ASNumber,
    check_as_number,
    check_cidr,
    check_cidr_v4,
    check_cidr_v6,
    check_ipv4,
    check_ipv6,
    check_mac,
    check_name,
    check_net,
    check_wireguard_key,
    parse_cidr,
)
from pycalico.core.schema import one_of, validated

ADDRESS_TYPES = ("CalicoNodeIP", "InternalIP", "ExternalIP")


@model
class NodeBGPSpec:
    as_number: ASNumber | None = field(validated(check_as_number))
    ipv4_address: str | None = field(validated(check_cidr_v4))
    ipv6_address: str | None = field(validated(check_cidr_v6))
    ipv4_ipip_tunnel_addr: str | None = field(validated(check_ipv4), key="ipv4IPIPTunnelAddr")
    route_reflector_cluster_id: str | None = field(validated(check_ipv4), key="routeReflectorClusterID")

    @property
    def ipv4(self) -> str | None:
        """The bare IPv4 address of ``ipv4Address`` ("10.0.0.1/24" -> "10.0.0.1")."""
        return str(parse_cidr(self.ipv4_address)[0]) if self.ipv4_address else None

    @property
    def ipv6(self) -> str | None:
        return str(parse_cidr(self.ipv6_address)[0]) if self.ipv6_address else None


@model
class OrchRef:
    node_name: str | None = field()
    orchestrator: str | None = field()

    def _checks(self):
        if not self.orchestrator:
            yield "orchestrator", "is required"


@model
class NodeWireguardSpec:
    interface_ipv4_address: str | None = field(validated(check_ipv4), key="interfaceIPv4Address")
    interface_ipv6_address: str | None = field(validated(check_ipv6), key="interfaceIPv6Address")


@model
class NodeAddress:
    address: str | None = field(validated(check_net))
    type: str | None = field(one_of(*ADDRESS_TYPES))

    def _checks(self):
        if not self.address:
            yield "address", "is required"


@model
class NodeInterface:
    name: str | None = field(validated(check_name))
    addresses: tuple[str, ...] | None = field()


@model
class NodeSpec:
    bgp: NodeBGPSpec | None = field()
    ipv4_vxlan_tunnel_addr: str | None = field(validated(check_ipv4), key="ipv4VXLANTunnelAddr")
    vxlan_tunnel_mac_addr: str | None = field(validated(check_mac), key="vxlanTunnelMACAddr")
    ipv6_vxlan_tunnel_addr: str | None = field(validated(check_ipv6), key="ipv6VXLANTunnelAddr")
    vxlan_tunnel_mac_addr_v6: str | None = field(validated(check_mac), key="vxlanTunnelMACAddrV6")
    orch_refs: tuple[OrchRef, ...] | None = field()
    wireguard: NodeWireguardSpec | None = field()
    addresses: tuple[NodeAddress, ...] | None = field()
    interfaces: tuple[NodeInterface, ...] | None = field()

    def _checks(self):
        if self.bgp is not None and self.bgp == NodeBGPSpec():
            yield "bgp", "must not be empty"


@model
class NodeStatus:
    wireguard_public_key: str | None = field(validated(check_wireguard_key))
    wireguard_public_key_v6: str | None = field(validated(check_wireguard_key))
    pod_cidrs: tuple[str, ...] | None = field(each(check_cidr), key="podCIDRs")


@model
class Node(Resource):
    KIND = "Node"
    PLURAL = "nodes"
    API_VERSIONS = ("projectcalico.org/v3",)

    spec: NodeSpec = field(factory=NodeSpec)
    status: NodeStatus | None = field()
