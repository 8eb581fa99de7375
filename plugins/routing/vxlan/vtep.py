"""VXLAN tunnel endpoints: what Felix's VXLAN resolver (``felix/calc/vxlan_resolver.go``)
makes of the Nodes."""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

import attrs

from pycalico.plugins.routing.routes import node_address


def vtep_mac(node: Any) -> str:
    """The node's ``vxlanTunnelMACAddr``, else Calico's own: 0x66 and the first five
    bytes of the SHA-1 of the node name (a locally administered unicast MAC)."""
    if node.spec.vxlan_tunnel_mac_addr:
        return node.spec.vxlan_tunnel_mac_addr.lower()
    digest = hashlib.sha1(node.name.encode()).digest()
    return ":".join(f"{b:02x}" for b in b"\x66" + digest[:5])


@attrs.frozen(order=True)
class VTEP:
    """A node's end of the VXLAN overlay: its tunnel address and MAC, on its node address."""

    node: str
    tunnel_ip: ipaddress.IPv4Address
    mac: str
    host_ip: ipaddress.IPv4Address


def vtep_of(node: Any) -> VTEP | None:
    """The node's VTEP, or None until it has both a tunnel address and a node address."""
    address = node_address(node)
    if address is None or not node.spec.ipv4_vxlan_tunnel_addr:
        return None
    return VTEP(node.name, ipaddress.IPv4Address(node.spec.ipv4_vxlan_tunnel_addr), vtep_mac(node), address.ip)


def remote_vteps(state: Any) -> list[VTEP]:
    return sorted(v for n in state.of_kind("Node") if n.name != state.node_name and (v := vtep_of(n)) is not None)
