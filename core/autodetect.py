"""This node's IPv4 address, found the way calico-node's IP_AUTODETECTION_METHOD finds it.

Methods (Calico's spellings): ``first-found``, ``can-reach=DEST``, ``interface=REGEX[,REGEX]``,
``skip-interface=REGEX[,REGEX]``, ``cidr=CIDR[,CIDR]``. Interfaces are read from the
network namespace the process runs in, so the agent inside a lab node sees that node's.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable

import attrs

# Calico's default exclusions for first-found: bridges, tunnels and pod interfaces never
# carry the node's own address.
FIRST_FOUND_EXCLUDES = (
    "^docker.*", "^cbr.*", "^dummy.*", "^virbr.*", "^lxcbr.*", "^veth.*", "^lo",
    "^cali.*", "^tunl.*", "^flannel.*", "^kube-ipvs.*", "^cni.*", "^vxlan.calico.*",
    "^vxlan-v6.calico.*", "^wireguard.cali.*", "^wg-v6.cali.*", "^nodelocaldns.*",
)
METHODS = ("first-found", "can-reach", "interface", "skip-interface", "cidr")


class AutodetectError(ValueError):
    pass


@attrs.frozen
class Method:
    kind: str
    args: tuple[str, ...] = ()


@attrs.frozen
class Candidate:
    interface: str
    address: ipaddress.IPv4Interface


def parse_method(text: str) -> Method:
    """Parse an ``ip_autodetection_method``; ValueError names what is wrong."""
    kind, _, rest = text.partition("=")
    if kind not in METHODS:
        raise ValueError(f"{text!r} is not an autodetection method (one of: {', '.join(METHODS)})")
    if kind == "first-found":
        if rest:
            raise ValueError("first-found takes no argument")
        return Method(kind)
    args = tuple(a.strip() for a in rest.split(",") if a.strip())
    if not args:
        raise ValueError(f"{kind}= needs an argument")
    for arg in args:
        try:
            if kind == "can-reach":
                ipaddress.IPv4Address(socket.gethostbyname(arg) if not _is_ip(arg) else arg)
            elif kind == "cidr":
                ipaddress.IPv4Network(arg, strict=False)
            else:
                re.compile(arg)
        except (ValueError, OSError, re.error) as exc:
            raise ValueError(f"{kind}={arg}: {exc}") from None
    if kind == "can-reach" and len(args) > 1:
        raise ValueError("can-reach takes one destination")
    return Method(kind, args)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def candidates() -> list[Candidate]:
    """Every up interface's global IPv4 addresses, in interface index order."""
    from pyroute2 import IPRoute  # only the agent pays for it

    with IPRoute() as ipr:
        links = {link["index"]: link for link in ipr.get_links()}
        found = []
        for addr in sorted(ipr.get_addr(family=socket.AF_INET), key=lambda a: a["index"]):
            link = links.get(addr["index"])
            if link is None or not (link["flags"] & 1):  # IFF_UP
                continue
            ip = addr.get_attr("IFA_ADDRESS") or addr.get_attr("IFA_LOCAL")
            iface = ipaddress.IPv4Interface(f"{ip}/{addr['prefixlen']}")
            if iface.ip.is_loopback or iface.ip.is_link_local:
                continue
            found.append(Candidate(link.get_attr("IFLA_IFNAME"), iface))
        return found


def choose(method: Method, found: Iterable[Candidate]) -> Candidate:
    """Pick the address ``method`` selects among ``found``; AutodetectError if none."""
    found = list(found)
    if method.kind == "can-reach":
        return _reaching(method.args[0], found)
    if method.kind == "interface":
        pick = [c for c in found if any(re.match(p, c.interface) for p in method.args)]
    elif method.kind == "skip-interface":
        pick = [c for c in found if not any(re.match(p, c.interface) for p in method.args)]
    elif method.kind == "cidr":
        nets = [ipaddress.IPv4Network(a, strict=False) for a in method.args]
        pick = [c for c in found if any(c.address.ip in n for n in nets)]
    else:
        pick = [c for c in found if not any(re.match(p, c.interface) for p in FIRST_FOUND_EXCLUDES)]
    if not pick:
        seen = ", ".join(f"{c.interface} {c.address}" for c in found) or "none"
        raise AutodetectError(f"no IPv4 address matches {_spell(method)} (addresses here: {seen})")
    return pick[0]


def _reaching(dest: str, found: list[Candidate]) -> Candidate:
    # The kernel's own source choice for a UDP "connection" sends nothing.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((socket.gethostbyname(dest), 9))
        except OSError as exc:
            raise AutodetectError(f"can-reach={dest}: {exc.strerror or exc}") from None
        source = ipaddress.IPv4Address(s.getsockname()[0])
    for c in found:
        if c.address.ip == source:
            return c
    raise AutodetectError(f"can-reach={dest}: source {source} is on no up interface")


def _spell(method: Method) -> str:
    return method.kind + ("=" + ",".join(method.args) if method.args else "")


def detect(method_text: str) -> Candidate:
    return choose(parse_method(method_text), candidates())
