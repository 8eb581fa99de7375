"""vxlan: Felix's VXLAN manager, with no BGP (Calico's ``calico_backend: vxlan``).

``[routing] type = "vxlan"`` in calico.toml. On each pass, for the IPv4 pools with
``vxlanMode`` Always or CrossSubnet:

* :func:`reconcile_node` (``pycalico_reconcile_node``): this node's tunnel address from
  IPAM on ``Node.spec.ipv4VXLANTunnelAddr`` and its VTEP MAC on ``vxlanTunnelMACAddr``
  (:mod:`pycalico.plugins.routing.tunneladdr`);
* :func:`reconcile` (``pycalico_reconcile_routing``): the ``vxlan.calico`` device (VNI
  4096, UDP port 4789, MTU the host's less 50 unless set; :mod:`.device`), a permanent
  ARP and FDB entry per remote VTEP, and the routes (:mod:`pycalico.plugins.routing.routes`):
  ``<block> via <remote tunnel address> dev vxlan.calico onlink`` for each remote
  block, straight to the node out of the data device for CrossSubnet pools within this
  node's subnet, a blackhole for each local block; all protocol 80.

Without any VXLAN pool (or with FelixConfiguration ``vxlanEnabled: false``) the device
is deleted and the routes removed. Options: :mod:`.options`.

Both work on the network namespace of the calling thread. A plugin that runs BGP beside
Felix's VXLAN side calls :func:`reconcile_node` and passes :data:`ENCAP` to
:func:`pycalico.plugins.routing.encap.reconcile` with its other encapsulations.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs

from pycalico.core import felixconfig
from pycalico.plugins.routing import encap, tunnel, tunneladdr
from pycalico.plugins.routing.encap import Encap, EncapPlugin

from .device import NAME as DEVICE
from .device import Settings, ensure, sync_neighbours
from .options import Options
from .vtep import VTEP, remote_vteps, vtep_mac, vtep_of

NAME = "vxlan"
MODE_FIELD = "vxlan_mode"
OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14
DEFAULTS = {"vxlan_vni": 4096, "vxlan_port": 4789}

__all__ = ["DEVICE", "ENCAP", "NAME", "Options", "VTEP", "plugin", "reconcile", "reconcile_node", "tunnel_hop", "vtep_mac"]


def reconcile_node(state: Any, datastore: Any, ipam: Any) -> list[str]:
    """This node's tunnel address and VTEP MAC on its Node; one line per write."""
    wants_vtep = ENCAP.enabled(state) and state.node is not None and bool(
        tunneladdr.tunnel_pools(state, state.node, tunneladdr.VXLAN)
    )

    def with_mac(spec):
        if not wants_vtep or spec.vxlan_tunnel_mac_addr:
            return spec
        return attrs.evolve(spec, vxlan_tunnel_mac_addr=vtep_mac(state.node))

    return tunneladdr.reconcile(state, datastore, ipam, tunneladdr.VXLAN, with_mac)


def prepare(state: Any, options: Options | None, ipr: Any, data_device: tuple[int, str] | None):
    """vxlan.calico and its neighbours as ``state`` wants them; (lines, tunnel hop), the
    hop None while this node has no VTEP yet (no tunnel address or no address)."""
    options = options or Options()
    local = vtep_of(state.node) if state.node is not None else None
    if local is None or data_device is None:
        return [], None
    settings = Settings(
        vni=options.vni or felixconfig.setting(state, "vxlan_vni", DEFAULTS["vxlan_vni"]),
        port=options.port or felixconfig.setting(state, "vxlan_port", DEFAULTS["vxlan_port"]),
        mtu=tunnel.tunnel_mtu(state, ipr, options.mtu, "vxlan_mtu", OVERHEAD),
    )
    index, lines = ensure(ipr, local, data_device[0], settings)
    lines += tunnel.converge(ipr, index, DEVICE, settings.mtu, local.tunnel_ip)
    lines += sync_neighbours(ipr, index, remote_vteps(state))
    return lines, tunnel_hop


def teardown(state: Any, options: Options | None, ipr: Any) -> list[str]:
    return tunnel.remove(ipr, DEVICE)


def tunnel_hop(node: Any) -> tuple[ipaddress.IPv4Address, str] | None:
    """Through vxlan.calico to the node's tunnel address, once it has one."""
    tunnel_ip = node.spec.ipv4_vxlan_tunnel_addr
    return (ipaddress.IPv4Address(tunnel_ip), DEVICE) if tunnel_ip else None


ENCAP = Encap(MODE_FIELD, "vxlan_enabled", prepare, teardown)


def reconcile(state: Any, options: Options | None = None) -> list[str]:
    """The device, neighbours and routes of this node; one line per change."""
    return encap.reconcile(state, [(ENCAP, options)])


plugin = EncapPlugin(NAME, Options, ENCAP, reconcile_node)
