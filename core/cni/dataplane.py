"""Wiring a workload as Calico does (``cni-plugin/pkg/dataplane/linux/dataplane_linux.go``).

* a veth pair: the host side ``cali…`` in the namespace this process runs in (the
  node's), the other end ``CNI_IFNAME`` created straight inside the container's
  namespace (so a name such as eth0 never meets the node's own eth0);
* host side: MAC ``ee:ee:ee:ee:ee:ee``, up, ``proxy_arp=1``, ``proxy_delay=0``,
  ``route_localnet=1``, ``forwarding=1`` (IPv6: ``proxy_ndp=1``, ``forwarding=1``,
  ``accept_dad=0``, ``accept_ra=0``), and one route per address ``IP/32 dev cali…
  scope link``;
* container side: each address as /32 (/128); ``169.254.1.1/32 scope link`` then the
  routes (default ``0.0.0.0/0``) via 169.254.1.1; IPv6 routes via the host side's
  link-local address; ``ip_forward`` only if ``container_settings.allow_ip_forwarding``.

Work inside the container's namespace runs in a short-lived thread that has joined it
(``setns`` moves only the calling thread, and a netlink socket stays in the namespace it
was made in); the container namespace is given as a path (``/var/run/netns/<name>``,
``/proc/<pid>/ns/net``), as the runtime passes it in CNI_NETNS. Nothing here changes the
namespace the process itself runs in, except the host side of the veth and its routes.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pycalico.core import nsenter
from pycalico.core.nsenter import NetnsGone

from . import spec
from .spec import CniError

HOST_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY_V4 = "169.254.1.1"
SCOPE_LINK = 253
PROTO_BOOT = 3
MAIN_TABLE = 254
IFF_UP = 0x1
NETNS_TIMEOUT = 20.0
T = TypeVar("T")



def in_netns(path: str, fn: Callable[[], T], timeout: float = NETNS_TIMEOUT) -> T:
    """``fn()`` in a thread inside the network namespace at ``path`` (NetnsGone if
    there is none there); a hung call is a CNI error."""
    try:
        return nsenter.in_netns(path, fn, timeout)
    except TimeoutError as exc:
        raise CniError(spec.GENERIC, str(exc)) from None


def write_sysctl(key: str, value: str | int) -> None:
    """``key`` as a /proc/sys path below net/ (``ipv4/conf/cali1/proxy_arp``), in the
    calling thread's network namespace."""
    with open(f"/proc/sys/net/{key}", "w") as f:
        f.write(str(value))


def read_sysctl(key: str) -> str | None:
    try:
        with open(f"/proc/sys/net/{key}") as f:
            return f.read().strip()
    except OSError:
        return None


def _link(ipr: IPRoute, name: str):
    found = ipr.link_lookup(ifname=name)
    return ipr.get_links(found[0])[0] if found else None


def _routes(ipr: IPRoute, family: int, oif: int | None = None) -> list[dict]:
    out = []
    for r in ipr.get_routes(family=family):
        table = r.get_attr("RTA_TABLE") or r["table"]
        if table != MAIN_TABLE:
            continue
        entry = {
            "dst": f"{r.get_attr('RTA_DST') or ('0.0.0.0' if family == 2 else '::')}/{r['dst_len']}",
            "gw": r.get_attr("RTA_GATEWAY") or "",
            "oif": r.get_attr("RTA_OIF"),
            "scope": r["scope"],
        }
        if oif is None or entry["oif"] == oif:
            out.append(entry)
    return out


def _addresses(ipr: IPRoute, index: int) -> set[str]:
    return {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=index)}


@dataclass
class Wiring:
    """What ``setup`` made: the names and MACs the result and the endpoint carry."""

    host_veth: str
    host_mac: str
    container_mac: str


def setup(*, host_veth: str, netns: str, ifname: str, ips: Iterable[str],
          routes: Iterable[tuple[str, str]], mtu: int = 0, num_queues: int = 0,
          allow_ip_forwarding: bool = False) -> Wiring:
    """Create and configure the veth pair for one workload: ``create_pair`` then
    ``configure``. ``ips`` are addresses (any prefix: forced to /32 and /128),
    ``routes`` (dst, gw) for the container; an empty gw means via the host side. Raises
    CniError; leaves the veth behind on failure (``teardown_host`` removes it)."""
    ips = list(ips)
    families = {ipaddress.ip_interface(str(ip).split("/")[0]).version for ip in ips}
    wiring = create_pair(host_veth=host_veth, netns=netns, ifname=ifname, families=families, mtu=mtu,
                         num_queues=num_queues)
    configure(wiring, netns=netns, ifname=ifname, ips=ips, routes=routes, allow_ip_forwarding=allow_ip_forwarding)
    return wiring


def create_pair(*, host_veth: str, netns: str, ifname: str, families: Iterable[int], mtu: int = 0,
                num_queues: int = 0) -> Wiring:
    """The veth pair, before any address is known (so that it can be made while IPAM
    runs): a stale host side of that name removed, the pair created with ``ifname``
    inside the container, the host side's MAC, sysctls (for the address ``families``)
    and link up."""
    families = set(families)
    try:
        nsfd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CniError(spec.UNKNOWN_CONTAINER,
                       f"CNI_NETNS: cannot open the container's network namespace {netns}: {exc.strerror}") from None
    try:
        with IPRoute() as ipr:
            stale = ipr.link_lookup(ifname=host_veth)
            if stale:  # left by an earlier sandbox of the same pod: Calico removes it
                _delete_link(ipr, stale[0])
            peer: dict = {"ifname": ifname, "net_ns_fd": nsfd}
            extra: dict = {}
            if mtu:
                peer["mtu"] = extra["mtu"] = mtu
            if num_queues:
                for key in ("num_tx_queues", "num_rx_queues"):
                    peer[key] = extra[key] = num_queues
            try:
                ipr.link("add", ifname=host_veth, kind="veth", peer=peer, **extra)
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    raise CniError(spec.GENERIC,
                                   f"the container's network namespace already has an interface named {ifname!r} "
                                   f"(CNI_IFNAME); delete it or choose another name") from None
                raise CniError(spec.GENERIC, f"creating veth {host_veth}/{ifname}: {exc}") from None
            index = ipr.link_lookup(ifname=host_veth)[0]
            host_mac = HOST_MAC
            try:
                ipr.link("set", index=index, address=HOST_MAC)
            except NetlinkError:  # Calico keeps the kernel's MAC then
                host_mac = ipr.get_links(index)[0].get_attr("IFLA_ADDRESS")
            _host_sysctls(host_veth, 4 in families, 6 in families)
            ipr.link("set", index=index, state="up")
            container_mac = in_netns(netns, lambda: _container_link(ifname, 6 in families))
            return Wiring(host_veth, host_mac, container_mac)
    except NetnsGone:
        raise CniError(spec.UNKNOWN_CONTAINER, f"CNI_NETNS: the network namespace {netns} disappeared") from None
    finally:
        os.close(nsfd)


def configure(wiring: Wiring, *, netns: str, ifname: str, ips: Iterable[str],
              routes: Iterable[tuple[str, str]], allow_ip_forwarding: bool = False) -> None:
    """Addresses and routes on a pair made by ``create_pair``: each address as /32 or
    /128 in the container, 169.254.1.1 and the routes there, one host route per
    address."""
    addrs = [ipaddress.ip_interface(str(ip).split("/")[0]) for ip in ips]
    has4 = any(a.version == 4 for a in addrs)
    has6 = any(a.version == 6 for a in addrs)
    try:
        in_netns(netns, lambda: _setup_container(ifname, addrs, list(routes), has4, has6, allow_ip_forwarding,
                                                 link_local(wiring.host_mac)))
    except NetnsGone:
        raise CniError(spec.UNKNOWN_CONTAINER, f"CNI_NETNS: the network namespace {netns} disappeared") from None
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=wiring.host_veth)
        if not found:
            raise CniError(spec.GENERIC, f"host interface {wiring.host_veth} disappeared while being set up")
        for addr in addrs:
            _host_route(ipr, found[0], wiring.host_veth, addr)


def _host_sysctls(veth: str, has4: bool, has6: bool) -> None:
    settings = []
    if has4:
        settings += [(f"ipv4/conf/{veth}/route_localnet", 1), (f"ipv4/neigh/{veth}/proxy_delay", 0),
                     (f"ipv4/conf/{veth}/proxy_arp", 1), (f"ipv4/conf/{veth}/forwarding", 1)]
    if has6:
        settings += [(f"ipv6/conf/{veth}/disable_ipv6", 0), (f"ipv6/conf/{veth}/accept_dad", 0),
                     (f"ipv6/conf/{veth}/proxy_ndp", 1), (f"ipv6/conf/{veth}/forwarding", 1),
                     (f"ipv6/conf/{veth}/accept_ra", 0)]
    for key, value in settings:
        try:
            write_sysctl(key, value)
        except OSError as exc:
            raise CniError(spec.GENERIC, f"setting net.{key.replace('/', '.')}={value} on the host: "
                                         f"{exc.strerror}") from None


def _container_link(ifname: str, has6: bool) -> str:
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        if has6:
            for key in ("all", "default", "lo"):
                write_sysctl(f"ipv6/conf/{key}/disable_ipv6", 0)
            write_sysctl(f"ipv6/conf/{ifname}/accept_dad", 0)  # before the link goes up
        ipr.link("set", index=index, state="up")
        return ipr.get_links(index)[0].get_attr("IFLA_ADDRESS")


def _setup_container(ifname, addrs, routes, has4, has6, allow_forwarding, host_ll) -> None:
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        for addr in addrs:
            ipr.addr("add", index=index, address=str(addr.ip), prefixlen=addr.max_prefixlen)
        if has4:
            ipr.route("add", dst=f"{GATEWAY_V4}/32", oif=index, scope=SCOPE_LINK, proto=PROTO_BOOT)
        for dst, gw in routes:
            net = ipaddress.ip_network(dst, strict=False)
            if net.version == 4 and has4:
                ipr.route("add", dst=str(net), gateway=gw or GATEWAY_V4, oif=index, proto=PROTO_BOOT)
            elif net.version == 6 and has6:
                ipr.route("add", dst=str(net), gateway=gw or host_ll, oif=index, proto=PROTO_BOOT)
        if has4:
            write_sysctl("ipv4/ip_forward", 1 if allow_forwarding else 0)
        if has6:
            write_sysctl("ipv6/conf/all/forwarding", 1 if allow_forwarding else 0)


def link_local(mac: str) -> str:
    """The IPv6 link-local address the kernel gives an interface with ``mac`` (EUI-64):
    the container's IPv6 next hop, as Calico reads it off the host side."""
    b = [int(x, 16) for x in mac.split(":")]
    b[0] ^= 0x02
    eui = b[:3] + [0xFF, 0xFE] + b[3:]
    groups = [f"{eui[i] << 8 | eui[i + 1]:x}" for i in range(0, 8, 2)]
    return str(ipaddress.ip_address("fe80::" + ":".join(groups)))


def _host_route(ipr: IPRoute, index: int, veth: str, addr) -> None:
    dst = f"{addr.ip}/{addr.max_prefixlen}"
    family = 2 if addr.version == 4 else 10
    try:
        ipr.route("add", dst=dst, oif=index, scope=SCOPE_LINK, proto=PROTO_BOOT)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise CniError(spec.GENERIC, f"adding the host route {dst} dev {veth}: {exc}") from None
        for r in _routes(ipr, family):
            if r["dst"] == dst:
                if r["oif"] == index:
                    return  # already there (Felix may have added it first)
                other = ipr.get_links(r["oif"])[0].get_attr("IFLA_IFNAME") if r["oif"] else "unknown"
                raise CniError(spec.GENERIC, f"a route to {dst} already exists via {other}, not {veth}: is the "
                                             "address in use by another workload on this node?") from None


def _delete_link(ipr: IPRoute, index: int) -> bool:
    try:
        ipr.link("del", index=index)
        return True
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ESRCH, errno.ENOENT):
            return False
        raise


def teardown(netns: str, ifname: str) -> bool:
    """Delete ``ifname`` inside the container's namespace (its peer, the host side, goes
    with it, and with that its routes). A missing namespace or interface is not an error.
    Returns whether something was deleted."""
    if not netns:
        return False

    def remove() -> bool:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            return bool(found) and _delete_link(ipr, found[0])

    try:
        return in_netns(netns, remove)
    except NetnsGone:
        return False


def teardown_host(host_veth: str) -> bool:
    """Delete the host side of a veth (undoing a failed ADD)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=host_veth)
        return bool(found) and _delete_link(ipr, found[0])


def check(*, host_veth: str, netns: str, ifname: str, ips: Iterable[str],
          routes: Iterable[tuple[str, str]]) -> list[str]:
    """What differs from what ``setup`` makes, one line each (empty: all there)."""
    addrs = [ipaddress.ip_interface(str(ip).split("/")[0]) for ip in ips]
    routes = list(routes)
    problems: list[str] = []
    has4 = any(a.version == 4 for a in addrs)

    def container() -> list[str]:
        out = []
        with IPRoute() as ipr:
            link = _link(ipr, ifname)
            if link is None:
                return [f"container interface {ifname} does not exist in {netns}"]
            index = link["index"]
            if not link["flags"] & IFF_UP:
                out.append(f"container interface {ifname} is down")
            have = _addresses(ipr, index)
            for a in addrs:
                want = f"{a.ip}/{a.max_prefixlen}"
                if want not in have:
                    out.append(f"container interface {ifname} lacks address {want} (has {', '.join(sorted(have)) or 'none'})")
            if has4:
                v4 = _routes(ipr, 2, index)
                if not any(r["dst"] == f"{GATEWAY_V4}/32" and r["scope"] == SCOPE_LINK for r in v4):
                    out.append(f"container route {GATEWAY_V4}/32 scope link dev {ifname} is missing")
            for dst, gw in routes:
                net = ipaddress.ip_network(dst, strict=False)
                if net.version == 4 and has4:
                    want_gw = gw or GATEWAY_V4
                    if not any(r["dst"] == str(net) and r["gw"] == want_gw for r in _routes(ipr, 2, index)):
                        out.append(f"container route {net} via {want_gw} dev {ifname} is missing")
                elif net.version == 6 and any(a.version == 6 for a in addrs):
                    if not any(r["dst"] == str(net) for r in _routes(ipr, 10, index)):
                        out.append(f"container route {net} dev {ifname} is missing")
        return out

    try:
        problems += in_netns(netns, container)
    except NetnsGone:
        return [f"the container's network namespace {netns} does not exist"]
    with IPRoute() as ipr:
        link = _link(ipr, host_veth)
        if link is None:
            return problems + [f"host interface {host_veth} does not exist"]
        index = link["index"]
        if not link["flags"] & IFF_UP:
            problems.append(f"host interface {host_veth} is down")
        if has4 and read_sysctl(f"ipv4/conf/{host_veth}/proxy_arp") != "1":
            problems.append(f"net.ipv4.conf.{host_veth}.proxy_arp is not 1")
        for a in addrs:
            dst = f"{a.ip}/{a.max_prefixlen}"
            found = [r for r in _routes(ipr, 2 if a.version == 4 else 10) if r["dst"] == dst]
            if not any(r["oif"] == index and r["scope"] == SCOPE_LINK for r in found):
                problems.append(f"host route {dst} dev {host_veth} scope link is missing")
    return problems
