"""What the table ``inet calico`` holds, in one comparable shape for the kernel and the wish.

Both the rendered desired table and the table read back from the kernel (``nft -j list
table inet calico``) become a :class:`TableState`: per chain its base-chain hook (or none)
and the comments of its rules in order; per set its type, flags and elements; per map its
key type and elements. Rules are compared by their comments: every rule this plugin
writes carries ``comment "cali:<hash of the rule text>"`` (Felix's trick, so that reading
back never means parsing rules), and a rule without one (added by hand) is a difference.

Elements are canonical strings in nft syntax, the same whichever side they come from:
``10.0.0.1`` (a /32 or /128 is written as the bare address), ``10.1.0.0/16``,
``10.0.0.1 . 6 . 8080`` (address, protocol number, port), ``"cali1234" . 10.65.0.1``;
map elements are ``{key: verdict}`` (``"cali1234": "goto cali-fw-cali1234"``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

import attrs

# The base-chain hooks: (type, hook, priority number, policy).
BaseSpec = tuple[str, str, int, str]

# Protocol names nft may print in set elements; everything is kept as numbers.
PROTOCOL_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132, "udplite": 136}

ADDR_TYPES = {4: "ipv4_addr", 6: "ipv6_addr"}


@attrs.frozen
class ChainState:
    base: BaseSpec | None
    comments: tuple[str | None, ...]


@attrs.frozen
class SetState:
    type: tuple[str, ...]
    flags: frozenset[str]
    elements: frozenset[str]


@attrs.frozen(eq=True, hash=False)
class MapState:
    type: tuple[str, ...]  # key type(s), ":", value type
    elements: Mapping[str, str]  # canonical key -> verdict


@attrs.frozen
class Foreign:
    """An object in our table that this plugin never makes (flowtable, counter, ...)."""

    kind: str
    name: str


@attrs.frozen(eq=False)
class TableState:
    chains: Mapping[str, ChainState]
    sets: Mapping[str, SetState]
    maps: Mapping[str, MapState]
    foreign: tuple[Foreign, ...] = ()


# --- canonical elements -------------------------------------------------------------


def address(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """A network as nft prints it in an interval set: a host route is the bare address."""
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def collapse(nets: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[str]:
    """The fewest non-overlapping CIDRs covering ``nets`` (one IP version).

    nft interval sets refuse overlapping elements (``10.0.0.0/8`` and ``10.1.2.3``), which
    ipsets' ``hash:net`` allows; a selector may well match a network set and a pod inside it.
    """
    return [address(n) for n in ipaddress.collapse_addresses(nets)]


def quote(name: str) -> str:
    return '"' + name.replace('"', "") + '"'


def _json_value(value, kind: str) -> str:
    """One element component from nft's JSON, canonical for a component of type ``kind``."""
    if isinstance(value, dict):
        if "prefix" in value:
            p = value["prefix"]
            return address(ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False))
        if "range" in value:
            low, high = value["range"]
            return f"{_json_value(low, kind)}-{_json_value(high, kind)}"
        if "concat" in value:
            return " . ".join(str(v) for v in value["concat"])
        return repr(value)
    if kind == "ifname":
        return quote(str(value))
    if kind == "inet_proto":
        if isinstance(value, int):
            return str(value)
        return str(PROTOCOL_NUMBERS.get(str(value), value))
    if kind in ("ipv4_addr", "ipv6_addr") and isinstance(value, str):
        try:
            return address(ipaddress.ip_network(value))
        except ValueError:
            return value
    return str(value)


def json_element(elem, types: tuple[str, ...]) -> str:
    """A set element (or map key) from ``nft -j`` output, canonical."""
    if isinstance(elem, dict) and "elem" in elem:  # an element with a timeout, comment, ...
        elem = elem["elem"]["val"]
    if isinstance(elem, dict) and "concat" in elem and len(types) > 1:
        return " . ".join(_json_value(v, t) for v, t in zip(elem["concat"], types, strict=False))
    return _json_value(elem, types[0] if types else "")


def json_verdict(value) -> str:
    """A verdict map value from ``nft -j`` output: ``goto cali-fw-x``, ``drop``, ..."""
    if isinstance(value, dict):
        for verb in ("goto", "jump"):
            if verb in value:
                return f"{verb} {value[verb]['target']}"
        if len(value) == 1:
            return next(iter(value))
    return str(value)


def json_type(value) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    if isinstance(value, dict) and "typeof" in value:
        return ("typeof",)
    return (str(value),)


def parse_table(doc: dict, family: str, table: str) -> TableState:
    """The state of ``family table`` from the JSON of ``nft -j list table``."""
    chains: dict[str, ChainState] = {}
    sets: dict[str, SetState] = {}
    maps: dict[str, MapState] = {}
    foreign: list[Foreign] = []
    bases: dict[str, BaseSpec | None] = {}
    comments: dict[str, list] = {}
    for item in doc.get("nftables", ()):
        (kind, obj), = item.items()
        if kind == "metainfo" or not isinstance(obj, dict):
            continue
        if obj.get("family") != family or obj.get("table", obj.get("name") if kind == "table" else None) != table:
            continue
        if kind == "table":
            continue
        if kind == "chain":
            base = None
            if "hook" in obj:
                base = (obj.get("type", ""), obj["hook"], int(obj.get("prio", 0)), obj.get("policy", "accept"))
            bases[obj["name"]] = base
            comments.setdefault(obj["name"], [])
        elif kind == "rule":
            comments.setdefault(obj["chain"], []).append(obj.get("comment"))
        elif kind == "set":
            types = json_type(obj.get("type"))
            elems = frozenset(json_element(e, types) for e in obj.get("elem", ()))
            sets[obj["name"]] = SetState(types, frozenset(obj.get("flags", ())), elems)
        elif kind == "map":
            types = json_type(obj.get("type"))
            elements = {json_element(k, types): json_verdict(v) for k, v in obj.get("elem", ())}
            maps[obj["name"]] = MapState(types + (":", str(obj.get("map"))), elements)
        else:
            foreign.append(Foreign(kind, obj.get("name", "")))
    for name, base in bases.items():
        chains[name] = ChainState(base, tuple(comments.get(name, ())))
    return TableState(chains, sets, maps, tuple(foreign))
