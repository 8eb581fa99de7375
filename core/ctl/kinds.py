"""The kinds calicoctl manages: the names it accepts on the command line and the columns
of its ``ps``/``wide`` tables (``calicoctl/calicoctl/resourcemgr/*.go`` in Calico).

Column values are rendered the way Calico's Go templates render the typed fields: an
unset string is empty, an unset ``bool`` is ``false``, an unset pointer is ``<nil>``
and numbers print as Go's ``%v`` does (``1e+06`` for a tier order of a million).
This module imports nothing heavy: argument errors need no resource types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

Config = Callable[[str], str]  # Calico's template function ``config "asnumber"``
Column = Callable[[dict, Config], str]


@dataclass(frozen=True)
class CtlKind:
    kind: str
    names: tuple[str, ...]  # lower case, as typed after ``calicoctl get``
    namespaced: bool
    headings: tuple[str, ...]  # -o ps
    wide: tuple[str, ...]  # -o wide
    columns: Mapping[str, Column] = field(repr=False)


# --- rendering typed values as Go templates print them ---------------------------------


def _get(doc: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def go_float(value: float) -> str:
    """``fmt.Sprint(float64)``: shortest digits, exponent form from 1e+06 or below 1e-04."""
    value = float(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digits, exp = Decimal(repr(abs(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    nd = len(text)
    dp = nd + exp  # where the decimal point falls in ``text``
    neg = "-" if value < 0 else ""
    x = dp - 1
    if x < -4 or x >= 6:
        mantissa = text[0] + ("." + text[1:] if nd > 1 else "")
        return f"{neg}{mantissa}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{text}"
    if dp >= nd:
        return f"{neg}{text}{'0' * (dp - nd)}"
    return f"{neg}{text[:dp]}.{text[dp:]}"


def go_value(value: Any) -> str:
    """``fmt.Sprint`` of a JSON value (None as Go's empty string)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, dict):
        return join(value)
    if isinstance(value, list):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    return str(value)


def as_number(value: Any) -> str:
    """An AS number as Calico prints it: dotted ``1.10`` is 65546."""
    if isinstance(value, str) and "." in value:
        high, _, low = value.partition(".")
        if high.isdigit() and low.isdigit():
            return str(int(high) * 65536 + int(low))
    return go_value(value)


def join(items: Any, sep: str = ",", limit: int = 0) -> str:
    """Calico's ``join``/``joinAndTruncate``: maps become sorted ``k=v``; longer than
    ``limit`` is cut to ``limit`` characters ending in ``...``."""
    if items is None:
        return ""
    if isinstance(items, dict):
        items = sorted(f"{k}={go_value(v)}" for k, v in items.items())
    elif not isinstance(items, list):
        items = [items]
    text = sep.join(go_value(i) for i in items)
    if limit and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _string(*path: str) -> Column:
    return lambda doc, cfg: go_value(_get(doc, *path))


def _bool(*path: str) -> Column:
    return lambda doc, cfg: "true" if _get(doc, *path) else "false"


def _pointer(*path: str) -> Column:
    def render(doc: dict, cfg: Config) -> str:
        value = _get(doc, *path)
        return "<nil>" if value is None else go_value(value)

    return render


def _float_pointer(*path: str) -> Column:
    def render(doc: dict, cfg: Config) -> str:
        value = _get(doc, *path)
        return "<nil>" if value is None else go_float(value)

    return render


def _int(*path: str) -> Column:
    return lambda doc, cfg: go_value(_get(doc, *path) or 0)


def _join(*path: str, limit: int = 0) -> Column:
    return lambda doc, cfg: join(_get(doc, *path), ",", limit)


def _or(value: str, *path: str) -> Column:
    """``{{if .X}}{{.X}}{{else}}value{{end}}``"""

    def render(doc: dict, cfg: Config) -> str:
        found = _get(doc, *path)
        return value if found is None or found == "" else go_value(found)

    return render


NAME = _string("metadata", "name")
NAMESPACE = _string("metadata", "namespace")


def _node_asn(doc: dict, cfg: Config) -> str:
    bgp = _get(doc, "spec", "bgp")
    if not bgp:
        return ""
    asn = bgp.get("asNumber")
    return as_number(asn) if asn is not None else f"({cfg('asnumber')})"


def _peer_node(doc: dict, cfg: Config) -> str:
    node = _get(doc, "spec", "node") or ""
    if node:
        return node
    return _get(doc, "spec", "nodeSelector") or "(global)"


def _peer_asn(doc: dict, cfg: Config) -> str:
    asn = _get(doc, "spec", "asNumber")
    return as_number(asn) if asn is not None else "0"


def _config_asn(doc: dict, cfg: Config) -> str:
    asn = _get(doc, "spec", "asNumber")
    return "-" if asn is None else as_number(asn)


def _mesh(doc: dict, cfg: Config) -> str:
    mesh = _get(doc, "spec", "nodeToNodeMeshEnabled")
    return "-" if mesh is None else go_value(bool(mesh))


def _nats(doc: dict, cfg: Config) -> str:
    nats = _get(doc, "spec", "ipNATs") or []
    return ",".join("{%s %s}" % (n.get("internalIP", ""), n.get("externalIP", "")) for n in nats)


def _workload(doc: dict, cfg: Config) -> str:
    return go_value(_get(doc, "spec", "workload") or _get(doc, "spec", "pod"))


def _kind(
    kind: str,
    names: tuple[str, ...],
    headings: tuple[str, ...],
    wide: tuple[str, ...],
    columns: dict[str, Column],
    namespaced: bool = False,
) -> CtlKind:
    return CtlKind(kind, names, namespaced, headings, wide, {"NAME": NAME, **columns})


KINDS: tuple[CtlKind, ...] = (
    _kind(
        "BGPConfiguration",
        ("bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"),
        ("NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"),
        ("NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"),
        {"LOGSEVERITY": _string("spec", "logSeverityScreen"), "MESHENABLED": _mesh, "ASNUMBER": _config_asn},
    ),
    _kind(
        "BGPPeer",
        ("bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"),
        ("NAME", "PEERIP", "NODE", "ASN"),
        ("NAME", "PEERIP", "NODE", "ASN"),
        {"PEERIP": _string("spec", "peerIP"), "NODE": _peer_node, "ASN": _peer_asn},
    ),
    _kind(
        "CalicoNodeStatus",
        ("caliconodestatus", "caliconodestatuses", "nodestatus", "nodestatuses"),
        ("NAME", "NODE"),
        ("NAME", "NODE", "CLASSES"),
        {"NODE": _string("spec", "node"), "CLASSES": _join("spec", "classes")},
    ),
    _kind(
        "ClusterInformation",
        ("clusterinformation", "clusterinformations", "clusterinfo", "clusterinfos"),
        ("NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"),
        ("NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"),
        {
            "CLUSTERGUID": _string("spec", "clusterGUID"),
            "CLUSTERTYPE": _string("spec", "clusterType"),
            "CALICOVERSION": _string("spec", "calicoVersion"),
            "DATASTOREREADY": _pointer("spec", "datastoreReady"),
        },
    ),
    _kind(
        "FelixConfiguration",
        ("felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs"),
        ("NAME",),
        ("NAME",),
        {},
    ),
    _kind(
        "GlobalNetworkPolicy",
        ("globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps"),
        ("NAME",),
        ("NAME", "ORDER", "SELECTOR"),
        {"ORDER": _float_pointer("spec", "order"), "SELECTOR": _string("spec", "selector")},
    ),
    _kind(
        "GlobalNetworkSet",
        ("globalnetworkset", "globalnetworksets", "gnetsets"),
        ("NAME",),
        ("NAME", "NETS"),
        {"NETS": _join("spec", "nets", limit=80)},
    ),
    _kind(
        "HostEndpoint",
        ("hostendpoint", "hostendpoints", "hep", "heps"),
        ("NAME", "NODE"),
        ("NAME", "NODE", "INTERFACE", "IPS", "PROFILES"),
        {
            "NODE": _string("spec", "node"),
            "INTERFACE": _string("spec", "interfaceName"),
            "IPS": _join("spec", "expectedIPs"),
            "PROFILES": _join("spec", "profiles"),
        },
    ),
    _kind(
        "IPAMConfiguration",
        ("ipamconfiguration", "ipamconfigurations", "ipamconfig", "ipamconfigs"),
        ("NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS"),
        ("NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS", "MAXBLOCKSPERHOST"),
        {
            "STRICTAFFINITY": _bool("spec", "strictAffinity"),
            "AUTOALLOCATEBLOCKS": _bool("spec", "autoAllocateBlocks"),
            "MAXBLOCKSPERHOST": _int("spec", "maxBlocksPerHost"),
        },
    ),
    _kind(
        "IPPool",
        ("ippool", "ippools", "ipp", "ipps", "pool", "pools"),
        ("NAME", "CIDR", "SELECTOR"),
        ("NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR"),
        {
            "CIDR": _string("spec", "cidr"),
            "NAT": _bool("spec", "natOutgoing"),
            "IPIPMODE": _or("Never", "spec", "ipipMode"),
            "VXLANMODE": _or("Never", "spec", "vxlanMode"),
            "DISABLED": _bool("spec", "disabled"),
            "DISABLEBGPEXPORT": _bool("spec", "disableBGPExport"),
            "SELECTOR": _string("spec", "nodeSelector"),
        },
    ),
    _kind(
        "IPReservation",
        ("ipreservation", "ipreservations", "reservation", "reservations"),
        ("NAME",),
        ("NAME", "CIDRS"),
        {"CIDRS": _join("spec", "reservedCIDRs", limit=80)},
    ),
    _kind(
        "KubeControllersConfiguration",
        (
            "kubecontrollersconfiguration",
            "kubecontrollersconfigurations",
            "kubecontrollersconfig",
            "kubecontrollersconfigs",
        ),
        ("NAME",),
        ("NAME",),
        {},
    ),
    _kind(
        "NetworkPolicy",
        ("networkpolicy", "networkpolicies", "policy", "np", "policies", "pol", "pols"),
        ("NAME", "TIER"),
        ("NAME", "TIER", "ORDER", "SELECTOR"),
        {
            "NAMESPACE": NAMESPACE,
            "ORDER": _float_pointer("spec", "order"),
            "SELECTOR": _string("spec", "selector"),
            "TIER": _string("spec", "tier"),
        },
        namespaced=True,
    ),
    _kind(
        "NetworkSet",
        ("networkset", "networksets", "netsets"),
        ("NAME",),
        ("NAME", "NETS"),
        {"NAMESPACE": NAMESPACE, "NETS": _join("spec", "nets", limit=80)},
        namespaced=True,
    ),
    _kind(
        "Node",
        ("node", "nodes", "no", "nos"),
        ("NAME",),
        ("NAME", "ASN", "IPV4", "IPV6"),
        {
            "ASN": _node_asn,
            "IPV4": _string("spec", "bgp", "ipv4Address"),
            "IPV6": _string("spec", "bgp", "ipv6Address"),
        },
    ),
    _kind(
        "Profile",
        ("profile", "profiles", "pro", "pros"),
        ("NAME",),
        ("NAME", "LABELS"),
        {"LABELS": _join("spec", "labelsToApply")},
    ),
    _kind(
        "Tier",
        ("tier", "tiers"),
        ("NAME", "ORDER"),
        ("NAME", "ORDER"),
        {"ORDER": _float_pointer("spec", "order")},
    ),
    _kind(
        "WorkloadEndpoint",
        ("workloadendpoint", "workloadendpoints", "wep", "weps"),
        ("WORKLOAD", "NODE", "NETWORKS", "INTERFACE"),
        ("NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"),
        {
            "NAMESPACE": NAMESPACE,
            "NODE": _string("spec", "node"),
            "ORCHESTRATOR": _string("spec", "orchestrator"),
            "WORKLOAD": _workload,
            "NETWORKS": _join("spec", "ipNetworks"),
            "NATS": _nats,
            "PROFILES": _join("spec", "profiles"),
            "INTERFACE": _string("spec", "interfaceName"),
        },
        namespaced=True,
    ),
)

BY_KIND: dict[str, CtlKind] = {k.kind: k for k in KINDS}
BY_NAME: dict[str, CtlKind] = {name: k for k in KINDS for name in k.names}


def lookup(name: str) -> CtlKind | None:
    """The kind a command-line name means (any case, singular, plural or short)."""
    return BY_NAME.get(name.lower())


def managed(kind: str) -> CtlKind | None:
    """The calicoctl entry of a canonical kind; None for kinds calicoctl does not manage
    (the IPAM internals IPAMBlock, BlockAffinity, IPAMHandle)."""
    return BY_KIND.get(kind)
