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
Work on the node's side goes through a ``Host`` (one socket kept by its own thread) when
the caller keeps one, as the agent does, else through a socket opened for the call.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
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


class Host:
    """The netlink socket of the namespace this process wires pods from (the node's),
    kept open by a thread of its own: the agent serves every pod of its node through it
    instead of opening a socket per step. pyroute2 sets up an event loop for each socket
    and for each thread that uses one, which costs more than most requests, so calls
    are handed to that one thread and run there, one at a time. The thread is started on
    first use by a thread of that namespace, and so lives there."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._worker: ThreadPoolExecutor | None = None
        self._ipr: IPRoute | None = None

    def run(self, fn: Callable[[IPRoute], T]) -> T:
        """``fn(socket)`` in the socket's thread; its result or exception."""
        with self._lock:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="netlink")
            worker = self._worker
        return worker.submit(self._call, fn).result()

    def _call(self, fn: Callable[[IPRoute], T]) -> T:
        if self._ipr is None:
            self._ipr = IPRoute(groups=0)  # no multicast: a kept socket must not queue every event
        try:
            return fn(self._ipr)
        except OSError as exc:
            if not isinstance(exc, NetlinkError):  # the socket itself failed: a new one next time
                self._ipr.close()
                self._ipr = None
            raise

    def close(self) -> None:
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.submit(self._close).result()
            worker.shutdown()

    def _close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None


def _on_host(host: Host | None, fn: Callable[[IPRoute], T]) -> T:
    """``fn(socket)`` with ``host``'s kept socket, or with one opened for this call."""
    if host is not None:
        return host.run(fn)
    with IPRoute() as ipr:
        return fn(ipr)


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


def index_of(name: str) -> int | None:
    """The index of interface ``name`` in the calling thread's network namespace (None
    if there is none): one ioctl, where a netlink lookup decodes the whole link."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def _link(ipr: IPRoute, name: str):
    index = index_of(name)
    return ipr.get_links(index)[0] if index else None


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


class PairExists(Exception):
    """``create_pair`` without ``replace_stale`` found the host side (or the container's
    interface) there already."""


@dataclass
class Wiring:
    """What ``create_pair`` made: the names and MACs the result and the endpoint carry,
    and the host side's interface index (for its routes)."""

    host_veth: str
    host_mac: str
    container_mac: str
    host_index: int = 0


def setup(*, host_veth: str, netns: str, ifname: str, ips: Iterable[str],
          routes: Iterable[tuple[str, str]], mtu: int = 0, num_queues: int = 0,
          allow_ip_forwarding: bool = False, container_mac: str = "", host: Host | None = None) -> Wiring:
    """Create and configure the veth pair for one workload: ``create_pair`` then
    ``configure``. ``ips`` are addresses (any prefix: forced to /32 and /128),
    ``routes`` (dst, gw) for the container; an empty gw means via the host side. Raises
    CniError; leaves the veth behind on failure (``teardown_host`` removes it)."""
    ips = list(ips)
    families = {ipaddress.ip_interface(str(ip).split("/")[0]).version for ip in ips}
    wiring = create_pair(host_veth=host_veth, netns=netns, ifname=ifname, families=families, mtu=mtu,
                         num_queues=num_queues, container_mac=container_mac, host=host)
    configure(wiring, netns=netns, ifname=ifname, ips=ips, routes=routes, allow_ip_forwarding=allow_ip_forwarding,
              host=host)
    return wiring


def random_mac() -> str:
    """A random locally administered unicast MAC: what the kernel gives a veth that is
    not given one (Calico lets it choose)."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def create_pair(*, host_veth: str, netns: str, ifname: str, families: Iterable[int], mtu: int = 0,
                num_queues: int = 0, container_mac: str = "", host: Host | None = None,
                replace_stale: bool = True) -> Wiring:
    """The veth pair, before any address is known (so that it can be made while IPAM
    runs): a host side of that name left by an earlier sandbox of the pod removed, as
    Calico does (without ``replace_stale``: PairExists, nothing changed, if the host
    side or the container's ``ifname`` exists already), then one netlink request makes
    the pair, the host side with MAC ``ee:ee:ee:ee:ee:ee``, the other end ``ifname`` inside
    the container with ``container_mac`` (default: a random one), still down
    (``configure`` brings it up); the host side's sysctls (for the address
    ``families``), and the host side up."""
    families = set(families)
    container_mac = container_mac or random_mac()
    try:
        nsfd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CniError(spec.UNKNOWN_CONTAINER,
                       f"CNI_NETNS: cannot open the container's network namespace {netns}: {exc.strerror}") from None

    def make(ipr: IPRoute) -> int:
        stale = index_of(host_veth) if replace_stale else None
        if stale:
            _delete_link(ipr, stale)
        peer: dict = {"ifname": ifname, "net_ns_fd": nsfd, "address": container_mac}
        extra: dict = {}
        if mtu:
            peer["mtu"] = extra["mtu"] = mtu
        if num_queues:
            for key in ("num_tx_queues", "num_rx_queues"):
                peer[key] = extra[key] = num_queues
        # IPv6 needs accept_dad=0 before the link goes up (else its link-local
        # address, the container's next hop, stays tentative for a second).
        up_now = 6 not in families
        try:
            ipr.link("add", ifname=host_veth, kind="veth", address=HOST_MAC, peer=peer, **extra,
                     **({"state": "up"} if up_now else {}))
        except NetlinkError as exc:
            if exc.code == errno.EEXIST and not replace_stale:
                raise PairExists(host_veth) from None
            if exc.code == errno.EEXIST:
                raise CniError(spec.GENERIC,
                               f"the container's network namespace already has an interface named {ifname!r} "
                               f"(CNI_IFNAME); delete it or choose another name") from None
            raise CniError(spec.GENERIC, f"creating veth {host_veth}/{ifname}: {exc}") from None
        index = index_of(host_veth)
        if index is None:
            raise CniError(spec.GENERIC, f"host interface {host_veth} disappeared while being set up")
        _host_sysctls(host_veth, 4 in families, 6 in families)
        if not up_now:
            ipr.link("set", index=index, state="up")
        return index

    try:
        index = _on_host(host, make)
    finally:
        os.close(nsfd)
    return Wiring(host_veth, HOST_MAC, container_mac, index)


def configure(wiring: Wiring, *, netns: str, ifname: str, ips: Iterable[str],
              routes: Iterable[tuple[str, str]], allow_ip_forwarding: bool = False, host: Host | None = None) -> None:
    """Addresses and routes on a pair made by ``create_pair``: in the container (one
    visit) the interface up, each address as /32 or /128, 169.254.1.1 and the routes;
    then one host route per address."""
    addrs = [ipaddress.ip_interface(str(ip).split("/")[0]) for ip in ips]
    has4 = any(a.version == 4 for a in addrs)
    has6 = any(a.version == 6 for a in addrs)
    try:
        in_netns(netns, lambda: _setup_container(ifname, addrs, list(routes), has4, has6, allow_ip_forwarding,
                                                 link_local(wiring.host_mac)))
    except NetnsGone:
        raise CniError(spec.UNKNOWN_CONTAINER, f"CNI_NETNS: the network namespace {netns} disappeared") from None

    def routes_on_host(ipr: IPRoute) -> None:
        for addr in addrs:
            _host_route(ipr, wiring.host_index, wiring.host_veth, addr)

    _on_host(host, routes_on_host)


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


def _setup_container(ifname, addrs, routes, has4, has6, allow_forwarding, host_ll) -> None:
    with IPRoute() as ipr:
        index = index_of(ifname)
        if index is None:
            raise CniError(spec.GENERIC, f"container interface {ifname} disappeared while being set up")
        if has6:
            for key in ("all", "default", "lo"):
                write_sysctl(f"ipv6/conf/{key}/disable_ipv6", 0)
            write_sysctl(f"ipv6/conf/{ifname}/accept_dad", 0)  # before the link goes up
        ipr.link("set", index=index, state="up")
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
        index = index_of(ifname)
        if index is None:
            return False
        with IPRoute() as ipr:
            return _delete_link(ipr, index)

    try:
        return in_netns(netns, remove)
    except NetnsGone:
        return False


def teardown_host(host_veth: str, host: Host | None = None) -> bool:
    """Delete the host side of a veth (undoing a failed ADD)."""

    def remove(ipr: IPRoute) -> bool:
        index = index_of(host_veth)
        return index is not None and _delete_link(ipr, index)

    return _on_host(host, remove)


def check(*, host_veth: str, netns: str, ifname: str, ips: Iterable[str],
          routes: Iterable[tuple[str, str]], host: Host | None = None) -> list[str]:
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
    def host_side(ipr: IPRoute) -> list[str]:
        link = _link(ipr, host_veth)
        if link is None:
            return [f"host interface {host_veth} does not exist"]
        out = []
        index = link["index"]
        if not link["flags"] & IFF_UP:
            out.append(f"host interface {host_veth} is down")
        if has4 and read_sysctl(f"ipv4/conf/{host_veth}/proxy_arp") != "1":
            out.append(f"net.ipv4.conf.{host_veth}.proxy_arp is not 1")
        for a in addrs:
            dst = f"{a.ip}/{a.max_prefixlen}"
            found = [r for r in _routes(ipr, 2 if a.version == 4 else 10) if r["dst"] == dst]
            if not any(r["oif"] == index and r["scope"] == SCOPE_LINK for r in found):
                out.append(f"host route {dst} dev {host_veth} scope link is missing")
        return out

    return problems + _on_host(host, host_side)
