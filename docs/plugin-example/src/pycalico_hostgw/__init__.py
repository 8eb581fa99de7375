"""host-gw: pod routes without encapsulation or BGP, as flannel's host-gw backend.

``[routing] type = "host-gw"`` in calico.toml. On each pass, for the IPv4 pools that
neither VXLAN nor IP-in-IP encapsulates (``vxlanMode`` and ``ipipMode`` Never):

* each IPAM block affine to another node, and each address a remote pod borrowed from
  a block of a third node, is routed ``via <that node's address> dev <interface>``, if
  that address is in this node's subnet; a node elsewhere is more than one hop away
  and gets no route (host-gw needs one L2 subnet, as flannel's does);
* each block affine to this node gets a blackhole route, so that the block's
  unassigned addresses are dropped here (its pods' /32 routes, which the CNI plugin
  makes, are more specific).

What is wanted is computed from the desired state alone, with pycalico's
:mod:`pycalico.plugins.routing.routes`; :func:`pycalico.plugins.routing.routetable.sync`
diffs it with the kernel's protocol-80 routes and changes only the difference, in one
netlink transaction. Routes stay when the agent stops, as Felix's do, so a restart
does not cut pods off.
"""

from __future__ import annotations

from typing import Any

from pyroute2 import IPRoute

from pycalico.hooks import hookimpl
from pycalico.plugins.routing import routes, routetable, tunnel

from .options import Options

NAME = "host-gw"
# routes.plan() counts the pools whose given IPPool spec field is set and not "Never",
# the field that switches an encapsulation on. host-gw is on for every pool, so it
# names a field every pool sets, then leaves out the pools a tunnel must carry.
EVERY_POOL = "cidr"
TUNNEL_FIELDS = ("vxlan_mode", "ipip_mode")

__all__ = ["NAME", "Options", "plugin", "wanted"]


def wanted(state: Any, device: str) -> list[routetable.Route]:
    """Every route host-gw wants on this node, its unicast ones out of ``device``."""
    own = routes.node_address(state.node)
    if own is None:
        return []
    tunnelled = [net for field in TUNNEL_FIELDS for pool in routes.encap_pools(state, field)
                 if (net := routes.pool_network(pool)) is not None]

    def direct(net: Any) -> bool:
        return not any(net.subnet_of(pool) for pool in tunnelled)

    found = routes.plan(state, EVERY_POOL)
    peers = {node.name: routes.node_address(node) for node in state.of_kind("Node")}
    out = [routetable.Route(net, "blackhole") for net in found.local_blocks if direct(net)]
    for dest in found.remote:
        peer = peers.get(dest.node)
        if direct(dest.dst) and peer is not None and peer.ip in own.network:
            out.append(routetable.Route(dest.dst, gateway=peer.ip, dev=device))
    return out


def _address_device(state: Any) -> str | None:
    """The interface holding this node's registered address, in this namespace."""
    own = routes.node_address(state.node)
    if own is None:
        return None
    with IPRoute() as ipr:
        found = tunnel.data_device(ipr, own.ip)
    return found[1] if found else None


class HostGateway:
    """The plugin's hooks; calico.toml's ``[routing] type = "host-gw"`` registers it."""

    @hookimpl
    def pycalico_config_schema(self, slot: str, name: str) -> type | None:
        return Options if (slot, name) == ("routing", NAME) else None

    @hookimpl
    def pycalico_reconcile_routing(self, state: Any, config: Any) -> list[str]:
        device = config.routing.options.interface or _address_device(state)
        # Without an interface to route out of, no route of ours can stand: remove them.
        return routetable.sync(wanted(state, device) if device else [])


plugin = HostGateway()
