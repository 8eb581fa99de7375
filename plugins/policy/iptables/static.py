"""The chains that do not depend on policy, and the hooks into the kernel's chains
(``felix/rules/static.go``, ``nat.go``; the hooks as ``felix/dataplane/linux/int_dataplane.go``
sets them up).

Hooks: one rule at the top of each kernel chain we use (ChainInsertMode ``insert``; at
the end with ``append``) jumps to our chain of the same name: filter INPUT, FORWARD,
OUTPUT; raw PREROUTING, OUTPUT; mangle PREROUTING, POSTROUTING; nat PREROUTING,
POSTROUTING, OUTPUT. FORWARD also gets two rules at its end: ACCEPT what policy accepted,
and set the accept bit on the rest (so that mangle POSTROUTING knows it was forwarded).

Anti-spoofing is Felix's: raw ``cali-PREROUTING`` marks packets from workload interfaces
(scratch0) and drops those that fail a strict reverse-path check
(``-m rpfilter --invert --validmark``): a workload can only send from an address that is
routed back to its own interface (its /32 route). ``cali-rpf-skip`` first accepts the
prefixes a workload may spoof (``allowSpoofedSourcePrefixes`` with
``workloadSourceSpoofing: Any``). The per-interface ``rp_filter`` sysctl Felix also sets
is left to whoever creates the interface.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import attrs

from pycalico.core.policy import AntiSpoof, ProtoPort

from . import chains as c
from .chains import Chain, Rule

ICMPV6_ROUTER_TYPES = (130, 131, 132, 133, 135, 136)


@attrs.frozen
class StaticConfig:
    marks: c.Marks
    prefixes: tuple[str, ...]  # workload interface prefixes ("cali")
    deny: str  # action fragment
    endpoint_to_host: str  # action fragment
    failsafe_in: tuple[ProtoPort, ...]
    failsafe_out: tuple[ProtoPort, ...]
    insert_mode: str = "insert"


def _failsafe_rules(ports: Sequence[ProtoPort], version: int, *, source_ports: bool, net_is_source: bool) -> list[Rule]:
    rules = []
    flag = "--source-ports" if source_ports else "--destination-ports"
    for pp in ports:
        match = [f"-p {pp.protocol}", f"-m multiport {flag} {pp.port}"]
        if pp.net:
            net = ipaddress.ip_network(pp.net, strict=False)
            if net.version != version:
                continue
            match.append(f"--source {net}" if net_is_source else f"--destination {net}")
        rules.append(Rule(match, c.ACCEPT))
    return rules


def failsafe_chains(cfg: StaticConfig, version: int, table: str) -> list[Chain]:
    """``cali-failsafe-in`` / ``-out``; the raw table also accepts the replies."""
    raw = table == "raw"
    rules_in = _failsafe_rules(cfg.failsafe_in, version, source_ports=False, net_is_source=True)
    rules_out = _failsafe_rules(cfg.failsafe_out, version, source_ports=False, net_is_source=False)
    if raw:
        rules_in += _failsafe_rules(cfg.failsafe_out, version, source_ports=True, net_is_source=True)
        rules_out += _failsafe_rules(cfg.failsafe_in, version, source_ports=True, net_is_source=False)
    return [Chain(c.FAILSAFE_IN, rules_in), Chain(c.FAILSAFE_OUT, rules_out)]


def filter_chains(cfg: StaticConfig, version: int) -> list[Chain]:
    m = cfg.marks
    wl = [p + "+" for p in cfg.prefixes]
    forward = [
        Rule((), c.clear_mark(m.all & ~m.accept)),
        Rule((c.mark_clear(m.accept),), c.jump(c.FROM_HEP_FORWARD_DISPATCH)),
    ]
    for iface in wl:
        forward.append(Rule((f"--in-interface {iface}",), c.jump(c.FROM_WL_DISPATCH)))
        forward.append(Rule((f"--out-interface {iface}",), c.jump(c.TO_WL_DISPATCH)))
    forward += [Rule((), c.jump(c.TO_HEP_FORWARD_DISPATCH)), Rule((), c.jump(c.CIDR_BLOCK))]

    inp = [Rule((f"--in-interface {iface}",), c.goto(c.WL_TO_HOST)) for iface in wl]
    inp += [
        Rule((c.mark_set(m.accept),), c.ACCEPT),
        Rule((), c.clear_mark(m.all)),
        Rule((), c.jump(c.FROM_HOST_DISPATCH)),
        Rule((c.mark_set(m.accept),), c.ACCEPT, ("Host endpoint policy accepted packet.",)),
    ]

    to_host: list[Rule] = []
    if version == 6:
        to_host = [Rule(("-p 58", f"-m icmp6 --icmpv6-type {t}"), c.ACCEPT) for t in ICMPV6_ROUTER_TYPES]
    to_host += [
        Rule((), c.jump(c.FROM_WL_DISPATCH)),
        Rule((), cfg.endpoint_to_host, ("Configured DefaultEndpointToHostAction",)),
    ]

    out = [Rule((c.mark_set(m.accept),), c.ACCEPT)]
    out += [Rule((f"--out-interface {iface}",), c.RETURN) for iface in wl]
    out += [
        Rule((), c.clear_mark(m.all)),
        Rule(("-m conntrack ! --ctstate DNAT",), c.jump(c.TO_HOST_DISPATCH)),
        Rule((c.mark_set(m.accept),), c.ACCEPT, ("Host endpoint policy accepted packet.",)),
    ]
    return [
        Chain(c.FILTER_FORWARD, forward),
        Chain(c.FILTER_INPUT, inp),
        Chain(c.WL_TO_HOST, to_host),
        Chain(c.FILTER_OUTPUT, out),
        Chain(c.CIDR_BLOCK),
        *failsafe_chains(cfg, version, "filter"),
    ]


def raw_chains(cfg: StaticConfig, version: int, anti_spoof: Sequence[AntiSpoof]) -> list[Chain]:
    m = cfg.marks
    pre = [Rule((), c.clear_mark(m.all))]
    pre += [Rule((f"--in-interface {p}+",), c.set_mark(m.scratch0)) for p in cfg.prefixes]
    pre += [
        Rule((c.mark_set(m.scratch0),), c.jump(c.RPF_SKIP)),
        # REJECT is not allowed in the raw table: a failed RPF check always drops.
        Rule((c.mark_set(m.scratch0), "-m rpfilter --invert --validmark"), c.DROP),
        Rule((c.mark_clear(m.scratch0),), c.jump(c.FROM_HOST_DISPATCH)),
        Rule((c.mark_set(m.accept),), c.ACCEPT),
    ]
    skip = []
    for spoof in anti_spoof:
        if not spoof.interface:
            continue
        for prefix in spoof.allowed_prefixes:
            net = ipaddress.ip_network(prefix, strict=False)
            if net.version == version:
                skip.append(Rule((f"--in-interface {spoof.interface}", f"--source {net}"), c.ACCEPT))
    out = [
        Rule((), c.clear_mark(m.all)),
        Rule((), c.jump(c.TO_HOST_DISPATCH)),
        Rule((c.mark_set(m.accept),), c.ACCEPT),
    ]
    return [
        Chain(c.PREROUTING, pre),
        Chain(c.RPF_SKIP, skip),
        Chain(c.RAW_OUTPUT, out),
        *failsafe_chains(cfg, version, "raw"),
    ]


def mangle_chains(cfg: StaticConfig, version: int) -> list[Chain]:
    m = cfg.marks
    pre = [
        Rule(("-m conntrack --ctstate RELATED,ESTABLISHED",), c.ACCEPT),
        Rule((c.mark_set(m.accept),), c.ACCEPT),
        Rule((), c.jump(c.FROM_HOST_DISPATCH)),
        Rule((c.mark_set(m.accept),), c.ACCEPT, ("Host endpoint policy accepted packet.",)),
    ]
    post = [
        Rule((c.mark_set(m.accept),), c.RETURN),
        Rule((), c.clear_mark(m.all)),
        Rule(("-m conntrack --ctstate DNAT",), c.jump(c.TO_HOST_DISPATCH)),
        Rule((c.mark_set(m.accept),), c.RETURN, ("Host endpoint policy accepted packet.",)),
    ]
    return [Chain(c.PREROUTING, pre), Chain(c.POSTROUTING, post), *failsafe_chains(cfg, version, "mangle")]


def nat_chains(masq_set: str | None, all_pools_set: str) -> list[Chain]:
    """``cali-nat-outgoing`` masquerades from natOutgoing pools to outside all pools."""
    outgoing = []
    if masq_set:
        match = (f"-m set --match-set {masq_set} src", f"-m set ! --match-set {all_pools_set} dst")
        outgoing.append(Rule(match, c.MASQUERADE))
    return [
        Chain(c.PREROUTING, [Rule((), c.jump(c.FIP_DNAT))]),
        Chain(c.POSTROUTING, [Rule((), c.jump(c.FIP_SNAT)), Rule((), c.jump(c.NAT_OUTGOING))]),
        Chain(c.NAT_OUTPUT, [Rule((), c.jump(c.FIP_DNAT))]),
        Chain(c.NAT_OUTGOING, outgoing),
        Chain(c.FIP_DNAT),
        Chain(c.FIP_SNAT),
    ]


HOOKS = {
    "filter": {"INPUT": c.FILTER_INPUT, "FORWARD": c.FILTER_FORWARD, "OUTPUT": c.FILTER_OUTPUT},
    "raw": {"PREROUTING": c.PREROUTING, "OUTPUT": c.RAW_OUTPUT},
    "mangle": {"PREROUTING": c.PREROUTING, "POSTROUTING": c.POSTROUTING},
    "nat": {"PREROUTING": c.PREROUTING, "POSTROUTING": c.POSTROUTING, "OUTPUT": c.NAT_OUTPUT},
}


def hooks(cfg: StaticConfig, table: str) -> tuple[dict[str, Chain], dict[str, Chain]]:
    """(rules at the top of each kernel chain, rules at its end), as seeded chains."""
    top: dict[str, list[Rule]] = {}
    end: dict[str, list[Rule]] = {}
    for kernel, ours in HOOKS[table].items():
        (top if cfg.insert_mode == "insert" else end).setdefault(kernel, []).append(Rule((), c.jump(ours)))
    if table == "filter":
        end.setdefault("FORWARD", []).extend(
            [
                Rule((c.mark_set(cfg.marks.accept),), c.ACCEPT, ("Policy explicitly accepted packet.",)),
                Rule((), c.set_mark(cfg.marks.accept)),
            ]
        )
    inserts = {k: Chain(k, rules, seed=f"{k} insert") for k, rules in top.items()}
    appends = {k: Chain(k, rules, seed=f"{k} append") for k, rules in end.items()}
    for kernel in c.KERNEL_CHAINS[table]:
        inserts.setdefault(kernel, Chain(kernel, (), seed=f"{kernel} insert"))
        appends.setdefault(kernel, Chain(kernel, (), seed=f"{kernel} append"))
    return inserts, appends
