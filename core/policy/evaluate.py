"""A packet judge over a :class:`~.model.PolicyModel`: would Calico let this packet through?

``verdict(model, src, dst, protocol, port)`` applies the source endpoint's egress chain and
the destination endpoint's ingress chain, each as Felix's rendered chains would
(``felix/rules/endpoints.go``, ``policy.go``, ``static.go``):

* within a tier, policies in order; within a policy, rules in order; the first rule that
  matches decides for the tier: Allow accepts for the direction (later tiers are skipped),
  Deny drops, Pass goes on to the next tier, Log logs and goes on to the next rule;
* a tier whose policies all end without a verdict drops, unless its default action is Pass;
* after the tiers (or when none applies) the profiles, in order: Allow accepts, Deny drops,
  anything else tries the next; then drop. A missing profile drops.
* before policy: a workload may send only from its own addresses (Felix's reverse-path
  check; with ``workloadSourceSpoofing: Any`` also from its ``allowSpoofedSourcePrefixes``);
  workloads may not send VXLAN (UDP to the VXLAN port) or IP-in-IP unless allowed; host
  endpoints accept their failsafe ports; a host endpoint's untracked (doNotTrack) tiers,
  then its pre-DNAT ingress tiers, run first (both pass by default).

Selectors, nets and named ports are judged the way the kernel does: by set membership of
the packet's addresses (:mod:`.ipsets`), so network sets and every endpoint of the cluster
count. Use a model compiled with ``scope="cluster"`` to judge traffic between any two
endpoints; with ``scope="node"`` only local endpoints apply their policy.

A packet from an endpoint to itself never leaves it: allowed.
"""

from __future__ import annotations

import functools
import ipaddress
import weakref
from collections.abc import Iterable, Mapping
from typing import Literal

import attrs

from pycalico.core.policy.endpoints import Endpoint, EndpointKey
from pycalico.core.policy.model import PolicyModel, ProtoPort
from pycalico.core.policy.resolve import EndpointPolicy, ResolvedEndpoint
from pycalico.core.policy.rules import PROTOCOLS, Direction, Rule, Side, protocol_value

Outcome = Literal["allow", "deny"]
IPIP = 4
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@attrs.frozen
class Peer:
    """One end of a packet: an endpoint of the model, or an address outside it."""

    endpoint: EndpointKey | None = None
    ip: str | None = None

    @classmethod
    def of(cls, endpoint: Endpoint | EndpointKey) -> Peer:
        return cls(endpoint=endpoint if isinstance(endpoint, EndpointKey) else endpoint.key)

    @classmethod
    def address(cls, ip: str) -> Peer:
        return cls(ip=str(ipaddress.ip_address(ip)))

    def __str__(self) -> str:
        return str(self.endpoint) if self.endpoint else str(self.ip)


@attrs.frozen
class Step:
    """What one direction decided and why (``where`` names the tier/policy/rule or profile)."""

    direction: Direction
    peer: str
    outcome: Outcome
    where: str

    def __str__(self) -> str:
        return f"{self.direction} of {self.peer}: {self.outcome} ({self.where})"


@attrs.frozen
class Verdict:
    action: Outcome
    steps: tuple[Step, ...]

    @property
    def allowed(self) -> bool:
        return self.action == "allow"

    @property
    def reason(self) -> str:
        return "; ".join(str(s) for s in self.steps)

    def __str__(self) -> str:
        return f"{self.action}: {self.reason}"


@attrs.frozen
class Packet:
    version: int
    src: Address
    dst: Address
    protocol: int
    src_port: int | None = None
    dst_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None


# --- set membership -----------------------------------------------------------------


class _Members:
    """The members of one set, for lookups."""

    def __init__(self, members: Iterable[str]) -> None:
        self.hosts: set[Address] = set()
        self.nets: list = []
        self.ip_ports: set[tuple[Address, int, int]] = set()
        for member in members:
            if "," in member:
                addr, proto_port = member.split(",")
                proto, port = proto_port.split(":")
                self.ip_ports.add((ipaddress.ip_address(addr), PROTOCOLS[proto], int(port)))
                continue
            net = ipaddress.ip_network(member)
            if net.prefixlen == net.max_prefixlen:
                self.hosts.add(net.network_address)
            else:
                self.nets.append(net)

    def has(self, addr: Address) -> bool:
        return addr in self.hosts or any(addr in n for n in self.nets if n.version == addr.version)

    def has_port(self, addr: Address, protocol: int, port: int | None) -> bool:
        return port is not None and (addr, protocol, port) in self.ip_ports


_EMPTY = _Members(())
_INDEX: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _members(model: PolicyModel) -> dict[str, _Members]:
    index = _INDEX.get(model)
    if index is None:
        index = {sid: _Members(s.members_v4 + s.members_v6) for sid, s in model.ip_sets.items()}
        _INDEX[model] = index
    return index


@functools.lru_cache(maxsize=4096)
def _networks(nets: tuple[str, ...], version: int) -> tuple:
    return tuple(n for n in map(ipaddress.ip_network, nets) if n.version == version)


# --- rules --------------------------------------------------------------------------

_CATCH_ALL = ("0.0.0.0/0", "::/0")


def _renders_for(rule: Rule, version: int) -> bool:
    """Whether Felix renders ``rule`` in the table of IP ``version`` (``FilterRuleToIPVersion``)."""
    if rule.ip_version is not None and rule.ip_version != version:
        return False
    for side in (rule.source, rule.destination):
        for nets, negated in ((side.nets, False), (side.not_nets, True)):
            if not nets:
                continue
            kept = _networks(nets, version)
            if not kept:
                return False  # every CIDR is of the other version
            if negated and any(str(n) in _CATCH_ALL for n in kept):
                return False  # "not everything": Felix drops the rule
    return True


def _side_matches(side: Side, addr: Address, port: int | None, pkt: Packet, members: dict[str, _Members]) -> bool:
    if side.nets and not any(addr in n for n in _networks(side.nets, pkt.version)):
        return False
    if any(not members.get(s, _EMPTY).has(addr) for s in side.ip_sets):
        return False
    if side.ports or side.named_port_sets:
        if not (
            (port is not None and any(port in r for r in side.ports))
            or any(members.get(s, _EMPTY).has_port(addr, pkt.protocol, port) for s in side.named_port_sets)
        ):
            return False
    if side.not_nets and any(addr in n for n in _networks(side.not_nets, pkt.version)):
        return False
    if any(members.get(s, _EMPTY).has(addr) for s in side.not_ip_sets):
        return False
    if port is not None and any(port in r for r in side.not_ports):
        return False
    if any(members.get(s, _EMPTY).has_port(addr, pkt.protocol, port) for s in side.not_named_port_sets):
        return False
    return True


def rule_matches(rule: Rule, pkt: Packet, members: Mapping[str, _Members]) -> bool:
    """Whether ``pkt`` matches every condition of ``rule``."""
    if not _renders_for(rule, pkt.version):
        return False
    if rule.protocol is not None and pkt.protocol != rule.protocol:
        return False
    if rule.not_protocol is not None and pkt.protocol == rule.not_protocol:
        return False
    if rule.icmp_type is not None and (
        pkt.icmp_type != rule.icmp_type or (rule.icmp_code is not None and pkt.icmp_code != rule.icmp_code)
    ):
        return False
    if (
        rule.not_icmp_type is not None
        and pkt.icmp_type == rule.not_icmp_type
        and (rule.not_icmp_code is None or pkt.icmp_code == rule.not_icmp_code)
    ):
        return False
    return _side_matches(rule.source, pkt.src, pkt.src_port, pkt, members) and _side_matches(
        rule.destination, pkt.dst, pkt.dst_port, pkt, members
    )


def _first_verdict(rules: tuple[Rule, ...], pkt: Packet, members) -> tuple[str, int] | None:
    """The action of the first matching non-Log rule, and its index."""
    for i, rule in enumerate(rules):
        if rule.action != "log" and rule_matches(rule, pkt, members):
            return rule.action, i
    return None


# --- chains -------------------------------------------------------------------------


def run_chain(model: PolicyModel, chain: EndpointPolicy, pkt: Packet) -> tuple[str | None, str]:
    """Run an endpoint chain: ("allow" | "deny" | None for no verdict, where it was decided)."""
    members = _members(model)
    direction = chain.direction
    for tier in chain.tiers:
        passed = False
        for key in tier.policies:
            found = _first_verdict(model.policies[key].rules(direction), pkt, members)
            if found is None:
                continue
            action, index = found
            where = f"tier {tier.name}, policy {key}, {direction} rule {index}"
            if action == "pass":
                passed = True
                break
            return action, where
        if not passed and tier.default_action == "Deny":
            return "deny", f"end of tier {tier.name}: no policy allowed or passed"
    if chain.kind != "normal":
        return None, f"no verdict in {chain.kind} tiers"
    for name in chain.profiles:
        found = _first_verdict(model.profiles[name].rules(direction), pkt, members)
        if found is not None and found[0] in ("allow", "deny"):
            return found[0], f"profile {name}, {direction} rule {found[1]}"
    if chain.tiers and not chain.profiles:
        return "deny", "tiers passed and there is no profile"
    return "deny", "no profile allowed" if chain.profiles else "no policy and no profile"


def _failsafe(ports: tuple[ProtoPort, ...], pkt: Packet, peer: Address) -> ProtoPort | None:
    for pp in ports:
        if PROTOCOLS[pp.protocol] != pkt.protocol or pp.port != pkt.dst_port:
            continue
        if pp.net is not None:
            net = ipaddress.ip_network(pp.net, strict=False)
            if net.version != pkt.version or peer not in net:
                continue
        return pp
    return None


def _judge(model: PolicyModel, resolved: ResolvedEndpoint, direction: Direction, pkt: Packet) -> tuple[Outcome, str]:
    ep = resolved.endpoint
    s = model.settings
    if ep.is_workload and direction == "egress":
        if pkt.protocol == 17 and pkt.dst_port == s.vxlan_port and not s.allow_vxlan_packets_from_workloads:
            return "deny", "VXLAN from a workload"
        if pkt.protocol == IPIP and not s.allow_ipip_packets_from_workloads:
            return "deny", "IP-in-IP from a workload"
    first: list[EndpointPolicy | None] = []
    if not ep.is_workload:
        failsafe = model.failsafe.inbound if direction == "ingress" else model.failsafe.outbound
        hit = _failsafe(failsafe, pkt, pkt.src if direction == "ingress" else pkt.dst)
        if hit is not None:
            return "allow", f"failsafe {hit.protocol}:{hit.port}"
        if direction == "ingress":
            first = [resolved.untracked_ingress, resolved.pre_dnat_ingress]
        else:
            first = [resolved.untracked_egress]
    for chain in first:
        if chain is None or not chain.tiers:
            continue
        action, where = run_chain(model, chain, pkt)
        if action == "deny" or (action == "allow" and chain.kind == "untracked"):
            return action, f"{chain.kind}: {where}"
    action, where = run_chain(model, resolved.chain(direction), pkt)
    return action or "deny", where


# --- entry points -------------------------------------------------------------------


def _as_peer(value: Peer | Endpoint | EndpointKey | str) -> Peer:
    if isinstance(value, Peer):
        return value
    if isinstance(value, (Endpoint, EndpointKey)):
        return Peer.of(value)
    return Peer.address(value)


def _address(model: PolicyModel, peer: Peer, version: int) -> Address | None:
    if peer.ip is not None:
        addr = ipaddress.ip_address(peer.ip)
        return addr if addr.version == version else None
    text = model.all_endpoints[peer.endpoint].address(version)
    return None if text is None else ipaddress.ip_address(text)


def _spoof_check(model: PolicyModel, endpoint: Endpoint, addr: Address) -> str | None:
    """Why a workload may not send from ``addr`` (None if it may)."""
    own = {ipaddress.ip_address(a) for a in endpoint.addresses}
    if not endpoint.is_workload or addr in own:
        return None
    if model.settings.workload_source_spoofing == "Any" and any(
        addr in n for n in _networks(endpoint.allow_spoofed_source_prefixes, addr.version)
    ):
        return None
    return f"anti-spoofing: {addr} is not an address of the endpoint"


def _version(model: PolicyModel, src: Peer, dst: Peer, src_ip: str | None = None) -> int:
    if src_ip is not None:
        return ipaddress.ip_address(src_ip).version
    for peer in (src, dst):
        if peer.ip is not None:
            return ipaddress.ip_address(peer.ip).version
    for version in (4, 6):
        if _address(model, src, version) and _address(model, dst, version):
            return version
    raise ValueError(f"{src} and {dst} share no IP version")


def verdict(
    model: PolicyModel,
    src: Peer | Endpoint | EndpointKey | str,
    dst: Peer | Endpoint | EndpointKey | str,
    protocol: int | str,
    port: int | None = None,
    *,
    src_port: int | None = None,
    icmp_type: int | None = None,
    icmp_code: int | None = None,
    ip_version: int | None = None,
    src_ip: str | None = None,
) -> Verdict:
    """Would a packet from ``src`` to ``dst`` get through? Peers are endpoints or address strings.

    ``port`` is the destination port. ``src_port`` defaults to none given: then rules that
    name source ports do not match and rules that exclude source ports do (an ephemeral
    port is assumed to be in no list). ``src_ip`` is the packet's source address when the
    source endpoint sends from an address not its own (spoofing).
    """
    src, dst = _as_peer(src), _as_peer(dst)
    version = ip_version or _version(model, src, dst, src_ip)
    src_addr, dst_addr = _address(model, src, version), _address(model, dst, version)
    if src_ip is not None:
        if src.endpoint is None:
            raise ValueError("src_ip needs an endpoint as the source")
        src_addr = ipaddress.ip_address(src_ip)
        spoofed = _spoof_check(model, model.all_endpoints[src.endpoint], src_addr)
        if spoofed:
            return Verdict("deny", (Step("egress", str(src), "deny", spoofed),))
    if src_addr is None or dst_addr is None:
        raise ValueError(f"{src} or {dst} has no IPv{version} address")
    pkt = Packet(version, src_addr, dst_addr, protocol_value(protocol), src_port, port, icmp_type, icmp_code)
    if src.endpoint is not None and src.endpoint == dst.endpoint:
        return Verdict("allow", (Step("egress", str(src), "allow", "to itself: never leaves the endpoint"),))
    steps = []
    for direction, peer in (("egress", src), ("ingress", dst)):
        resolved = model.endpoints.get(peer.endpoint) if peer.endpoint else None
        if resolved is None:
            steps.append(Step(direction, str(peer), "allow", "no endpoint policy applies here"))
            continue
        outcome, where = _judge(model, resolved, direction, pkt)
        steps.append(Step(direction, str(peer), outcome, where))
        if outcome == "deny":
            return Verdict("deny", tuple(steps))
    return Verdict("allow", tuple(steps))


def reachability(
    model: PolicyModel,
    peers: Mapping[str, Peer | Endpoint | EndpointKey | str],
    protocol: int | str,
    port: int | None = None,
    **kwargs,
) -> dict[tuple[str, str], Verdict]:
    """``verdict`` for every (from, to) pair of named peers."""
    return {
        (a, b): verdict(model, peers[a], peers[b], protocol, port, **kwargs)
        for a in peers
        for b in peers
    }


def format_matrix(results: Mapping[tuple[str, str], Verdict], names: Iterable[str]) -> str:
    """A reachability table as Kubernetes' network policy tests print it.

    Rows are sources, columns destinations; ``.`` is allowed, ``X`` is blocked.
    """
    names = list(names)
    width = max(len(n) for n in names)
    lines = [" " * width + " " + " ".join(n.rjust(width) for n in names)]
    for a in names:
        cells = ("." if results[(a, b)].allowed else "X" for b in names)
        lines.append(a.ljust(width) + " " + " ".join(c.rjust(width) for c in cells))
    return "\n".join(lines)
