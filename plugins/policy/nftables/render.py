"""A compiled :class:`~pycalico.core.policy.PolicyModel` rendered as the table ``inet calico``.

The layout (``nft list table inet calico`` shows it):

* **Sets**, one per Calico set id and IP version, made only when not empty: plain
  ``type ipv4_addr`` for a selector whose members are all addresses (pods, host
  endpoints), ``flags interval`` once a member is a CIDR (network sets, pools; members
  collapsed, since interval sets refuse overlaps), ``ipv4_addr . inet_proto .
  inet_service`` for named ports; ``cali40wl-sources`` (``ifname . ipv4_addr``, interval)
  for anti-spoofing. A rule that needs a member of a set that is not there cannot match
  and is left out; "not in" a set that is not there is no condition.
* **Verdict maps** ``ifname : verdict`` for dispatch: each dispatch chain is
  ``iifname vmap @<its own name>``, whose elements ``goto`` the endpoint's chain, then its
  default (drop for an unknown workload interface; fall through for a host interface).
* **Policy chains** ``cali-pi-``/``cali-po-``, **profile chains** ``cali-pri-``/``cali-pro-``,
  **policy-group chains** ``cali-gi-``/``cali-go-`` (the policies of one tier that several
  endpoints share, jumped to from each of their chains) and **endpoint chains**
  ``cali-tw-``/``cali-fw-``/``cali-fh-``/``cali-th-`` with Felix's structure.
* **Base chains** at their hooks: ``raw-PREROUTING`` (priority raw: clear our mark bits,
  anti-spoofing, untracked host-endpoint policy), ``raw-OUTPUT``, ``mangle-PREROUTING``
  (priority mangle: pre-DNAT host-endpoint policy), ``filter-INPUT``/``-FORWARD``/``-OUTPUT``
  (priority filter), ``nat-POSTROUTING`` (type nat, priority srcnat: natOutgoing).

Verdicts use Felix's mark bits, because a policy chain is shared by every endpoint it
selects and so cannot know where to continue: Allow sets the accept bit (0x10000) and
returns, Pass sets the pass bit (0x20000) and returns, Deny drops (or rejects), Log logs and
goes on. The endpoint chain clears both bits, and per tier clears pass, jumps to each policy
while pass is clear and returns as soon as accept is set; at the end of a tier it drops
unless pass is set (or the tier's default action is Pass); then each profile, return if
accepted; then drop. ``accept`` is used only where the packet is done with this table
(conntrack, failsafe): in nftables an accept in one base chain does not stop another
table's, and every base chain's policy is accept, so "return to the base chain" and
"accept" both mean "Calico has no objection".

A rule whose conditions contain a list that must match any one of its values (``nets``,
``ports``, named ports) becomes one nft rule per combination: anonymous sets cost the
kernel a scan of every set of the table each (``nf_tables_set_alloc_name``), which at
thousands of policies dominates a full load. Log rules (which must log once), and rules
with more than :data:`MAX_SPLIT` combinations, use anonymous sets for numeric lists
instead (named ports stay separate rules). "None of" lists are AND-ed ``!=`` matches.

:mod:`.table` puts these pieces together into the whole table, pass after pass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

import attrs

from pycalico.core.policy import ids
from pycalico.core.policy.model import PolicyModel, ProtoPort
from pycalico.core.policy.resolve import EndpointPolicy
from pycalico.core.policy.rules import Rule, Side

from . import names
from .options import Options
from .state import ADDR_TYPES, PROTOCOL_NUMBERS, BaseSpec, ChainState, SetState, collapse, quote

# Felix's mark bits (IptablesMarkMask 0xffff0000, lowest bits first).
MARK_ACCEPT = 0x10000
MARK_PASS = 0x20000
MAX_SPLIT = 16


def _hex(value: int) -> str:
    return f"{value:#010x}"  # as nft prints marks


CLEAR_MARKS = f"meta mark set meta mark & {_hex(0xFFFFFFFF ^ (MARK_ACCEPT | MARK_PASS))}"
CLEAR_PASS = f"meta mark set meta mark & {_hex(0xFFFFFFFF ^ MARK_PASS)}"
IF_ACCEPTED = f"meta mark & {_hex(MARK_ACCEPT)} != 0"
IF_NOT_ACCEPTED = f"meta mark & {_hex(MARK_ACCEPT)} == 0"
IF_NOT_PASSED = f"meta mark & {_hex(MARK_PASS)} == 0"
ALLOW = f"meta mark set meta mark | {_hex(MARK_ACCEPT)} return"
PASS = f"meta mark set meta mark | {_hex(MARK_PASS)} return"
RETURN_IF_ACCEPTED = f"{IF_ACCEPTED} return"
CONNTRACK = ("ct state established,related accept", "ct state invalid drop")
IPIP = 4
ICMPV6_ROUTER_TYPES = "{ 130, 131, 132, 133, 135, 136 }"  # MLD, router and neighbour discovery

PRIORITY_NAMES = {-300: "raw", -150: "mangle", -100: "dstnat", 0: "filter", 100: "srcnat"}
BASE_CHAINS: dict[str, BaseSpec] = {
    "raw-PREROUTING": ("filter", "prerouting", -300, "accept"),
    "raw-OUTPUT": ("filter", "output", -300, "accept"),
    "mangle-PREROUTING": ("filter", "prerouting", -150, "accept"),
    "filter-INPUT": ("filter", "input", 0, "accept"),
    "filter-FORWARD": ("filter", "forward", 0, "accept"),
    "filter-OUTPUT": ("filter", "output", 0, "accept"),
    "nat-POSTROUTING": ("nat", "postrouting", 100, "accept"),
}


# --- settings -----------------------------------------------------------------------


@attrs.frozen(cache_hash=True)
class Effective:
    """What the chains depend on: calico.toml's ``[policy.nftables]`` over FelixConfiguration."""

    deny: str = "drop"  # drop | reject
    wl_to_host: str = "drop"  # drop | accept | return
    log_prefix: str = "calico-packet"
    failsafe_in: tuple[ProtoPort, ...] = ()
    failsafe_out: tuple[ProtoPort, ...] = ()
    prefixes: tuple[str, ...] = ("cali",)
    versions: tuple[int, ...] = (4, 6)
    vxlan_port: int = 4789
    allow_vxlan: bool = False
    allow_ipip: bool = False


def effective(model: PolicyModel, options: Options | None) -> Effective:
    options = options or Options()
    s = model.settings
    inbound, outbound = options.failsafe("inbound"), options.failsafe("outbound")
    return Effective(
        deny=options.deny_action or s.nftables_filter_deny_action.lower(),
        wl_to_host=options.endpoint_to_host_action or s.default_endpoint_to_host_action.lower(),
        # nft takes up to 127 characters of prefix; a quote would end the string early.
        log_prefix=(s.log_prefix if options.log_prefix is None else options.log_prefix).replace('"', "")[:127],
        failsafe_in=model.failsafe.inbound if inbound is None else inbound,
        failsafe_out=model.failsafe.outbound if outbound is None else outbound,
        prefixes=tuple(p.strip() for p in s.interface_prefix.split(",") if p.strip()),
        versions=(4, 6) if s.ipv6_support else (4,),
        vxlan_port=s.vxlan_port,
        allow_vxlan=s.allow_vxlan_packets_from_workloads,
        allow_ipip=s.allow_ipip_packets_from_workloads,
    )


# --- the rendered table -------------------------------------------------------------


@attrs.frozen
class Chain:
    name: str
    base: BaseSpec | None
    rules: tuple[str, ...]
    comments: tuple[str, ...]
    state: ChainState  # what reading it back gives (memoised chains keep the same object)


def comment_of(rule: str) -> str:
    return "cali:" + ids.content_hash(rule)


def make_chain(name: str, rules: Iterable[str], base: BaseSpec | None = None) -> Chain:
    rules = tuple(rules)
    comments = tuple(comment_of(r) for r in rules)
    return Chain(name, base, rules, comments, ChainState(base, comments))


# --- rules --------------------------------------------------------------------------


def _version(net: str) -> int:
    return 6 if ":" in net else 4


def _fam(version: int) -> str:
    return "ip" if version == 4 else "ip6"


def _ports(ranges) -> list[str]:
    return [str(r.first) if r.first == r.last else f"{r.first}-{r.last}" for r in ranges]


def _addr(net: str) -> str:
    return collapse([ipaddress.ip_network(net)])[0]


def _is_ip_port(set_id: str) -> bool:
    """A set of address + protocol + port members: named ports, and services with ports."""
    return set_id.startswith(("n:", "svc:"))


def _needs_family(side: Side) -> bool:
    return bool(
        side.nets
        or side.not_nets
        or side.ip_sets
        or side.not_ip_sets
        or side.named_port_sets
        or side.not_named_port_sets
    )


def rule_versions(rule: Rule, candidates: tuple[int, ...]) -> tuple[int, ...]:
    """The IP versions ``rule`` is rendered for (Felix's ``FilterRuleToIPVersion``)."""
    out = []
    for v in candidates:
        if rule.ip_version is not None and rule.ip_version != v:
            continue
        if (rule.protocol == 1 and v == 6) or (rule.protocol == 58 and v == 4):
            continue
        ok = True
        for side in (rule.source, rule.destination):
            for nets, negated in ((side.nets, False), (side.not_nets, True)):
                kept = [n for n in nets if _version(n) == v]
                if nets and not kept:
                    ok = False  # every CIDR is of the other version
                if negated and any(n in ("0.0.0.0/0", "::/0") for n in kept):
                    ok = False  # "not everything": Felix drops the rule
        if ok:
            out.append(v)
    return tuple(out)


def rule_set_names(rule: Rule, versions: tuple[int, ...]) -> tuple[str, ...]:
    """The nft sets ``rule`` may refer to."""
    return tuple(names.set_name(spec.id, v) for spec in rule.sets for v in versions)


class _SideParts:
    """One side of a rule for one IP version: fixed matches and the OR-ed alternatives.

    ``present`` holds the names of the sets the table has; a set that is not there is
    empty. An empty positive set makes the side impossible, an empty negative one is no
    condition at all, an empty named-port set is no alternative.
    """

    def __init__(self, side: Side, version: int | None, d: str, present) -> None:
        fam = _fam(version) if version else ""
        ipport = f"{fam} {d}addr . meta l4proto . th {d}port"
        self.fixed: list[str] = []
        self.impossible = False
        self.nets = [_addr(n) for n in side.nets if version and _version(n) == version]
        for n in side.not_nets:
            if version and _version(n) == version:
                self.fixed.append(f"{fam} {d}addr != {_addr(n)}")
        for negate, sids in (("", side.ip_sets), ("!= ", side.not_ip_sets)):
            for sid in sids:
                name = names.set_name(sid, version)
                if name not in present:
                    self.impossible |= not negate
                    continue
                lhs = ipport if _is_ip_port(sid) else f"{fam} {d}addr"
                self.fixed.append(f"{lhs} {negate}@{name}")
        for port in _ports(side.not_ports):
            self.fixed.append(f"th {d}port != {port}")
        for sid in side.not_named_port_sets:
            name = names.set_name(sid, version)
            if name in present:
                self.fixed.append(f"{ipport} != @{name}")
        self.fam, self.d = fam, d
        self.numeric = _ports(side.ports)
        named = [names.set_name(sid, version) for sid in side.named_port_sets]
        self.named = [f"{ipport} @{name}" for name in named if name in present]
        # Whether any match left names the address family (sets that are not there drop out).
        self.addressed = bool(self.nets or self.named or any(m.startswith(fam + " ") for m in self.fixed))
        if (self.numeric or named) and not (self.numeric or self.named):
            self.impossible = True  # only named ports, and no endpoint has them

    def addr_alts(self, merge: bool) -> list[str]:
        if not self.nets:
            return [""]
        if merge and len(self.nets) > 1:
            return [f"{self.fam} {self.d}addr {{ {', '.join(self.nets)} }}"]
        return [f"{self.fam} {self.d}addr {n}" for n in self.nets]

    def port_alts(self, merge: bool) -> list[str]:
        if merge and len(self.numeric) > 1:
            numeric = [f"th {self.d}port {{ {', '.join(self.numeric)} }}"]
        else:
            numeric = [f"th {self.d}port {p}" for p in self.numeric]
        return (numeric + self.named) or [""]


def _protocol_matches(rule: Rule) -> list[str]:
    parts = []
    if rule.protocol is not None:
        parts.append(f"meta l4proto {rule.protocol}")
    if rule.not_protocol is not None:
        parts.append(f"meta l4proto != {rule.not_protocol}")
    kw = "icmpv6" if rule.protocol == 58 else "icmp"
    if rule.icmp_type is not None:
        parts.append(f"{kw} type {rule.icmp_type}")
        if rule.icmp_code is not None:
            parts.append(f"{kw} code {rule.icmp_code}")
    if rule.not_icmp_type is not None:
        if rule.not_icmp_code is None:
            parts.append(f"{kw} type != {rule.not_icmp_type}")
        else:
            parts.append(f"{kw} type . {kw} code != {{ {rule.not_icmp_type} . {rule.not_icmp_code} }}")
    return parts


def action_text(action: str, deny: str, log_prefix: str) -> str:
    if action == "allow":
        return ALLOW
    if action == "pass":
        return PASS
    if action == "deny":
        return deny
    return f'log prefix "{log_prefix}" level info'


class _Everything:
    def __contains__(self, name: object) -> bool:
        return True


def render_rule(
    rule: Rule,
    versions: tuple[int, ...],
    *,
    deny: str = "drop",
    log_prefix: str = "calico-packet",
    present=_Everything(),
) -> list[str]:
    """The nft rules (matches + verdict) of one normalised rule; [] if it can never match.

    ``versions`` are the IP versions programmed; ``present`` the names of the non-empty
    sets (by default every set is taken to exist).
    """
    allowed = rule_versions(rule, versions)
    if not allowed:
        return []
    action = action_text(rule.action, deny, log_prefix)
    proto = _protocol_matches(rule)
    if _needs_family(rule.source) or _needs_family(rule.destination):
        per_version: list[tuple[int | None, list[str]]] = [(v, []) for v in allowed]
    else:
        prefix = [] if set(allowed) == set(versions) else [f"meta nfproto ipv{allowed[0]}"]
        per_version = [(None, prefix)]
    lines = []
    for version, head in per_version:
        src = _SideParts(rule.source, version, "s", present)
        dst = _SideParts(rule.destination, version, "d", present)
        if src.impossible or dst.impossible:
            continue
        merge = rule.action == "log"
        count = len(src.addr_alts(merge)) * len(src.port_alts(merge)) * len(dst.addr_alts(merge))
        if count * len(dst.port_alts(merge)) > MAX_SPLIT:
            merge = True
        if version is not None and not (src.addressed or dst.addressed) and set(allowed) != set(versions):
            head = [f"meta nfproto ipv{version}"]  # nothing left that implies the family
        fixed = head + proto + src.fixed + dst.fixed
        for sa in src.addr_alts(merge):
            for sp in src.port_alts(merge):
                for da in dst.addr_alts(merge):
                    for dp in dst.port_alts(merge):
                        lines.append(" ".join(p for p in (*fixed, sa, sp, da, dp, action) if p))
    return list(dict.fromkeys(lines))  # per-family copies that lost their addresses are one rule


# --- chains -------------------------------------------------------------------------


def policy_rules(rules: tuple[Rule, ...], eff: Effective, present=_Everything(), *, early: bool = False) -> list[str]:
    """A policy's or profile's rules for one direction. ``early``: an untracked or pre-DNAT
    policy, whose chains run at prerouting/output before filter, where reject is not
    valid: it always drops."""
    deny = "drop" if early else eff.deny
    out = []
    for rule in rules:
        out += render_rule(rule, eff.versions, deny=deny, log_prefix=eff.log_prefix, present=present)
    return out


def group_chain_name(direction: str, tier: str, policies: tuple[str, ...]) -> str:
    """Felix's policy-group chain (``cali-gi-``/``cali-go-``): the policies of one tier that
    a set of endpoints share, named by a hash of the sequence."""
    prefix = "cali-gi-" if direction == "ingress" else "cali-go-"
    return prefix + ids.content_hash((tier, policies))


def group_rules(direction: str, tier: str, policies: tuple[str, ...], *, untracked: bool = False) -> list[str]:
    """Jump to each policy while no policy passed; back to the endpoint chain once one accepted."""
    accepted = f"{IF_ACCEPTED} notrack return" if untracked else RETURN_IF_ACCEPTED
    rules = []
    for i, key in enumerate(policies):
        target = names.policy_chain(direction, tier, key)
        rules.append(f"jump {target}" if i == 0 else f"{IF_NOT_PASSED} jump {target}")
        rules.append(accepted)
    return rules


def endpoint_rules(chain: EndpointPolicy, *, workload: bool, eff: Effective) -> list[str]:
    """Felix's endpoint chain (``felix/rules/endpoints.go``) for one direction and kind.

    A tier with one policy jumps to it directly; a tier with more jumps to their shared
    group chain (:func:`group_chain_name`).
    """
    kind, direction = chain.kind, chain.direction
    deny = "drop" if kind in ("untracked", "pre-dnat") else eff.deny
    if kind == "forward" and not chain.tiers:
        return []  # no forward policy: leave forwarded traffic alone
    rules: list[str] = []
    if kind in ("normal", "forward"):
        rules += CONNTRACK
    rules.append(CLEAR_MARKS)
    if workload and direction == "egress":
        if not eff.allow_vxlan:
            rules.append(f"meta l4proto 17 th dport {eff.vxlan_port} drop")
        if not eff.allow_ipip:
            rules.append(f"meta l4proto {IPIP} drop")
    if not workload and kind != "forward":
        rules.append(f"jump {names.FAILSAFE_IN if direction == 'ingress' else names.FAILSAFE_OUT}")
    accepted = f"{IF_ACCEPTED} notrack return" if kind == "untracked" else RETURN_IF_ACCEPTED
    for tier in chain.tiers:
        rules.append(CLEAR_PASS)
        if len(tier.policies) == 1:
            rules.append(f"jump {names.policy_chain(direction, tier.name, tier.policies[0])}")
        else:
            rules.append(f"jump {group_chain_name(direction, tier.name, tier.policies)}")
        rules.append(accepted)
        if tier.default_action == "Deny":
            rules.append(f"{IF_NOT_PASSED} {deny}")
    if kind != "normal":
        return rules  # untracked, pre-DNAT and forward chains end by returning
    for name in chain.profiles:
        rules.append(f"jump {names.profile_chain(direction, name)}")
        rules.append(RETURN_IF_ACCEPTED)
    rules.append(deny)
    return rules


def _iface_guard(prefixes: tuple[str, ...], d: str) -> str:
    return " ".join(f'{d}ifname != "{p}*"' for p in prefixes)


def _dispatch(name: str, d: str, default: str | None) -> list[str]:
    rules = [f"{d}ifname vmap @{name}"]
    if default:
        rules.append(default)
    return rules


DISPATCH_MAPS = (
    (names.FROM_WL_DISPATCH, "i"),
    (names.TO_WL_DISPATCH, "o"),
    (names.FROM_HEP_DISPATCH, "i"),
    (names.TO_HEP_DISPATCH, "o"),
    (names.FROM_HEP_FORWARD, "i"),
    (names.TO_HEP_FORWARD, "o"),
    (names.RAW_FROM_HEP, "i"),
    (names.RAW_TO_HEP, "o"),
    (names.MANGLE_FROM_HEP, "i"),
)


def static_chains(eff: Effective, all_iface: Mapping[str, str], present=_Everything()) -> list[Chain]:
    """Base chains, dispatch chains, failsafe and NAT chains.

    ``all_iface`` maps dispatch chain names to the chain of a host endpoint with
    ``interfaceName: "*"``, which takes every non-workload interface without its own.
    """
    v6_off = ["meta nfproto ipv6 accept"] if 6 not in eff.versions else []
    wl_in = [f'iifname "{p}*"' for p in eff.prefixes]
    wl_out = [f'oifname "{p}*"' for p in eff.prefixes]
    chains = []
    antispoof = []
    for match in wl_in:
        for v in eff.versions:
            fam, name = _fam(v), names.WL_SOURCES[v]
            # No entry for this version: every source is spoofed (the set is not made empty).
            lookup = f"iifname . {fam} saddr != @{name}" if name in present else f"meta nfproto ipv{v}"
            exempt = " ip6 saddr != fe80::/10 ip6 saddr != ::" if v == 6 else ""
            antispoof.append(f"{match}{exempt} {lookup} drop")
    base = BASE_CHAINS
    chains.append(make_chain("raw-PREROUTING", [*v6_off, CLEAR_MARKS, *antispoof, f"jump {names.RAW_FROM_HEP}"], base["raw-PREROUTING"]))
    chains.append(make_chain("raw-OUTPUT", [*v6_off, CLEAR_MARKS, f"jump {names.RAW_TO_HEP}"], base["raw-OUTPUT"]))
    chains.append(
        make_chain(
            "mangle-PREROUTING",
            [*v6_off, CONNTRACK[0], f"{IF_ACCEPTED} accept", f"jump {names.MANGLE_FROM_HEP}"],
            base["mangle-PREROUTING"],
        )
    )
    chains.append(
        make_chain(
            "filter-INPUT",
            [*v6_off, *(f"{m} goto {names.WL_TO_HOST}" for m in wl_in), f"{IF_ACCEPTED} accept", f"jump {names.FROM_HEP_DISPATCH}"],
            base["filter-INPUT"],
        )
    )
    chains.append(
        make_chain(
            "filter-FORWARD",
            [
                *v6_off,
                f"{IF_NOT_ACCEPTED} jump {names.FROM_HEP_FORWARD}",
                *(f"{m} jump {names.FROM_WL_DISPATCH}" for m in wl_in),
                *(f"{m} jump {names.TO_WL_DISPATCH}" for m in wl_out),
                f"jump {names.TO_HEP_FORWARD}",
            ],
            base["filter-FORWARD"],
        )
    )
    chains.append(
        make_chain(
            "filter-OUTPUT",
            [*v6_off, *(f"{m} accept" for m in wl_out), f"{IF_ACCEPTED} accept", f"jump {names.TO_HEP_DISPATCH}"],
            base["filter-OUTPUT"],
        )
    )
    chains.append(make_chain("nat-POSTROUTING", [f"jump {names.NAT_OUTGOING}"], base["nat-POSTROUTING"]))

    to_host = []
    if 6 in eff.versions:
        to_host.append(f"icmpv6 type {ICMPV6_ROUTER_TYPES} accept")
    to_host += [f"jump {names.FROM_WL_DISPATCH}", eff.wl_to_host]
    chains.append(make_chain(names.WL_TO_HOST, to_host))

    for name, d in DISPATCH_MAPS:
        if name in (names.FROM_WL_DISPATCH, names.TO_WL_DISPATCH):
            default = "drop"  # an interface of no known workload
        elif name in all_iface:
            default = f"{_iface_guard(eff.prefixes, d)} goto {all_iface[name]}"
        else:
            default = None  # a host interface with no host endpoint: not ours to judge
        chains.append(make_chain(name, _dispatch(name, d, default)))

    chains.append(make_chain(names.FAILSAFE_IN, _failsafe(eff.failsafe_in, "s", eff.versions)))
    chains.append(make_chain(names.FAILSAFE_OUT, _failsafe(eff.failsafe_out, "d", eff.versions)))

    nat = []
    for v in eff.versions:
        fam = _fam(v)
        masq, pools = names.set_name(ids.MASQ_POOLS_SET, v), names.set_name(ids.ALL_POOLS_SET, v)
        if masq in present:  # natOutgoing pools (which are pools, so all-pools is not empty)
            nat.append(f"{fam} saddr @{masq} {fam} daddr != @{pools} masquerade")
    chains.append(make_chain(names.NAT_OUTGOING, nat))
    return chains


def _failsafe(ports: tuple[ProtoPort, ...], d: str, versions: tuple[int, ...]) -> list[str]:
    rules = []
    for pp in ports:
        proto = PROTOCOL_NUMBERS[pp.protocol.lower()]
        match = f"meta l4proto {proto} th dport {pp.port} accept"
        if pp.net:
            version = _version(pp.net)
            if version not in versions:
                continue
            match = f"{_fam(version)} {d}addr {_addr(pp.net)} {match}"
        rules.append(match)
    return rules


# --- sets ---------------------------------------------------------------------------


def set_state(set_type: str, members: tuple[str, ...], version: int) -> SetState:
    """An nft set for Calico set members of one version (``hash:net`` or ``hash:ip,port``).

    Addresses only: a plain ``ipv4_addr`` set. Any CIDR among them: ``flags interval``,
    with the members collapsed (interval sets refuse overlaps). Plain sets are preferred
    because nft 1.0 reads back every element of every non-concatenated interval set of the
    table before any element update.
    """
    addr_type = ADDR_TYPES[version]
    if set_type == "hash:ip,port":
        elements = []
        for member in members:
            addr, proto_port = member.split(",")
            proto, port = proto_port.split(":")
            elements.append(f"{ipaddress.ip_address(addr)} . {PROTOCOL_NUMBERS[proto]} . {int(port)}")
        return SetState((addr_type, "inet_proto", "inet_service"), frozenset(), frozenset(elements))
    nets = [ipaddress.ip_network(m) for m in members]
    if all(n.prefixlen == n.max_prefixlen for n in nets):
        return SetState((addr_type,), frozenset(), frozenset(str(n.network_address) for n in nets))
    return SetState((addr_type,), frozenset({"interval"}), frozenset(collapse(nets)))


def wl_sources_state(model: PolicyModel, version: int) -> SetState:
    """Anti-spoofing: (interface, allowed source) of every local workload (concatenated
    interval sets are not read back by nft, whatever their size)."""
    elements = []
    for spoof in model.anti_spoofing:
        if not spoof.interface:
            continue
        nets = [ipaddress.ip_network(n) for n in (*spoof.addresses, *spoof.allowed_prefixes)]
        for addr in collapse(n for n in nets if n.version == version):
            elements.append(f"{quote(spoof.interface)} . {addr}")
    return SetState(("ifname", ADDR_TYPES[version]), frozenset({"interval"}), frozenset(elements))
