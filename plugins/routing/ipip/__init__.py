"""ipip: IP-in-IP encapsulation, routes programmed by the agent (Felix's IPIP manager
with ``ProgramClusterRoutes``, Calico v3.33+).

``[routing] type = "ipip"`` in calico.toml. On each pass, for the IPv4 pools with
``ipipMode`` Always or CrossSubnet:

* :func:`reconcile_node` (``pycalico_reconcile_node``): this node's tunnel address from
  IPAM on ``Node.spec.bgp.ipv4IPIPTunnelAddr``
  (:mod:`pycalico.plugins.routing.tunneladdr`);
* :func:`reconcile` (``pycalico_reconcile_routing``): ``tunl0`` with that address and
  MTU the host's less 20 unless set, and the routes
  (:mod:`pycalico.plugins.routing.routes`): ``<block> via <remote node address> dev
  tunl0 onlink`` for each remote block (the blocks BIRD would learn, read here from
  the datastore), straight to the node out of the data device for CrossSubnet pools
  within this node's subnet, a blackhole for each local block; all protocol 80.

Without any IPIP pool (or with FelixConfiguration ``ipipEnabled: false``) the routes
are removed and ``tunl0`` loses its address (the kernel's fallback device cannot be
deleted while the module is loaded). A kernel without the ipip module cannot make
``tunl0``: the routes that need no tunnel are programmed, then the pass fails with
:class:`NoIPIP`. Options: :mod:`.options`.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from pycalico.plugins.routing import encap, routes, tunnel, tunneladdr
from pycalico.plugins.routing.encap import Encap, EncapPlugin

from .options import Options

NAME = "ipip"
DEVICE = "tunl0"
MODE_FIELD = "ipip_mode"
OVERHEAD = 20  # the outer IPv4 header
_EOPNOTSUPP = 95

__all__ = ["DEVICE", "ENCAP", "NAME", "NoIPIP", "Options", "plugin", "reconcile", "reconcile_node", "tunnel_hop"]


class NoIPIP(RuntimeError):
    """The kernel cannot make an ipip device (no ipip module)."""


def reconcile_node(state: Any, datastore: Any, ipam: Any) -> list[str]:
    """This node's IPIP tunnel address on its Node; one line per write."""
    return tunneladdr.reconcile(state, datastore, ipam, tunneladdr.IPIP)


def tunnel_hop(node: Any) -> tuple[ipaddress.IPv4Address, str] | None:
    """Through tunl0 to the node's own address: the outer header goes to the node."""
    address = routes.node_address(node)
    return None if address is None else (address.ip, DEVICE)


def ensure_device(ipr: Any) -> int:
    """tunl0's index, made if missing; NoIPIP if the kernel cannot."""
    index = tunnel.link_index(ipr, DEVICE)
    if index is not None:
        return index
    try:
        ipr.link("add", ifname=DEVICE, kind="ipip")
    except NetlinkError as exc:
        if exc.code == _EOPNOTSUPP:
            raise NoIPIP(f"{DEVICE}: this kernel has no ipip support (load the ipip module)") from None
        raise
    return tunnel.link_index(ipr, DEVICE)


def prepare(state: Any, options: Options | None, ipr: Any, data_device: tuple[int, str] | None):
    """tunl0 with this node's tunnel address (none yet: none on the device) and MTU;
    (lines, tunnel hop). NoIPIP if the kernel cannot make it."""
    options = options or Options()
    index = ensure_device(ipr)
    tunnel_ip = tunneladdr.IPIP.get(state.node.spec) if state.node is not None else None
    mtu = tunnel.tunnel_mtu(state, ipr, options.mtu, "ipip_mtu", OVERHEAD)
    return tunnel.converge(ipr, index, DEVICE, mtu, ipaddress.IPv4Address(tunnel_ip) if tunnel_ip else None), tunnel_hop


def teardown(state: Any, options: Options | None, ipr: Any) -> list[str]:
    """tunl0 loses its address (the kernel's fallback device cannot be deleted)."""
    index = tunnel.link_index(ipr, DEVICE)
    return [] if index is None else tunnel.set_address(ipr, index, DEVICE, None)


ENCAP = Encap(MODE_FIELD, "ipip_enabled", prepare, teardown)


def reconcile(state: Any, options: Options | None = None) -> list[str]:
    """tunl0 and the routes of this node; one line per change. NoIPIP after the routes
    that need no tunnel are programmed, if the kernel cannot make tunl0."""
    return encap.reconcile(state, [(ENCAP, options)])


plugin = EncapPlugin(NAME, Options, ENCAP, reconcile_node)
