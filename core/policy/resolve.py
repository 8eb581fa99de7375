"""Which tiers, policies and profiles apply to an endpoint, in Felix's order.

From ``felix/calc/policy_sorter.go``, ``policy_resolver.go`` and ``event_sequencer.go``:

* tiers sort by: existing before missing (a policy may name a tier with no Tier resource;
  its tier then sorts last and, having no default action, drops at its end), then order
  (none = last), then name;
* within a tier, policies sort by order (none = last), then ``name/namespace/kind``;
* a policy applies when its selector matches the endpoint's effective labels; per
  direction it counts only if its types include that direction;
* doNotTrack and preDNAT policies go to separate "untracked" and "pre-DNAT" tier lists
  (host endpoints only, default action Pass, pre-DNAT ingress only); applyOnForward
  policies also go to the "forward" list; the rest are the "normal" tiers;
* then come the endpoint's profiles, in the order it lists them.

Felix's endpoint chain (``felix/rules/endpoints.go``), which :class:`EndpointPolicy` is
shaped for: per tier with at least one policy for the direction, clear "pass"; jump to each
policy while "pass" is clear and return when one accepted; at the end of the tier drop
unless a policy passed or the tier's default action is Pass; then each profile (return when
it accepted); then drop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import attrs

from pycalico.core.policy import ids
from pycalico.core.policy.endpoints import Endpoint
from pycalico.core.policy.rules import Direction, Policy
from pycalico.core.resources.policy import TIER_ORDERS

TierAction = Literal["Deny", "Pass"]
ChainKind = Literal["normal", "forward", "untracked", "pre-dnat"]

# calico-node creates these tiers at start; a state without them still has them.
BUILTIN_TIERS: dict[str, TierAction] = {"default": "Deny", "kube-admin": "Pass", "kube-baseline": "Pass"}


@attrs.frozen
class TierInfo:
    name: str
    order: float | None
    default_action: TierAction
    exists: bool = True  # False: policies name it but there is no Tier resource

    @property
    def sort_key(self) -> tuple:
        return (not self.exists, self.order is None, self.order or 0.0, self.name)


def tiers_from(resources: Iterable) -> dict[str, TierInfo]:
    """Tier resources, plus the built-in tiers when the state lacks them."""
    tiers = {
        t.name: TierInfo(
            t.name,
            None if t.spec.order is None else float(t.spec.order),
            "Pass" if t.spec.default_action == "Pass" else "Deny",
        )
        for t in resources
    }
    for name, action in BUILTIN_TIERS.items():
        tiers.setdefault(name, TierInfo(name, TIER_ORDERS[name], action))
    return tiers


@attrs.frozen
class TierPolicies:
    """One tier of an endpoint chain: its policies (keys) in order, and what its end does."""

    name: str
    default_action: TierAction
    policies: tuple[str, ...]


@attrs.frozen
class EndpointPolicy:
    """The chain of one endpoint in one direction: tiers (each with ≥1 policy), then profiles.

    ``profiles`` is empty for the untracked and pre-DNAT chains, which neither consult
    profiles nor drop at their end (their tiers pass). ``id`` hashes the structure; the
    policies' own content has its own ids.
    """

    direction: Direction
    kind: ChainKind
    tiers: tuple[TierPolicies, ...]
    profiles: tuple[str, ...] = ()
    id: str = ""

    @property
    def policy_keys(self) -> tuple[str, ...]:
        return tuple(k for tier in self.tiers for k in tier.policies)


def _chain(
    direction: Direction, kind: ChainKind, tiers: list[TierPolicies], profiles: tuple[str, ...]
) -> EndpointPolicy:
    chain = EndpointPolicy(direction, kind, tuple(tiers), profiles)
    return attrs.evolve(chain, id=ids.content_hash(chain))


@attrs.frozen
class ResolvedEndpoint:
    """An endpoint with its chains. Host endpoints also get forward, untracked and pre-DNAT chains."""

    endpoint: Endpoint
    ingress: EndpointPolicy
    egress: EndpointPolicy
    forward_ingress: EndpointPolicy | None = None
    forward_egress: EndpointPolicy | None = None
    untracked_ingress: EndpointPolicy | None = None
    untracked_egress: EndpointPolicy | None = None
    pre_dnat_ingress: EndpointPolicy | None = None

    def chain(self, direction: Direction) -> EndpointPolicy:
        return self.ingress if direction == "ingress" else self.egress

    @property
    def chains(self) -> tuple[EndpointPolicy, ...]:
        """Every chain the endpoint has."""
        return tuple(
            c
            for c in (
                self.ingress,
                self.egress,
                self.forward_ingress,
                self.forward_egress,
                self.untracked_ingress,
                self.untracked_egress,
                self.pre_dnat_ingress,
            )
            if c is not None
        )

    @property
    def policy_keys(self) -> tuple[str, ...]:
        """The keys of the policies its chains jump to (a key once per chain it is in)."""
        return tuple(k for c in self.chains for k in c.policy_keys)


class TierOrder:
    """The tiers in Felix's order, and how to lay an endpoint's policies out in them.

    ``tiers`` are the known tiers (Tier resources and the built-ins); ``named`` the tiers
    the policies name, of which those without a Tier resource sort last.
    """

    def __init__(self, tiers: Mapping[str, TierInfo], named: Iterable[str] = ()) -> None:
        tiers = dict(tiers)
        for name in named:
            if name not in tiers:
                tiers[name] = TierInfo(name, None, "Deny", exists=False)
        self.tiers = tuple(sorted(tiers.values(), key=lambda t: t.sort_key))
        self._rank = {tier.name: i for i, tier in enumerate(self.tiers)}

    def resolve(self, endpoint: Endpoint, policies: Iterable[Policy]) -> ResolvedEndpoint:
        """The endpoint's chains, given the policies whose selectors match it (any order).

        Every policy's tier must be one of ``tiers``.
        """
        ranked = sorted(policies, key=lambda p: (self._rank[p.tier], p.sort_key))
        lists: dict[tuple[str, Direction], list[TierPolicies]] = {}
        start = 0
        while start < len(ranked):
            tier = self.tiers[self._rank[ranked[start].tier]]
            end = start
            picked: dict[tuple[str, Direction], list[str]] = {}
            while end < len(ranked) and ranked[end].tier == tier.name:
                policy = ranked[end]
                end += 1
                if policy.do_not_track:
                    kinds = ["untracked"]
                elif policy.pre_dnat:
                    kinds = ["pre-dnat"]
                else:
                    kinds = ["normal", "forward"] if policy.apply_on_forward else ["normal"]
                for kind in kinds:
                    if policy.governs_ingress:
                        picked.setdefault((kind, "ingress"), []).append(policy.key)
                    if policy.governs_egress and kind != "pre-dnat":
                        picked.setdefault((kind, "egress"), []).append(policy.key)
            start = end
            for (kind, direction), keys in picked.items():
                action = "Pass" if kind in ("untracked", "pre-dnat") else tier.default_action
                lists.setdefault((kind, direction), []).append(TierPolicies(tier.name, action, tuple(keys)))

        profiles = endpoint.profiles

        def chain(kind: ChainKind, direction: Direction) -> EndpointPolicy:
            with_profiles = profiles if kind == "normal" else ()
            return _chain(direction, kind, lists.get((kind, direction), []), with_profiles)

        if endpoint.is_workload:
            return ResolvedEndpoint(endpoint, chain("normal", "ingress"), chain("normal", "egress"))
        return ResolvedEndpoint(
            endpoint,
            chain("normal", "ingress"),
            chain("normal", "egress"),
            forward_ingress=chain("forward", "ingress"),
            forward_egress=chain("forward", "egress"),
            untracked_ingress=chain("untracked", "ingress"),
            untracked_egress=chain("untracked", "egress"),
            pre_dnat_ingress=chain("pre-dnat", "ingress"),
        )
