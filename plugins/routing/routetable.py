"""The kernel's main IPv4 route table, as far as Felix's routes go (protocol 80).

``sync(desired)`` is level-based: it dumps the main table's routes of
protocol 80, compares them with ``desired``, and sends only the difference. Routes of
any other protocol (the kernel's, the CNI's workload routes, BIRD's) are never
touched, and protocol 80 in the main table belongs to whoever calls ``sync``: one
caller per network namespace, with every route it wants in one call.

It speaks rtnetlink directly rather than through pyroute2: at 5,000 routes pyroute2
needs about 1.5 s to send them one request at a time and 0.3 s to parse a dump, where
encoding them here and sending them in batches of a few hundred messages per
``sendmsg`` comes close to ``ip -batch`` (``benchmarks/routes_program.py``). Everything
acts on the network namespace of the calling thread.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from typing import Literal

import attrs

PROTO = 80  # Felix's own route protocol (dataplanedefs.DefaultRouteProto)
MAIN_TABLE = 254

_RTM_NEWROUTE, _RTM_DELROUTE, _RTM_GETROUTE = 24, 25, 26
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_ACK = 0x1, 0x4
_NLM_F_DUMP, _NLM_F_REPLACE, _NLM_F_CREATE = 0x300, 0x100, 0x400
_NLM_F_ACK_TLVS = 0x200  # on an error message: extended-ack attributes follow
_RTA_DST, _RTA_OIF, _RTA_GATEWAY, _RTA_PRIORITY, _RTA_TABLE = 1, 4, 5, 6, 15
_NLMSGERR_ATTR_MSG = 1
_RTN_UNICAST, _RTN_BLACKHOLE = 1, 6
_RT_SCOPE_UNIVERSE = 0
_RTNH_F_ONLINK = 4
_SOL_NETLINK = 270
_NETLINK_CAP_ACK, _NETLINK_EXT_ACK, _NETLINK_GET_STRICT_CHK = 10, 11, 12
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_ATTR = struct.Struct("=HH")
_U32, _BE32 = struct.Struct("=I"), struct.Struct(">I")
_BATCH_BYTES = 32 * 1024  # per sendmsg: the acks of one batch fit any receive buffer

Kind = Literal["unicast", "blackhole"]


class RouteError(RuntimeError):
    """Some routes could not be programmed; ``failures`` holds (route, reason) pairs.
    The others were programmed."""

    def __init__(self, failures: list[tuple[str, str]]):
        self.failures = failures
        shown = "; ".join(f"{route}: {reason}" for route, reason in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} route(s) failed: {shown}{more}")


def _network(value) -> ipaddress.IPv4Network:
    return value if type(value) is ipaddress.IPv4Network else ipaddress.IPv4Network(value)


def _address(value) -> ipaddress.IPv4Address | None:
    return value if value is None or type(value) is ipaddress.IPv4Address else ipaddress.IPv4Address(value)


@attrs.frozen(order=True)
class Route:
    """One route of the main table: to ``dst`` via ``gateway`` out of ``dev``, or a
    blackhole. ``onlink`` tells the kernel the gateway is on the device's link even
    though no address of the device covers it (tunnel routes)."""

    dst: ipaddress.IPv4Network = attrs.field(converter=_network)
    kind: Kind = "unicast"
    gateway: ipaddress.IPv4Address | None = attrs.field(default=None, converter=_address)
    dev: str | None = None
    onlink: bool = False

    def __attrs_post_init__(self) -> None:
        if self.kind == "blackhole" and (self.gateway or self.dev or self.onlink):
            raise ValueError(f"blackhole route {self.dst} takes no gateway, device or onlink")
        if self.kind == "unicast" and not self.dev:
            raise ValueError(f"route {self.dst} needs a device")

    def __str__(self) -> str:
        if self.kind == "blackhole":
            return f"blackhole {self.dst}"
        via = f" via {self.gateway}" if self.gateway else ""
        return f"{self.dst}{via} dev {self.dev}" + (" onlink" if self.onlink else "")


# A route as the kernel holds it: (type, gateway as an int or None, output ifindex or
# None, onlink), keyed by (destination as an int, prefix length, metric). Comparing
# these instead of Route objects keeps a no-change pass over thousands of routes cheap.
Wire = tuple[int, int | None, int | None, bool]
WireKey = tuple[int, int, int]


def _wire(route: Route, names: dict[str, int]) -> Wire:
    rtype = _RTN_BLACKHOLE if route.kind == "blackhole" else _RTN_UNICAST
    gateway = None if route.gateway is None else int(route.gateway)
    return rtype, gateway, None if route.dev is None else names[route.dev], route.onlink


def _route(key: WireKey, wire: Wire, names: dict[int, str]) -> Route:
    dst = ipaddress.IPv4Network((key[0], key[1]))
    rtype, gateway, oif, onlink = wire
    if rtype == _RTN_BLACKHOLE:
        return Route(dst, "blackhole")
    dev = None if oif is None else names.get(oif, f"if{oif}")
    return Route(dst, gateway=None if gateway is None else ipaddress.IPv4Address(gateway), dev=dev, onlink=onlink)


def sync(desired: Iterable[Route]) -> list[str]:
    """Make the table's protocol-80 routes exactly ``desired`` (one per destination);
    one line per change (``route <route> added|replaced|removed``). RouteError after
    the rest is done if some could not be programmed (a device that is missing)."""
    wanted: dict[ipaddress.IPv4Network, Route] = {}
    for route in desired:
        first = wanted.setdefault(route.dst, route)
        if first is not route and first != route:
            raise ValueError(f"two routes to {route.dst}: {wanted[route.dst]} and {route}")
    with _Socket() as sock:
        actual = sock.dump()
        indexes = dict(socket.if_nameindex())
        names = {name: index for index, name in indexes.items()}
        ops: list[tuple[int, int, bytes, str]] = []
        failures: list[tuple[str, str]] = []
        keep: set[WireKey] = set()
        # Sorted by integer keys: comparing IPv4Network objects costs more than the sync.
        for key, route in sorted(((int(d.network_address), d.prefixlen, 0), r) for d, r in wanted.items()):
            if route.dev is not None and route.dev not in names:
                failures.append((str(route), f"no device {route.dev}"))
                continue
            current = actual.get(key)
            if current == _wire(route, names):
                keep.add(key)
                continue
            verb = "added" if current is None else "replaced"
            keep.add(key)
            ops.append((_RTM_NEWROUTE, _NLM_F_CREATE | _NLM_F_REPLACE, _encode(route, names), f"route {route} {verb}"))
        for key, wire in sorted(actual.items()):
            if key not in keep:
                route = _route(key, wire, indexes)
                ops.append((_RTM_DELROUTE, 0, _encode(route, None, key[2]), f"route {route} removed"))
        done, failed = sock.apply(ops)
    if failures or failed:
        raise RouteError(failures + failed)
    return done


def routes() -> list[Route]:
    """The protocol-80 routes of the main table, sorted."""
    with _Socket() as sock:
        indexes = dict(socket.if_nameindex())
        return sorted(_route(key, wire, indexes) for key, wire in sock.dump().items())


def _attr(kind: int, payload: bytes) -> bytes:
    data = _ATTR.pack(4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _encode(route: Route, names: dict[str, int] | None, priority: int = 0) -> bytes:
    """The rtmsg and attributes of ``route``: whole for RTM_NEWROUTE; without ``names``
    only its key (destination, table, protocol, type, metric) for RTM_DELROUTE, which
    then matches whatever device it went out of, even one that is gone."""
    rtype = _RTN_BLACKHOLE if route.kind == "blackhole" else _RTN_UNICAST
    flags = _RTNH_F_ONLINK if route.onlink else 0
    body = _RTMSG.pack(socket.AF_INET, route.dst.prefixlen, 0, 0, MAIN_TABLE, PROTO, _RT_SCOPE_UNIVERSE, rtype, flags)
    body += _attr(_RTA_DST, route.dst.network_address.packed)
    if names is not None and route.gateway is not None:
        body += _attr(_RTA_GATEWAY, route.gateway.packed)
    if names is not None and route.dev is not None:
        body += _attr(_RTA_OIF, _U32.pack(names[route.dev]))
    if priority:
        body += _attr(_RTA_PRIORITY, _U32.pack(priority))
    return body


def _attrs(data: bytes | memoryview, offset: int, end: int) -> Iterator[tuple[int, memoryview]]:
    view = memoryview(data)
    while offset + 4 <= end:
        length, kind = _ATTR.unpack_from(view, offset)
        if length < 4:
            return
        yield kind & 0x3FFF, view[offset + 4 : offset + length]
        offset += (length + 3) & ~3


def _decode(data: bytes, offset: int, end: int) -> tuple[WireKey, Wire] | None:
    """A dumped route, if it is a protocol-80 unicast or blackhole route of the main table."""
    _family, dst_len, _src_len, _tos, table, protocol, _scope, rtype, flags = _RTMSG.unpack_from(data, offset)
    if protocol != PROTO or rtype not in (_RTN_UNICAST, _RTN_BLACKHOLE):
        return None
    dst = priority = 0
    gateway = oif = None
    for kind, value in _attrs(data, offset + _RTMSG.size, end):
        if kind == _RTA_TABLE:
            table = _U32.unpack(value)[0]
        elif kind == _RTA_DST:
            dst = _BE32.unpack(value)[0]
        elif kind == _RTA_GATEWAY:
            gateway = _BE32.unpack(value)[0]
        elif kind == _RTA_OIF:
            oif = _U32.unpack(value)[0]
        elif kind == _RTA_PRIORITY:
            priority = _U32.unpack(value)[0]
    if table != MAIN_TABLE:
        return None
    if rtype == _RTN_BLACKHOLE:
        gateway = oif = None
    return (dst, dst_len, priority), (rtype, gateway, oif, bool(flags & _RTNH_F_ONLINK) and rtype == _RTN_UNICAST)


class _Socket:
    """One rtnetlink socket: a dump, then batches of requests with their acks."""

    def __enter__(self) -> _Socket:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        enabled = set()
        for option in (_NETLINK_CAP_ACK, _NETLINK_EXT_ACK, _NETLINK_GET_STRICT_CHK):
            try:
                self.sock.setsockopt(_SOL_NETLINK, option, 1)
                enabled.add(option)
            except OSError:
                pass  # older kernels: whole requests echoed, no error texts, dumps filtered here
        self.cap_ack = _NETLINK_CAP_ACK in enabled
        self.seq = 0
        self.buf = bytearray(1 << 20)
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def _messages(self) -> Iterator[tuple[int, int, int, int, int]]:
        """(type, flags, seq, start of payload, end) of each message of one read."""
        size = self.sock.recv_into(self.buf)
        offset = 0
        while offset + _HEADER.size <= size:
            length, mtype, flags, seq, _pid = _HEADER.unpack_from(self.buf, offset)
            if length < _HEADER.size:
                return
            yield mtype, flags, seq, offset + _HEADER.size, offset + length
            offset += (length + 3) & ~3

    def dump(self) -> dict[WireKey, Wire]:
        self.seq += 1
        # With strict checking the kernel filters by table and protocol itself.
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, MAIN_TABLE, PROTO, 0, 0, 0)
        self.sock.send(_HEADER.pack(_HEADER.size + len(body), _RTM_GETROUTE, _NLM_F_REQUEST | _NLM_F_DUMP, self.seq, 0) + body)
        routes: dict[WireKey, Wire] = {}
        while True:
            for mtype, _flags, seq, start, end in self._messages():
                if seq != self.seq:
                    continue
                if mtype == _NLMSG_DONE:
                    return routes
                if mtype == _NLMSG_ERROR:
                    code, _ = self._error(start, end)
                    raise OSError(-code, f"route dump: {os.strerror(-code)}")
                if mtype == _RTM_NEWROUTE:
                    found = _decode(self.buf, start, end)
                    if found is not None:
                        routes[found[0]] = found[1]

    def _error(self, start: int, end: int) -> tuple[int, str]:
        """An NLMSG_ERROR's code (0 for an ack) and extended-ack text."""
        code, orig_len = struct.unpack_from("=iI", self.buf, start)
        flags = _HEADER.unpack_from(self.buf, start - _HEADER.size)[2]
        text = ""
        if flags & _NLM_F_ACK_TLVS:
            # The request comes back whole only with an error and without NETLINK_CAP_ACK.
            echoed = orig_len if code and not self.cap_ack else _HEADER.size
            for kind, value in _attrs(self.buf, start + 4 + ((echoed + 3) & ~3), end):
                if kind == _NLMSGERR_ATTR_MSG:
                    text = bytes(value).split(b"\0", 1)[0].decode(errors="replace")
        return code, text

    def apply(self, ops: list[tuple[int, int, bytes, str]]) -> tuple[list[str], list[tuple[str, str]]]:
        """Send each (type, flags, body, line) with an ack request, in batches. Returns
        the lines of those the kernel accepted, and (route, reason) for the others. A
        delete of a route already gone counts as done."""
        done: list[str] = []
        failures: list[tuple[str, str]] = []
        index = 0
        while index < len(ops):
            batch: dict[int, tuple[int, str]] = {}
            chunk = bytearray()
            while index < len(ops) and len(chunk) < _BATCH_BYTES:
                mtype, flags, body, line = ops[index]
                self.seq += 1
                chunk += _HEADER.pack(_HEADER.size + len(body), mtype, _NLM_F_REQUEST | _NLM_F_ACK | flags, self.seq, 0)
                chunk += body
                batch[self.seq] = (mtype, line)
                index += 1
            self.sock.send(chunk)
            while batch:
                for mtype, _flags, seq, start, end in self._messages():
                    if mtype != _NLMSG_ERROR or seq not in batch:
                        continue
                    sent_type, line = batch.pop(seq)
                    code, text = self._error(start, end)
                    if code == 0 or (sent_type == _RTM_DELROUTE and -code == errno.ESRCH):
                        done.append(line)
                    else:
                        what = line.removeprefix("route ").rsplit(" ", 1)[0]
                        failures.append((what, text or os.strerror(-code)))
        return done, failures
