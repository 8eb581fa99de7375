"""Value types shared by the resources, and the tests that check their values.

Calico's ``numorstring`` types keep what the user wrote: a port is a number, a
``"min:max"`` range or a name; a protocol is a name or a number; an AS number is a
number or the dotted ``"a.b"`` form. They are stored as the raw ``int`` or ``str`` so
that a manifest dumps back unchanged; the helpers below interpret them.

Every ``check_*`` function raises ``ValueError`` with the reason; wrap it with
:func:`pycalico.core.schema.validated` (one value) or :func:`.base.each` (list items).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Any, NewType

import cattrs

# --- value types (registered on the converter by ``register_hooks``) ------------------

Port = NewType("Port", object)  # int | str: 80, "8000:8080", "http"
Protocol = NewType("Protocol", object)  # int | str: "TCP", 6
ASNumber = NewType("ASNumber", object)  # int | str: 64512, "1.10"
Duration = NewType("Duration", str)  # Go duration: "90s", "1m30s", "250ms"
IntOrStr = NewType("IntOrStr", object)  # DSCP: 46 or "EF"


def _describe(value: Any) -> str:
    names = {dict: "a table", list: "a list", bool: "a boolean", str: "a string", int: "an integer"}
    return f"{names.get(type(value), type(value).__name__)} {value!r}"


def _int_or_str(what: str):
    def structure(value: Any, _type: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError(f"expected {what}, got {_describe(value)}")
        return value

    return structure


def _duration(value: Any, _type: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a duration string such as '90s', got {_describe(value)}")
    return value


def register_hooks(conv: cattrs.Converter) -> None:
    conv.register_structure_hook(Port, _int_or_str("a port number, 'min:max' range or port name"))
    conv.register_structure_hook(Protocol, _int_or_str("a protocol name or number"))
    conv.register_structure_hook(ASNumber, _int_or_str("an AS number"))
    conv.register_structure_hook(IntOrStr, _int_or_str("a number or a name"))
    conv.register_structure_hook(Duration, _duration)
    for t in (Port, Protocol, ASNumber, IntOrStr, Duration):
        conv.register_unstructure_hook(t, lambda v: v)


# --- ports ----------------------------------------------------------------------------

_PORT_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
_PORT_RANGE = re.compile(r"(\d+):(\d+)")


def _port_number(text: str | int, what: str = "port number") -> int:
    number = int(text)
    if not 1 <= number <= 65535:
        raise ValueError(f"{what} must be between 1 and 65535, got {number}")
    return number


def parse_port(value: int | str) -> tuple[int, int] | str:
    """``(min, max)`` for a number or range, the name for a named port."""
    if isinstance(value, int):
        n = _port_number(value)
        return n, n
    if value.isdigit():
        n = _port_number(value)
        return n, n
    m = _PORT_RANGE.fullmatch(value)
    if m:
        low, high = _port_number(m[1], "minimum port"), _port_number(m[2], "maximum port")
        if low > high:
            raise ValueError(f"port range {value!r}: minimum {low} is greater than maximum {high}")
        return low, high
    if not _PORT_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a port number, 'min:max' range or valid port name")
    return value


def check_port(value: Any) -> None:
    parse_port(value)


def is_named_port(value: int | str) -> bool:
    return isinstance(value, str) and not value.isdigit() and _PORT_RANGE.fullmatch(value) is None


_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def check_port_name(value: str) -> None:
    """Kubernetes IANA_SVC_NAME: as used for endpoint port names."""
    if not (1 <= len(value) <= 15) or not _SVC_NAME.fullmatch(value) or "--" in value:
        raise ValueError(
            f"{value!r} is not a valid port name (1-15 lower case letters, digits and '-', "
            "starting and ending with a letter or digit, no '--')"
        )
    if not re.search("[a-z]", value):
        raise ValueError(f"{value!r} is not a valid port name (must contain a letter)")


# --- protocols ------------------------------------------------------------------------

PROTOCOL_NAMES = ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")
_PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}


def check_protocol(value: Any) -> None:
    number = protocol_number(value)
    if number is None and value not in PROTOCOL_NAMES:
        raise ValueError(f"protocol name {value!r} is invalid; use one of {', '.join(PROTOCOL_NAMES)} or 1-255")
    if number is not None and not 1 <= number <= 255:
        raise ValueError(f"protocol number must be between 1 and 255, got {number}")


def protocol_number(value: int | str) -> int | None:
    """The number of a numeric protocol (6 or "6"), None for a name."""
    if isinstance(value, int):
        return value
    return int(value) if value.isdigit() else None


def protocol_is(value: int | str | None, name: str) -> bool:
    """Whether ``value`` means protocol ``name`` (by name or by number)."""
    if value is None:
        return False
    number = protocol_number(value)
    return value == name if number is None else number == _PROTOCOL_NUMBERS[name]


def supports_ports(value: int | str | None) -> bool:
    """TCP, UDP and SCTP (6, 17, 132) have ports."""
    return any(protocol_is(value, name) for name in ("TCP", "UDP", "SCTP"))


# --- AS numbers -----------------------------------------------------------------------


def as_number_value(value: int | str) -> int:
    """The numeric AS number: 64512, "64512" or the dotted "1.10" (= 65546)."""
    if isinstance(value, int):
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"AS number must be between 0 and 4294967295, got {value}")
        return value
    if value.isdigit():
        return as_number_value(int(value))
    high, dot, low = value.partition(".")
    if dot and high.isdigit() and low.isdigit() and int(high) <= 0xFFFF and int(low) <= 0xFFFF:
        return (int(high) << 16) + int(low)
    raise ValueError(f"invalid AS number {value!r}: use 0-4294967295 or the dotted form 'a.b' (each 0-65535)")


def check_as_number(value: Any) -> None:
    as_number_value(value)


# --- durations ------------------------------------------------------------------------

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def duration_seconds(value: str) -> float:
    """Seconds of a Go duration string ("90s", "1m30s", "1.5h", "0")."""
    text = value
    sign = 1.0
    if text[:1] in "+-" and text:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if not m:
            break
        total += float(m[1]) * _DURATION_UNITS[m[2]]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"{value!r} is not a duration (use a number and unit, e.g. '90s', '1m30s', '250ms')")
    return sign * total


def check_duration(value: Any) -> None:
    duration_seconds(value)


# --- addresses ------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(value, str) or "%" in value:
        raise ValueError(f"{value!r} is not a valid IP address")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid IP address") from None


def parse_cidr(value: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, Network]:
    """An address or CIDR as Calico's ParseCIDROrIP reads it: (address, its network).

    A bare address is a /32 or /128. The network is masked, the address is not.
    """
    text = value if isinstance(value, str) else ""
    addr_text, slash, prefix = text.partition("/")
    if slash and not (prefix.isdigit() and len(prefix) <= 3):
        raise ValueError(f"{value!r} is not a valid CIDR")
    try:
        addr = parse_ip(addr_text)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid IP address or CIDR") from None
    length = int(prefix) if slash else addr.max_prefixlen
    if length > addr.max_prefixlen:
        raise ValueError(f"{value!r} is not a valid CIDR: prefix length {length} is too long for IPv{addr.version}")
    return addr, ipaddress.ip_network(f"{addr}/{length}", strict=False)


def network(value: str) -> Network:
    """The (masked) network of an address or CIDR string."""
    return parse_cidr(value)[1]


def check_cidr(value: Any) -> None:
    """An address or CIDR; host bits may be set (Calico's ``cidr``)."""
    parse_cidr(value)


def check_net(value: Any) -> None:
    """An address or strictly masked CIDR (Calico's ``net``)."""
    addr, net = parse_cidr(value)
    if addr != net.network_address:
        raise ValueError(f"{value!r} is not strictly masked (the network is {net})")


def check_cidr_v4(value: Any) -> None:
    if parse_cidr(value)[0].version != 4:
        raise ValueError(f"{value!r} is not an IPv4 address or CIDR")


def check_cidr_v6(value: Any) -> None:
    if parse_cidr(value)[0].version != 6:
        raise ValueError(f"{value!r} is not an IPv6 address or CIDR")


def check_ip(value: Any) -> None:
    parse_ip(value)


def check_ipv4(value: Any) -> None:
    if parse_ip(value).version != 4:
        raise ValueError(f"{value!r} is not an IPv4 address")


def check_ipv6(value: Any) -> None:
    if parse_ip(value).version != 6:
        raise ValueError(f"{value!r} is not an IPv6 address")


_MAC = re.compile(
    r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}"
    r"|[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}"
)


def check_mac(value: Any) -> None:
    if not _MAC.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid MAC address")


def split_ip_port(value: str) -> tuple[str, int | None]:
    """A BGP peer address: "<IP>", "<IPv4>:<port>" or "[<IPv6>]:<port>"."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|(\d+\.\d+\.\d+\.\d+):(\d+)", value)
    if m:
        ip, port = (m[1], m[2]) if m[1] else (m[3], m[4])
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"{value!r}: port must be between 1 and 65535")
        parse_ip(ip)
        return ip, int(port)
    try:
        parse_ip(value)
    except ValueError:
        raise ValueError(f"{value!r} is not '<IP>', '<IPv4>:<port>' or '[<IPv6>]:<port>'") from None
    return value, None


def check_ip_port(value: Any) -> None:
    split_ip_port(value)


# --- names and labels -----------------------------------------------------------------

LABEL_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
SUBDOMAIN_FMT = LABEL_FMT + r"(\." + LABEL_FMT + r")*"
_NAME = re.compile(SUBDOMAIN_FMT)
_DNS_LABEL = re.compile(LABEL_FMT)


def check_name(value: Any) -> None:
    """Calico's ``name``: a DNS-1123 subdomain (lower case, digits, '-', '.'), ≤253."""
    if len(value) > 253:
        raise ValueError(f"name is too long by {len(value) - 253} characters (at most 253)")
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lower case alphanumeric characters, '-' or '.', "
            "starting and ending with an alphanumeric character"
        )


def check_dns_label(value: Any) -> None:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid DNS label: at most 63 lower case alphanumeric characters or '-', "
            "starting and ending with an alphanumeric character"
        )


_CONTAINER_ID = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?")


def check_container_id(value: Any) -> None:
    if not _CONTAINER_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid container ID (letters, digits and inner '-')")


_QUALIFIED = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def qualified_name_problem(value: str) -> str | None:
    """Why ``value`` is not a Kubernetes qualified name (``[prefix/]name``), or None."""
    prefix, slash, name = value.rpartition("/")
    if slash:
        if not prefix:
            return f"{value!r}: the prefix before '/' must not be empty"
        if len(prefix) > 253 or not _NAME.fullmatch(prefix):
            return f"{value!r}: prefix {prefix!r} must be a DNS subdomain (lower case, digits, '-', '.')"
    if not name:
        return f"{value!r}: the name part must not be empty"
    if len(name) > 63:
        return f"{value!r}: the name part must be at most 63 characters"
    if not _QUALIFIED.fullmatch(name):
        return (
            f"{value!r}: the name part must consist of alphanumeric characters, '-', '_' or '.', "
            "starting and ending with an alphanumeric character"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if value == "":
        return None
    if len(value) > 63:
        return f"label value {value!r} must be at most 63 characters"
    if not _QUALIFIED.fullmatch(value):
        return (
            f"label value {value!r} must be empty or consist of alphanumeric characters, '-', '_' or '.', "
            "starting and ending with an alphanumeric character"
        )
    return None


def label_problems(labels: dict) -> list[tuple[str, str]]:
    """Kubernetes label rules for every key and value, at ``<key>``."""
    found = []
    for k, v in labels.items():
        for problem in (qualified_name_problem(k), label_value_problem(v)):
            if problem:
                found.append((k, problem))
    return found


ANNOTATIONS_LIMIT = 256 * 1024


def annotation_problems(annotations: dict) -> list[tuple[str, str]]:
    found = []
    total = 0
    for k, v in annotations.items():
        problem = qualified_name_problem(k.lower())
        if problem:
            found.append((k, problem))
        total += len(k) + len(v)
    if total > ANNOTATIONS_LIMIT:
        found.append(("", f"total size of annotations is too large by {total - ANNOTATIONS_LIMIT} bytes"))
    return found


# --- interfaces, selectors, regexps, keys ---------------------------------------------

_INTERFACE = re.compile(r"[a-zA-Z0-9_.-]{1,15}")
_IFACE_FILTER = re.compile(r"[a-zA-Z0-9:._+-]{1,15}")
_IGNORED_IFACE = re.compile(r"[a-zA-Z0-9_.*-]{1,15}")


def check_interface(value: Any) -> None:
    """A Linux interface name (1-15 of [a-zA-Z0-9_.-]) or "*"."""
    if value != "*" and not _INTERFACE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid interface name (1-15 letters, digits, '_', '.', '-')")


def check_iface_filter(value: Any) -> None:
    if not _IFACE_FILTER.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid interface match (1-15 letters, digits, ':', '.', '_', '+', '-')")


def check_ignored_interface(value: Any) -> None:
    if value == "*" or not _IGNORED_IFACE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid interface pattern (1-15 letters, digits, '_', '.', '*', '-')")


def check_selector(value: Any) -> None:
    """Calico selector syntax (parsed by :mod:`pycalico.core.selector`)."""
    from pycalico.core.selector import parse  # imported late: written alongside this module

    parse(value)


def check_regexp(value: Any) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None


_KEY_VALUE = re.compile(r"\s*\w+=.*")


def check_key_value_list(value: Any) -> None:
    """A comma separated ``key=value`` list (Felix featureGates, featureDetectOverride)."""
    for item in value.split(","):
        if item and not _KEY_VALUE.fullmatch(item):
            raise ValueError(f"{item!r} is not a key=value pair")


def check_wireguard_key(value: Any) -> None:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{value!r} is not a valid WireGuard public key (base64 of 32 bytes)")


def check_one_of(*choices: str):
    """A plain test (for ``each``) that ``value`` is one of ``choices``."""

    def test(value: Any) -> None:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")

    return test
