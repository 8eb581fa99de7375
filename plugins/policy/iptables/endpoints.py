"""Endpoint, policy-group and dispatch chains (``felix/rules/endpoints.go``, ``dispatch.go``).

An endpoint chain (``cali-tw-<iface>`` to a workload, ``cali-fw-<iface>`` from it;
``cali-th-`` / ``cali-fh-`` to / from a host endpoint, ``cali-thfw-`` / ``cali-fhfw-``
for forwarded traffic) is, in order:

1. conntrack: RELATED,ESTABLISHED accepted (with the accept bit set first where the allow
   action is not ACCEPT), INVALID denied (not in the untracked, raw-table chains);
2. host endpoints: a jump to ``cali-failsafe-in`` / ``-out``, which policy cannot cut;
3. clear the accept and pass bits; from a workload, deny VXLAN (UDP to the VXLAN port)
   and IP-in-IP unless FelixConfiguration allows them;
4. per tier with policies for the direction: clear pass ("Start of tier"), jump to each
   policy (or policy group) while pass is clear, return as soon as one set accept; at
   the end of the tier deny unless a policy passed (not for tiers whose default action
   is Pass, nor in untracked and pre-DNAT chains);
5. normal chains: each profile in turn (return if it accepted), then deny.

Consecutive policies of a tier with the same selector go into a *policy group* chain
(``cali-gi-`` / ``cali-go-`` + a hash of tier, selector, direction and names) when there
are two or more: endpoints that share one share all, so the group chain is shared and
endpoint chains stay short.

Dispatch chains send packets to the endpoint chains by interface: a shallow tree by the
next character after the names' common prefix (``cali-from-wl-dispatch-<c>``), goto
rather than jump; packets from or to an unknown workload interface are denied.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence

import attrs

from . import chains as c
from .chains import Chain, Rule

RETURN_STRIDE = 5
GROUP_ID_LENGTH = c.MAX_CHAIN_NAME - len(c.GROUP_IN)


@attrs.frozen
class Tier:
    """One tier of an endpoint chain: its name, whether its end drops, the jump targets."""

    name: str
    end_drop: bool
    targets: tuple[str, ...]


@attrs.frozen(cache_hash=True)
class PolicyGroup:
    tier: str
    direction: str  # "inbound" (ingress) or "outbound" (egress)
    selector: str
    names: tuple[str, ...]  # the policies' names within the tier ([<namespace>/]<name>)
    chain_name: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        prefix = c.GROUP_IN if self.direction == "inbound" else c.GROUP_OUT
        object.__setattr__(self, "chain_name", prefix + self.unique_id)

    @property
    def unique_id(self) -> str:
        """Felix's ``PolicyGroup.UniqueID``: SHA3-224 of tier, selector, direction and names."""
        h = hashlib.sha3_224()
        for part in (self.tier, self.selector, self.direction, str(len(self.names)), *self.names):
            h.update(part.encode() + b"\n")
        return base64.urlsafe_b64encode(h.digest()).decode().rstrip("=")[:GROUP_ID_LENGTH]

    def chain(self, marks: c.Marks, policy_chain: Callable[[str], str]) -> Chain:
        """Felix's ``PolicyGroupToIptablesChains``: jump to each policy until one decides."""
        both = marks.passed | marks.accept
        rules = []
        for i, name in enumerate(self.names):
            if i and i % RETURN_STRIDE == 0:
                rules.append(Rule((c.mark_not_clear(both),), c.RETURN, ("Return on verdict",)))
            match = () if i % RETURN_STRIDE == 0 else (c.mark_clear(both),)
            rules.append(Rule(match, c.jump(policy_chain(name))))
        return Chain(self.chain_name, rules)


def group_policies(
    tier: str, direction: str, entries: Sequence[tuple[str, str]]
) -> list[tuple[str, PolicyGroup | None]]:
    """Split a tier's (policy name, selector) list into runs of one selector.

    Returns (name, None) for a policy jumped to directly and (first name, group) for a
    group of two or more.
    """
    out: list[tuple[str, PolicyGroup | None]] = []
    run: list[tuple[str, str]] = []

    def flush() -> None:
        if len(run) == 1:
            out.append((run[0][0], None))
        elif run:
            out.append((run[0][0], PolicyGroup(tier, direction, run[0][1], tuple(n for n, _ in run))))

    for name, selector in entries:
        if run and run[-1][1] != selector:
            flush()
            run = []
        run.append((name, selector))
    flush()
    return out


@attrs.frozen
class EndpointChainSpec:
    name: str
    tiers: tuple[Tier, ...]
    profiles: tuple[str, ...]  # profile chain names
    kind: str  # normal | forward | untracked | pre-dnat
    failsafe: str | None
    allow: str  # action fragment for the conntrack accept
    deny: str
    drop_vxlan_port: int | None = None  # from workloads: deny UDP to this port
    drop_ipip: bool = False


def endpoint_chain(spec: EndpointChainSpec, marks: c.Marks, deny_word: str) -> Chain:
    """Felix's ``endpointIptablesChain`` (admin-up endpoints)."""
    rules: list[Rule] = []
    established = "-m conntrack --ctstate RELATED,ESTABLISHED"
    if spec.kind != "untracked":
        if spec.allow != c.ACCEPT:
            rules.append(Rule((established,), c.set_mark(marks.accept)))
        rules.append(Rule((established,), spec.allow))
        rules.append(Rule(("-m conntrack --ctstate INVALID",), spec.deny))
    if spec.failsafe:
        rules.append(Rule((), c.jump(spec.failsafe)))
    rules.append(Rule((), c.clear_mark(marks.accept | marks.passed)))
    if spec.drop_vxlan_port is not None:
        rules.append(
            Rule(
                ("-p 17", f"-m multiport --destination-ports {spec.drop_vxlan_port}"),
                spec.deny,
                (f"{deny_word} VXLAN encapped packets originating in workloads",),
            )
        )
    if spec.drop_ipip:
        rules.append(Rule(("-p 4",), spec.deny, (f"{deny_word} IPinIP encapped packets originating in workloads",)))
    for tier in spec.tiers:
        if not tier.targets:
            continue
        rules.append(Rule((), c.clear_mark(marks.passed), (f"Start of tier {tier.name}",)))
        for target in tier.targets:
            rules.append(Rule((c.mark_clear(marks.passed),), c.jump(target)))
            if spec.kind == "untracked":
                rules.append(Rule((c.mark_set(marks.accept),), c.NOTRACK))
            rules.append(Rule((c.mark_set(marks.accept),), c.RETURN, ("Return if policy accepted",)))
        if spec.kind in ("normal", "forward") and tier.end_drop:
            rules.append(
                Rule((c.mark_clear(marks.passed),), spec.deny, (f"{deny_word} if no policies passed packet",))
            )
    if spec.kind == "forward" and not any(t.targets for t in spec.tiers):
        rules.append(Rule((), c.set_mark(marks.accept), ("Allow forwarded traffic by default",)))
        rules.append(Rule((), c.RETURN, ("Return for accepted forward traffic",)))
    if spec.kind == "normal":
        for profile in spec.profiles:
            rules.append(Rule((), c.jump(profile)))
            rules.append(Rule((c.mark_set(marks.accept),), c.RETURN, ("Return if profile accepted",)))
        rules.append(Rule((), spec.deny, (f"{deny_word} if no profiles matched",)))
    return Chain(spec.name, rules)


# --- dispatch ------------------------------------------------------------------------


def _common_prefix(names: Sequence[str]) -> str:
    if not names:
        return ""
    first, last = min(names), max(names)
    i = 0
    while i < len(first) and i < len(last) and first[i] == last[i]:
        i += 1
    return first[:i]


def prefix_tree(names: Sequence[str]) -> tuple[str, list[str], dict[str, list[str]]]:
    """Felix's ``sortAndDivideEndpointNamesToPrefixTree``."""
    ordered = sorted(set(names))
    common = _common_prefix(ordered)
    prefixes: list[str] = []
    by_prefix: dict[str, list[str]] = {}
    for name in ordered:
        prefix = name[: len(common) + 1] if len(name) > len(common) else common
        if prefix not in by_prefix:
            prefixes.append(prefix)
            by_prefix[prefix] = []
        by_prefix[prefix].append(name)
    return common, prefixes, by_prefix


def dispatch_chains(
    root: str,
    names: Sequence[str],
    match: Callable[[str], str],
    action: Callable[[str], str],
    end_rules: Sequence[Rule],
) -> list[Chain]:
    """Felix's ``buildSingleDispatchChains``: the root chain and its per-character children."""
    common, prefixes, by_prefix = prefix_tree(names)
    root_rules: list[Rule] = []
    children: list[Chain] = []
    for prefix in prefixes:
        members = by_prefix[prefix]
        if len(members) > 1:
            child = f"{root}-{prefix[len(common):]}"
            root_rules.append(Rule((match(prefix + "+"),), c.goto(child)))
            rules = [Rule((match(n),), action(n)) for n in members] + list(end_rules)
            children.append(Chain(child, rules))
        else:
            root_rules.append(Rule((match(members[0]),), action(members[0])))
    root_rules.extend(end_rules)
    return children + [Chain(root, root_rules)]


def in_iface(name: str) -> str:
    return f"--in-interface {name}"


def out_iface(name: str) -> str:
    return f"--out-interface {name}"
