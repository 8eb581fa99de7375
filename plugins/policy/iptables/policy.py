"""Policy and profile rules as iptables rules (``felix/rules/policy.go``).

Each normalised rule (:class:`pycalico.core.policy.Rule`) becomes one rule that holds
the whole match, followed by the action rules:

* Allow: ``<match> -j MARK --set-mark <accept>``, then ``-m mark --mark <accept> -j RETURN``;
* Pass: the same with the pass bit (the endpoint chain skips the rest of the tier);
* Deny: ``<match> -j DROP`` (or REJECT, ``deny_action``);
* Log: ``<match> -j LOG --log-prefix "calico-packet: " --log-level 5``.

What one iptables rule cannot say is split into *match blocks* before the rule, as Felix
does: more than 15 port slots (a range takes 2) or numeric ports together with named
ports (OR), more than one CIDR (OR), or negated CIDRs beside another CIDR match (none of).
Blocks compute their result in the scratch mark bits; the final rule then also requires
``scratch0``. Selectors, named ports and service matches are ipset matches
(``-m set --match-set cali40s:... src``; ``src,src`` / ``dst,dst`` for ``ip,port`` sets).

A rule is rendered only in the tables of the IP versions it applies to
(``FilterRuleToIPVersion``): not for another ``ipVersion``, not when every CIDR of a
non-empty nets list is of the other version, not when a negated list holds the catch-all
(``0.0.0.0/0``). ICMP type matches are rendered only where the protocol fits the table
(ICMP in IPv4, ICMPv6 in IPv6).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

import attrs

from pycalico.core.policy import PortRange
from pycalico.core.policy import Rule as ModelRule
from pycalico.core.policy import Side

from . import chains as c
from .chains import Rule

PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite"}
CATCH_ALL = {4: "0.0.0.0/0", 6: "::/0"}
MULTIPORT_SLOTS = 15


@attrs.frozen
class RuleContext:
    """What rendering a rule needs besides the rule."""

    version: int
    marks: c.Marks
    deny: str  # action fragment
    set_name: Callable[[str], tuple[str, bool]]  # set id -> (kernel name, is an ip,port set)


def protocol_text(number: int) -> str:
    return PROTOCOL_NAMES.get(number, str(number))


def _nets(values: Sequence[str], version: int) -> list[str]:
    return [n for n in values if ipaddress.ip_network(n).version == version]


def renders_for(rule: ModelRule, version: int) -> bool:
    """Whether Felix renders ``rule`` in the tables of IP ``version``."""
    if rule.ip_version is not None and rule.ip_version != version:
        return False
    for side in (rule.source, rule.destination):
        if side.nets and not _nets(side.nets, version):
            return False
        if side.not_nets:
            kept = _nets(side.not_nets, version)
            if not kept or CATCH_ALL[version] in kept:
                return False
    if rule.icmp_type is not None or rule.not_icmp_type is not None:
        if rule.protocol != (1 if version == 4 else 58):
            return False
    return True


def split_ports(ports: Sequence[PortRange]) -> list[list[PortRange]]:
    """Felix's ``SplitPortList``: groups that fit one multiport match (15 slots)."""
    splits: list[list[PortRange]] = []
    current: list[PortRange] = []
    free = MULTIPORT_SLOTS
    for r in ports:
        need = 1 if r.first == r.last else 2
        if free < need:
            splits.append(current)
            current, free = [], MULTIPORT_SLOTS
        current.append(r)
        free -= need
    if current:
        splits.append(current)
    return splits


def _multiport(direction: str, ports: Sequence[PortRange], negated: bool = False) -> str:
    flag = "--source-ports" if direction == "src" else "--destination-ports"
    bang = "! " if negated else ""
    return f"-m multiport {bang}{flag} " + ",".join(str(p) for p in ports)


def _net(direction: str, net: str, negated: bool = False) -> str:
    flag = "--source" if direction == "src" else "--destination"
    return f"! {flag} {net}" if negated else f"{flag} {net}"


def _set(name: str, direction: str, ip_port: bool, negated: bool = False) -> str:
    where = f"{direction},{direction}" if ip_port else direction
    bang = "! " if negated else ""
    return f"-m set {bang}--match-set {name} {where}"


def _icmp(version: int, type_: int, code: int | None, negated: bool) -> str:
    value = str(type_) if code is None else f"{type_}/{code}"
    bang = "! " if negated else ""
    if version == 4:
        return f"-m icmp {bang}--icmp-type {value}"
    return f"-m icmp6 {bang}--icmpv6-type {value}"


class _Blocks:
    """Felix's ``matchBlockBuilder``: rules that compute part of a match in scratch bits."""

    def __init__(self, marks: c.Marks):
        self.all_pass = marks.scratch0
        self.this_pass = marks.scratch1
        self.rules: list[Rule] = []
        self.used = False
        self.done_first_positive = False

    def _start(self, initial: int) -> None:
        if not self.used:
            self.rules.append(Rule((), c.set_masked_mark(initial, self.all_pass | self.this_pass)))
            self.used = True

    def _positive_mark(self) -> int:
        if not self.done_first_positive:
            return self.all_pass
        # Not in Felix: clear the block bit first, so that a third positive block does not
        # see the second one's result.
        self.rules.append(Rule((), c.clear_mark(self.this_pass)))
        return self.this_pass

    def _finish_positive(self) -> None:
        if not self.done_first_positive:
            self.done_first_positive = True
            return
        self.rules.append(Rule((c.mark_clear(self.this_pass),), c.clear_mark(self.all_pass)))

    def ports(self, proto: str | None, splits, named_sets: Sequence[str], direction: str) -> None:
        self._start(0)
        mark = self._positive_mark()
        for split in splits:
            self.rules.append(Rule((proto, _multiport(direction, split)), c.set_mark(mark)))
        for name in named_sets:
            self.rules.append(Rule((_set(name, direction, True),), c.set_mark(mark)))
        self._finish_positive()

    def nets(self, nets: Sequence[str], direction: str) -> None:
        self._start(0)
        mark = self._positive_mark()
        for net in nets:
            self.rules.append(Rule((_net(direction, net),), c.set_mark(mark)))
        self._finish_positive()

    def not_nets(self, nets: Sequence[str], direction: str) -> None:
        self._start(self.all_pass)
        for net in nets:
            self.rules.append(Rule((_net(direction, net),), c.clear_mark(self.all_pass)))


def _side_sets(side: Side, ctx: RuleContext) -> tuple[list[tuple[str, bool]], list[str], list[str], list[str]]:
    """(address sets as (name, ip_port), not sets, named-port sets, not named-port sets)."""
    sets = [ctx.set_name(s) for s in side.ip_sets]
    not_sets = [ctx.set_name(s)[0] for s in side.not_ip_sets]
    named = [ctx.set_name(s)[0] for s in side.named_port_sets]
    not_named = [ctx.set_name(s)[0] for s in side.not_named_port_sets]
    return sets, not_sets, named, not_named


def rule_match(rule: ModelRule, ctx: RuleContext) -> tuple[list[Rule], list[str]]:
    """The match blocks and the match fragments of the final rule."""
    version = ctx.version
    proto = protocol_text(rule.protocol) if rule.protocol is not None else None
    proto_frag = f"-p {proto}" if proto else None
    blocks = _Blocks(ctx.marks)
    src, dst = rule.source, rule.destination
    s_sets, s_not_sets, s_named, s_not_named = _side_sets(src, ctx)
    d_sets, d_not_sets, d_named, d_not_named = _side_sets(dst, ctx)
    s_ports, d_ports = list(src.ports), list(dst.ports)
    s_splits, d_splits = split_ports(s_ports), split_ports(d_ports)

    if len(s_splits) + len(s_named) > 1:
        blocks.ports(proto_frag, s_splits, s_named, "src")
        s_ports, s_named = [], []
    if len(d_splits) + len(d_named) > 1:
        blocks.ports(proto_frag, d_splits, d_named, "dst")
        d_ports, d_named = [], []

    s_nets, d_nets = _nets(src.nets, version), _nets(dst.nets, version)
    s_not_nets, d_not_nets = _nets(src.not_nets, version), _nets(dst.not_nets, version)
    if len(s_nets) > 1:
        blocks.nets(s_nets, "src")
        s_nets = []
    if len(d_nets) > 1:
        blocks.nets(d_nets, "dst")
        d_nets = []
    if len(s_nets) + len(s_not_nets) > 1:
        blocks.not_nets(s_not_nets, "src")
        s_not_nets = []
    if len(d_nets) + len(d_not_nets) > 1:
        blocks.not_nets(d_not_nets, "dst")
        d_not_nets = []

    m: list[str] = []
    if proto_frag:
        m.append(proto_frag)
    if s_nets:
        m.append(_net("src", s_nets[0]))
    m.extend(_set(name, "src", ip_port) for name, ip_port in s_sets)
    if s_ports:
        m.append(_multiport("src", s_ports))
    m.extend(_set(name, "src", True) for name in s_named)
    if d_nets:
        m.append(_net("dst", d_nets[0]))
    m.extend(_set(name, "dst", False) for name, ip_port in d_sets if not ip_port)
    m.extend(_set(name, "dst", True) for name, ip_port in d_sets if ip_port)
    if d_ports:
        m.append(_multiport("dst", d_ports))
    m.extend(_set(name, "dst", True) for name in d_named)
    if rule.icmp_type is not None:
        m.append(_icmp(version, rule.icmp_type, rule.icmp_code, False))
    if rule.not_protocol is not None:
        m.append(f"! -p {protocol_text(rule.not_protocol)}")
    if s_not_nets:
        m.append(_net("src", s_not_nets[0], negated=True))
    m.extend(_set(name, "src", False, negated=True) for name in s_not_sets)
    for split in split_ports(src.not_ports):
        m.append(_multiport("src", split, negated=True))
    m.extend(_set(name, "src", True, negated=True) for name in s_not_named)
    if d_not_nets:
        m.append(_net("dst", d_not_nets[0], negated=True))
    m.extend(_set(name, "dst", False, negated=True) for name in d_not_sets)
    for split in split_ports(dst.not_ports):
        m.append(_multiport("dst", split, negated=True))
    m.extend(_set(name, "dst", True, negated=True) for name in d_not_named)
    if rule.not_icmp_type is not None:
        m.append(_icmp(version, rule.not_icmp_type, rule.not_icmp_code, True))
    if blocks.used:
        m.append(c.mark_set(blocks.all_pass))
    return blocks.rules, m


def render_rule(rule: ModelRule, ctx: RuleContext, log_prefix: str) -> list[Rule]:
    """The iptables rules of one policy or profile rule (empty if not for this version)."""
    if not renders_for(rule, ctx.version):
        return []
    block_rules, match = rule_match(rule, ctx)
    marks = ctx.marks
    if rule.action == "allow":
        out = [Rule(match, c.set_mark(marks.accept)), Rule((c.mark_set(marks.accept),), c.RETURN)]
    elif rule.action == "pass":
        out = [Rule(match, c.set_mark(marks.passed)), Rule((c.mark_set(marks.passed),), c.RETURN)]
    elif rule.action == "deny":
        out = [Rule(match, ctx.deny)]
    elif rule.action == "log":
        out = [Rule(match, c.log(log_prefix))]
    else:  # pragma: no cover - the model only has these four
        raise ValueError(f"unknown rule action {rule.action!r}")
    rules = block_rules + out
    if rule.annotations:
        notes = tuple(f"{k}={v}" for k, v in rule.annotations)
        rules = [r.with_comments(*notes) for r in rules]
    return rules


def render_rules(rules: Sequence[ModelRule], ctx: RuleContext, log_prefix: str, comment: str) -> list[Rule]:
    """A policy's or profile's rules for one direction (``ProtoRulesToIptablesRules``)."""
    out: list[Rule] = []
    for rule in rules:
        out.extend(render_rule(rule, ctx, log_prefix))
    # Trailing RETURNs are no-ops whatever they match.
    while out and out[-1].action == c.RETURN:
        out.pop()
    if not out:
        out.append(Rule())
    out[0] = out[0].with_comments(comment)
    return out
