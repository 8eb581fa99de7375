"""What the two tunnel devices (``vxlan.calico``, ``tunl0``) have alike: their MTU, the
data device they ride on, and keeping a device's MTU, address and state as wanted
(Felix's ``routeManager.configureTunnelDevice``, ``felix/dataplane/linux/route_mgr.go``).

Everything takes a pyroute2 ``IPRoute`` opened in the network namespace to act on.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from pycalico.core import felixconfig
from pycalico.core.schema import check

# Felix's MTUIfacePattern default, and the host MTU it assumes when nothing matches.
MTU_IFACE_PATTERN = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)"
DEFAULT_HOST_MTU = 1460
_IFF_UP = 0x1

# The validator of a plugin table's ``mtu`` key.
MTU_RANGE = check(lambda v: v == 0 or 68 <= v <= 65535, "must be 0 (auto) or between 68 and 65535, got {value}")


def host_mtu(ipr: Any, pattern: str = MTU_IFACE_PATTERN) -> int:
    """The smallest MTU of the up interfaces whose names match ``pattern`` (Felix's
    host MTU), or 1460 if none does."""
    regex = re.compile(pattern)
    mtus = [
        link.get_attr("IFLA_MTU")
        for link in ipr.get_links()
        if link["flags"] & _IFF_UP and regex.search(link.get_attr("IFLA_IFNAME") or "")
    ]
    return min(mtus, default=DEFAULT_HOST_MTU)


def tunnel_mtu(state: Any, ipr: Any, configured: int | None, felix_key: str, overhead: int) -> int:
    """The tunnel's MTU: ``configured`` (the plugin's table), else the
    FelixConfiguration value, else 0; 0 means the host MTU less ``overhead``."""
    mtu = configured if configured is not None else felixconfig.setting(state, felix_key, 0)
    if mtu:
        return mtu
    return host_mtu(ipr, felixconfig.setting(state, "mtu_iface_pattern", MTU_IFACE_PATTERN)) - overhead


def data_device(ipr: Any, address: ipaddress.IPv4Address) -> tuple[int, str] | None:
    """(index, name) of the interface that holds ``address``."""
    for entry in ipr.get_addr(family=socket.AF_INET):
        if entry.get_attr("IFA_ADDRESS") == str(address):
            index = entry["index"]
            return index, ipr.get_links(index)[0].get_attr("IFLA_IFNAME")
    return None


def link_index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def converge(ipr: Any, index: int, name: str, mtu: int, address: ipaddress.IPv4Address | None) -> list[str]:
    """Give device ``index`` the MTU ``mtu``, ``address``/32 as its only IPv4 address
    (none if None), and admin state up; one line per change."""
    lines = []
    (link,) = ipr.get_links(index)
    if link.get_attr("IFLA_MTU") != mtu:
        ipr.link("set", index=index, mtu=mtu)
        lines.append(f"{name} mtu {mtu}")
    lines += set_address(ipr, index, name, address)
    if not link["flags"] & _IFF_UP:
        ipr.link("set", index=index, state="up")
        lines.append(f"{name} up")
    return lines


def set_address(ipr: Any, index: int, name: str, address: ipaddress.IPv4Address | None) -> list[str]:
    """``address``/32 as the only IPv4 address of device ``index`` (none if None)."""
    lines = []
    present = {
        (a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(family=socket.AF_INET, index=index)
    }
    wanted = {(str(address), 32)} if address is not None else set()
    for addr, prefixlen in sorted(present - wanted):
        ipr.addr("del", index=index, address=addr, prefixlen=prefixlen)
        lines.append(f"{name} address {addr}/{prefixlen} removed")
    for addr, prefixlen in sorted(wanted - present):
        ipr.addr("add", index=index, address=addr, prefixlen=prefixlen)
        lines.append(f"{name} address {addr}/{prefixlen} added")
    return lines


def remove(ipr: Any, name: str) -> list[str]:
    """Delete device ``name`` if it exists (its routes go with it)."""
    index = link_index(ipr, name)
    if index is None:
        return []
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != 19:  # ENODEV: gone meanwhile
            raise
        return []
    return [f"{name} removed"]
