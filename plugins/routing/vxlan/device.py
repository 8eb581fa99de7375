"""The ``vxlan.calico`` device and its layer-2 neighbours.

The device is Felix's (``felix/dataplane/linux/vxlan_mgr.go``): VNI, UDP port, source
address and parent device from this node, learning off, MAC from the node's VTEP. One
whose settings differ is deleted and made again, as Felix does. The neighbours are
``felix/vxlanfdb``'s: for each remote VTEP a permanent ARP entry (tunnel address to
MAC) and a permanent FDB entry (MAC to node address, ``self``). Only permanent entries
are ours: a permanent entry for a node that is gone is removed, whatever the kernel
learns for itself is left alone.

Everything takes a pyroute2 ``IPRoute`` opened in the network namespace to act on.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import attrs
from pyroute2.netlink.rtnl.ndmsg import NTF_SELF, states

from .vtep import VTEP

NAME = "vxlan.calico"
_PERMANENT = states["permanent"]


@attrs.frozen
class Settings:
    vni: int
    port: int
    mtu: int


def _wanted(local: VTEP, parent: int, settings: Settings) -> dict[str, Any]:
    return {
        "IFLA_VXLAN_ID": settings.vni,
        "IFLA_VXLAN_PORT": settings.port,
        "IFLA_VXLAN_LINK": parent,
        "IFLA_VXLAN_LOCAL": str(local.host_ip),
        "IFLA_VXLAN_LEARNING": 0,
    }


def _differences(link: Any, local: VTEP, parent: int, settings: Settings) -> list[str]:
    info = link.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
        return ["not a vxlan device"]
    data = info.get_attr("IFLA_INFO_DATA")
    out = [f"{key} {data.get_attr(key)} (want {value})"
           for key, value in _wanted(local, parent, settings).items() if data.get_attr(key) != value]
    mac = (link.get_attr("IFLA_ADDRESS") or "").lower()
    if mac != local.mac:
        out.append(f"MAC {mac} (want {local.mac})")
    return out


def ensure(ipr: Any, local: VTEP, parent: int, settings: Settings) -> tuple[int, list[str]]:
    """``vxlan.calico`` as ``local`` and ``settings`` want it, made or remade if needed;
    returns its index and one line per change (MTU, address and up are left to
    :func:`pycalico.plugins.routing.tunnel.converge`)."""
    lines = []
    found = ipr.link_lookup(ifname=NAME)
    if found:
        differences = _differences(ipr.get_links(found[0])[0], local, parent, settings)
        if not differences:
            return found[0], []
        ipr.link("del", index=found[0])
        lines.append(f"{NAME} removed: {', '.join(differences)}")
    ipr.link(
        "add",
        ifname=NAME,
        kind="vxlan",
        vxlan_id=settings.vni,
        vxlan_port=settings.port,
        vxlan_link=parent,
        vxlan_local=str(local.host_ip),
        vxlan_learning=0,
        address=local.mac,
        mtu=settings.mtu,
    )
    lines.append(f"{NAME} added: vni {settings.vni} port {settings.port} local {local.host_ip} mac {local.mac}")
    return ipr.link_lookup(ifname=NAME)[0], lines


def sync_neighbours(ipr: Any, index: int, vteps: list[VTEP]) -> list[str]:
    """Permanent ARP and FDB entries on device ``index`` for exactly ``vteps``."""
    lines = []
    arp = {
        ipaddress.IPv4Address(n.get_attr("NDA_DST")): (n.get_attr("NDA_LLADDR") or "").lower()
        for n in ipr.get_neighbours(family=socket.AF_INET, ifindex=index)
        if n["state"] & _PERMANENT and n["ifindex"] == index
    }
    wanted_arp = {v.tunnel_ip: v.mac for v in vteps}
    for ip, mac in sorted(arp.items()):
        if ip not in wanted_arp:
            ipr.neigh("del", dst=str(ip), lladdr=mac, ifindex=index)
            lines.append(f"arp {ip} {mac} dev {NAME} removed")
    for ip, mac in sorted(wanted_arp.items()):
        if arp.get(ip) != mac:
            ipr.neigh("replace", dst=str(ip), lladdr=mac, ifindex=index, state=_PERMANENT)
            lines.append(f"arp {ip} {mac} dev {NAME} {'replaced' if ip in arp else 'added'}")
    fdb: dict[str, set[str]] = {}
    for entry in ipr.fdb("dump", ifindex=index):
        if entry["ifindex"] == index and entry["state"] & _PERMANENT and entry["flags"] & NTF_SELF:
            fdb.setdefault((entry.get_attr("NDA_LLADDR") or "").lower(), set()).add(entry.get_attr("NDA_DST"))
    wanted_fdb = {v.mac: str(v.host_ip) for v in vteps}
    for mac, dsts in sorted(fdb.items()):
        for dst in sorted(dsts):
            if wanted_fdb.get(mac) != dst or len(dsts) > 1:
                ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst)
                lines.append(f"fdb {mac} dst {dst} dev {NAME} removed")
    for mac, dst in sorted(wanted_fdb.items()):
        if fdb.get(mac) != {dst}:
            ipr.fdb("replace", ifindex=index, lladdr=mac, dst=dst, state=_PERMANENT, flags=NTF_SELF)
            lines.append(f"fdb {mac} dst {dst} dev {NAME} added")
    return lines
