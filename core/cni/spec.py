"""The CNI specification as this plugin speaks it: versions, error codes, results.

Results are kept in one internal shape (``Result``) and rendered in the version the
runtime asked for: 1.0.0/1.1.0, 0.3.0/0.3.1/0.4.0 (``ips[].version``), or the
0.1.0/0.2.0 ``ip4``/``ip6`` form. ``parse_result`` reads any of them back (a
``prevResult``, or what a delegated IPAM plugin printed).

Standard library only: the executable imports this module on its fast path.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

# Every version this plugin accepts in cniVersion. Calico accepts up to 1.0.0; 1.1.0 adds
# STATUS and GC (and interfaces[].mtu).
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"
DEFAULT_VERSION = "0.2.0"  # an empty cniVersion means 0.2.0 (libcni, Calico)

# Error codes of the specification (SPEC.md "Error"); 100 and up are the plugin's own.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETCONF = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50  # STATUS: the plugin cannot service ADD
LIMITED = 51  # STATUS: ADD unavailable, existing containers may be limited
CLI_FAILURE = 100  # Calico: bad flags, datastore test failed
GENERIC = 999  # what libcni's skel reports for a plain error (Calico's ADD/DEL failures)


class CniError(Exception):
    """An error the executable prints as CNI error JSON. ``msg`` says what went wrong
    and what to fix; ``details`` may carry the underlying cause."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_dict(self, version: str = CURRENT_VERSION) -> dict:
        out: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return self.msg + (f" ({self.details})" if self.details else "")


# --- versions ------------------------------------------------------------------------------


def version_tuple(text: str) -> tuple[int, int, int]:
    """``"0.3.1"`` -> (0, 3, 1); ValueError for anything that is not x.y.z."""
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not a version of the form x.y.z")
    return int(parts[0]), int(parts[1]), int(parts[2])


def check_version(text: Any) -> str:
    """The cniVersion to speak (an empty one is 0.2.0); INCOMPATIBLE_VERSION if this
    plugin does not speak it."""
    if text is None or text == "":
        return DEFAULT_VERSION
    if not isinstance(text, str):
        raise CniError(DECODE_FAILURE, f"cniVersion: must be a string such as \"1.0.0\", got {json.dumps(text)}")
    if text not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION,
                       f"cniVersion: incompatible CNI version {text!r}; this plugin supports "
                       f"{', '.join(SUPPORTED_VERSIONS)}")
    return text


def at_least(version: str, minimum: str) -> bool:
    return version_tuple(version) >= version_tuple(minimum)


def version_reply(version: str) -> dict:
    return {"cniVersion": version if version in SUPPORTED_VERSIONS else CURRENT_VERSION,
            "supportedVersions": list(SUPPORTED_VERSIONS)}


# --- results -------------------------------------------------------------------------------


@dataclass
class Interface:
    name: str
    mac: str = ""
    mtu: int = 0
    sandbox: str = ""


@dataclass
class IPConfig:
    address: str  # CIDR: address/prefix
    gateway: str = ""
    interface: int | None = None  # index into Result.interfaces

    @property
    def ip(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        return ipaddress.ip_interface(self.address)

    @property
    def version(self) -> int:
        return self.ip.version


@dataclass
class Route:
    dst: str
    gw: str = ""


@dataclass
class Result:
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: dict = field(default_factory=dict)


def _iface_dict(i: Interface, version: str) -> dict:
    out: dict[str, Any] = {"name": i.name}
    if i.mac:
        out["mac"] = i.mac
    if i.mtu and at_least(version, "1.1.0"):
        out["mtu"] = i.mtu
    if i.sandbox:
        out["sandbox"] = i.sandbox
    return out


def _route_dict(r: Route) -> dict:
    return {"dst": r.dst, **({"gw": r.gw} if r.gw else {})}


def render(result: Result, version: str) -> dict:
    """The result as the JSON object of ``version``."""
    if not at_least(version, "0.3.0"):
        return _render_legacy(result, version)
    ips = []
    for ip in result.ips:
        entry: dict[str, Any] = {}
        if not at_least(version, "1.0.0"):
            entry["version"] = str(ip.version)
        entry["address"] = ip.address
        if ip.gateway:
            entry["gateway"] = ip.gateway
        if ip.interface is not None:
            entry["interface"] = ip.interface
        ips.append(entry)
    out: dict[str, Any] = {"cniVersion": version}
    if result.interfaces:
        out["interfaces"] = [_iface_dict(i, version) for i in result.interfaces]
    out["ips"] = ips
    if result.routes:
        out["routes"] = [_route_dict(r) for r in result.routes]
    out["dns"] = dict(result.dns)
    return out


def _render_legacy(result: Result, version: str) -> dict:
    out: dict[str, Any] = {"cniVersion": version}
    for family in (4, 6):
        ip = next((i for i in result.ips if i.version == family), None)
        if ip is None:
            continue
        routes = [_route_dict(r) for r in result.routes if ipaddress.ip_network(r.dst).version == family]
        entry: dict[str, Any] = {"ip": ip.address}
        if ip.gateway:
            entry["gateway"] = ip.gateway
        if routes:
            entry["routes"] = routes
        out[f"ip{family}"] = entry
    out["dns"] = dict(result.dns)
    return out


def parse_result(data: Any, where: str = "result") -> Result:
    """A result of any version (prevResult, a delegate's output) in the internal shape.
    Raises CniError(DECODE_FAILURE) naming the bad field."""
    if not isinstance(data, dict):
        raise CniError(DECODE_FAILURE, f"{where}: must be a JSON object, got {json.dumps(data)[:80]}")
    result = Result(dns=data.get("dns") if isinstance(data.get("dns"), dict) else {})
    try:
        if "ip4" in data or "ip6" in data:  # 0.1.0 / 0.2.0
            for family in ("ip4", "ip6"):
                entry = data.get(family)
                if not entry:
                    continue
                ipaddress.ip_interface(entry["ip"])
                result.ips.append(IPConfig(entry["ip"], entry.get("gateway") or ""))
                result.routes += [Route(r["dst"], r.get("gw") or "") for r in entry.get("routes") or []]
            return result
        for n, i in enumerate(data.get("interfaces") or []):
            if not isinstance(i, dict) or not isinstance(i.get("name"), str):
                raise CniError(DECODE_FAILURE, f"{where}.interfaces[{n}]: must be an object with a name")
            result.interfaces.append(Interface(i["name"], i.get("mac") or "", int(i.get("mtu") or 0),
                                               i.get("sandbox") or ""))
        for n, ip in enumerate(data.get("ips") or []):
            try:
                ipaddress.ip_interface(ip["address"])
            except (KeyError, TypeError, ValueError):
                raise CniError(DECODE_FAILURE, f"{where}.ips[{n}].address: must be an address/prefix such as "
                                               f"10.0.0.5/32, got {json.dumps(ip)[:80]}") from None
            iface = ip.get("interface")
            result.ips.append(IPConfig(ip["address"], ip.get("gateway") or "",
                                       iface if isinstance(iface, int) else None))
        for n, r in enumerate(data.get("routes") or []):
            try:
                ipaddress.ip_network(r["dst"], strict=False)
            except (KeyError, TypeError, ValueError):
                raise CniError(DECODE_FAILURE, f"{where}.routes[{n}].dst: must be a CIDR, "
                                               f"got {json.dumps(r)[:80]}") from None
            result.routes.append(Route(r["dst"], r.get("gw") or ""))
    except CniError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CniError(DECODE_FAILURE, f"{where}: not a CNI result: {exc}") from None
    return result


def dumps(obj: dict) -> str:
    return json.dumps(obj, indent=4) + "\n"
