"""The routes an encapsulating plugin wants, computed from the desired state.

Felix's route resolver and route manager (``felix/calc/l3_route_resolver.go``,
``felix/dataplane/linux/route_mgr.go``) for one encapsulation (VXLAN or IPIP), chosen
by the IPPool field that switches it on (``vxlanMode`` or ``ipipMode``):

* each IPAM block affine to another node, in a pool of that encapsulation, is routed
  to that node: through the tunnel, or (pool mode CrossSubnet, the node in this node's
  subnet) straight to the node's address out of the data device;
* a remote workload's address borrowed from a block affine to some other node gets a
  /32 route of its own to the node it lives on;
* each block affine to this node gets a blackhole route, so that the unassigned rest
  of the block is dropped here rather than sent back out (the pods' /32 routes are
  more specific);
* blocks of pools that no longer exist, or of nodes without an address, get nothing.

The result is handed to :func:`pycalico.plugins.routing.routetable.sync`.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from .routetable import Route

ALWAYS, CROSS_SUBNET, NEVER = "Always", "CrossSubnet", "Never"


def pool_mode(pool: Any, mode_field: str) -> str:
    """The pool's ``vxlanMode`` or ``ipipMode`` (``mode_field`` is the attribute name)."""
    return getattr(pool.spec, mode_field) or NEVER


def pool_network(pool: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(pool.spec.cidr or "")
    except ValueError:
        return None


def encap_pools(state: Any, mode_field: str) -> list[Any]:
    """The IPv4 pools that turn this encapsulation on (disabled ones too: their blocks
    still hold addresses in use)."""
    out = []
    for pool in state.of_kind("IPPool"):
        net = pool_network(pool)
        if net is not None and net.version == 4 and pool_mode(pool, mode_field) != NEVER:
            out.append(pool)
    return out


def node_address(node: Any) -> ipaddress.IPv4Interface | None:
    """The node's IPv4 address with its prefix (``spec.bgp.ipv4Address``)."""
    text = node.spec.bgp.ipv4_address if node is not None and node.spec.bgp else None
    try:
        return ipaddress.IPv4Interface(text) if text else None
    except ValueError:
        return None


@attrs.frozen
class Destination:
    """Addresses that live on another node: ``dst`` on node ``node``, in a pool whose
    mode for this encapsulation is ``mode``."""

    dst: ipaddress.IPv4Network
    node: str
    mode: str


@attrs.frozen
class Plan:
    """What the pools of one encapsulation ask of this node's routing."""

    remote: tuple[Destination, ...]
    local_blocks: tuple[ipaddress.IPv4Network, ...]


@functools.lru_cache(maxsize=1 << 16)
def _block_network(cidr: str) -> ipaddress.IPv4Network | None:
    """A block's CIDR, parsed once per process (blocks outlive many passes)."""
    try:
        return ipaddress.IPv4Network(cidr)
    except ValueError:
        return None  # an IPv6 block


def plan(state: Any, mode_field: str) -> Plan:
    """The remote destinations and local blocks of the pools of ``mode_field``."""
    pools = [(int(n.network_address), int(n.netmask), pool_mode(p, mode_field))
             for p in encap_pools(state, mode_field) if (n := pool_network(p)) is not None]
    if not pools:
        return Plan((), ())

    def mode_of(net: ipaddress.IPv4Network) -> str | None:
        first = int(net.network_address)
        return next((mode for base, mask, mode in pools if first & mask == base and net.prefixlen >= mask.bit_count()), None)

    remote: list[Destination] = []
    local: list[ipaddress.IPv4Network] = []
    owners: dict[ipaddress.IPv4Network, str | None] = {}
    for block in state.of_kind("IPAMBlock"):
        net = _block_network(block.spec.cidr or "")
        if net is None or block.spec.deleted:
            continue
        host = block.host
        owners[net] = host
        mode = mode_of(net)
        if mode is None or host is None:
            continue
        if host == state.node_name:
            if net.prefixlen < 32:  # a /32 block would hide the CNI's own route
                local.append(net)
        else:
            remote.append(Destination(net, host, mode))
    remote += _borrowed(state, owners, mode_of)
    return Plan(tuple(remote), tuple(local))


def _borrowed(state: Any, owners: dict, mode_of: Callable) -> Iterable[Destination]:
    """Remote workloads' addresses that lie in a block affine to another node."""
    sizes = {net.prefixlen for net in owners}
    for wep in state.of_kind("WorkloadEndpoint"):
        node = wep.spec.node
        if not node or node == state.node_name:
            continue
        for text in wep.spec.ip_networks or ():
            try:
                addr = ipaddress.IPv4Network(text)
            except ValueError:
                continue
            blocks = (addr.supernet(new_prefix=size) for size in sizes if size <= addr.prefixlen)
            owner = next((owners[b] for b in blocks if b in owners), node)
            mode = mode_of(addr)
            if owner != node and mode is not None:
                yield Destination(addr, node, mode)


# The tunnel's next hop to a remote node, (gateway, device), or None while that node
# lacks what it needs (e.g. a tunnel address). Tunnel routes are onlink: the gateway is
# on the tunnel's link though no address of the device covers it.
TunnelHop = Callable[[Any], "tuple[ipaddress.IPv4Address, str] | None"]


def routes(state: Any, mode_field: str, tunnel_hop: TunnelHop | None, data_device: str | None) -> list[Route]:
    """Every route the pools of ``mode_field`` want on this node.

    ``tunnel_hop(node)`` gives the next hop through the tunnel to a remote node; pass
    None while this node's own tunnel device is not ready, and only same-subnet routes
    are made. ``data_device`` is the interface holding this node's address: CrossSubnet
    routes within the subnet go out of it, unencapsulated.
    """
    found = plan(state, mode_field)
    local = node_address(state.node)
    hops: dict[str, tuple] = {}  # node: (its address if in this subnet, its tunnel hop)
    for node in state.of_kind("Node"):
        address = node_address(node)
        if address is not None:
            same = address.ip if data_device and local is not None and address.ip in local.network else None
            hops[node.name] = (same, tunnel_hop(node) if tunnel_hop is not None else None)
    out = [Route(net, "blackhole") for net in found.local_blocks]
    for dest in found.remote:
        if dest.node not in hops:
            continue
        same, tunnel = hops[dest.node]
        if dest.mode == CROSS_SUBNET and same is not None:
            out.append(Route(dest.dst, gateway=same, dev=data_device))
        elif tunnel is not None:
            out.append(Route(dest.dst, gateway=tunnel[0], dev=tunnel[1], onlink=True))
    return out
