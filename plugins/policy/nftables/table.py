"""The desired table ``inet calico``, kept pass after pass: :class:`Renderer` and :class:`Desired`.

The renderer keeps the last table and where each part of it came from: every endpoint's
chains and dispatch map entries, and the policy, profile and policy-group chains that
endpoint chains jump to, made while any endpoint needs them (a
:class:`~pycalico.core.policy.tally.Tally`); the sets;
the base, dispatch, failsafe and NAT chains. A model whose ``changes`` are against the
model rendered last (with the same settings) redoes only the endpoints, policies,
profiles and sets they list, and the chains whose rules refer to a set that came or went
(an absent set changes what a rule can match, see :mod:`.render`). Any other model is
rendered whole, by the same steps over everything.

The result lists what it ``touched`` since the previous one, so that the transaction can
look only there when the kernel is known to hold that previous one.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import attrs

from pycalico.core.policy import ids
from pycalico.core.policy.model import Changes, PolicyModel
from pycalico.core.policy.resolve import ResolvedEndpoint
from pycalico.core.policy.tally import Contribution, Tally

from . import names
from .render import (
    DISPATCH_MAPS,
    Chain,
    Effective,
    endpoint_rules,
    group_chain_name,
    group_rules,
    make_chain,
    policy_rules,
    rule_set_names,
    set_state,
    static_chains,
    wl_sources_state,
)
from .state import ChainState, MapState, SetState, TableState, quote

_VMAP = ("ifname", ":", "verdict")
_SERIALS = itertools.count(1)

# What an endpoint chain jumps to: ("pol", direction, tier, key), ("pro", direction, profile)
# or ("grp", direction, tier, policy keys, untracked).
Ref = tuple


@attrs.frozen
class Touched:
    """The chains and sets of a table that may differ from the table numbered ``since``."""

    since: int
    chains: frozenset[str]
    sets: frozenset[str]


@attrs.frozen(eq=False)
class Desired:
    """The whole table: chains with their rule texts, sets and maps; ``state`` to diff.

    ``touched`` names what may differ from the previous result of the same renderer
    (None: anything may).
    """

    chains: Mapping[str, Chain]
    sets: Mapping[str, SetState]
    maps: Mapping[str, MapState]
    chain_states: Mapping[str, ChainState]
    serial: int = 0
    touched: Touched | None = None

    @property
    def state(self) -> TableState:
        return TableState(self.chain_states, self.sets, self.maps)


def endpoint_part(resolved: ResolvedEndpoint, eff: Effective) -> Contribution:
    """An endpoint's chains (slots ``("chain", name)``), dispatch map entries
    (``("entry", map, quoted interface)``) or, for a host endpoint of every interface, the
    dispatch chains' default (``("default", dispatch)``); refs: its jump targets."""
    ep = resolved.endpoint
    iface = ep.interface
    if not iface:
        return Contribution()  # a host endpoint known only by its expectedIPs is not programmed
    if ep.is_workload:
        items = [
            (resolved.ingress, names.workload_chain("ingress", iface), names.TO_WL_DISPATCH),
            (resolved.egress, names.workload_chain("egress", iface), names.FROM_WL_DISPATCH),
        ]
    else:
        items = [
            (resolved.ingress, names.host_chain("ingress", iface), names.FROM_HEP_DISPATCH),
            (resolved.egress, names.host_chain("egress", iface), names.TO_HEP_DISPATCH),
            (resolved.forward_ingress, names.host_chain("ingress", iface, "forward"), names.FROM_HEP_FORWARD),
            (resolved.forward_egress, names.host_chain("egress", iface, "forward"), names.TO_HEP_FORWARD),
        ]
        for chain, dispatch in (
            (resolved.untracked_ingress, names.RAW_FROM_HEP),
            (resolved.untracked_egress, names.RAW_TO_HEP),
            (resolved.pre_dnat_ingress, names.MANGLE_FROM_HEP),
        ):
            if chain is not None and chain.tiers:
                items.append((chain, names.host_chain(chain.direction, iface, chain.kind), dispatch))
    slots, refs = [], set()
    for chain, name, dispatch in items:
        if chain is None:
            continue
        slots.append((("chain", name), make_chain(name, endpoint_rules(chain, workload=ep.is_workload, eff=eff))))
        if iface == "*":
            slots.append((("default", dispatch), name))
        else:
            slots.append((("entry", dispatch, quote(iface)), f"goto {name}"))
        untracked = chain.kind == "untracked"
        for tier in chain.tiers:
            refs.update(("pol", chain.direction, tier.name, key) for key in tier.policies)
            if len(tier.policies) > 1:
                refs.add(("grp", chain.direction, tier.name, tier.policies, untracked))
        refs.update(("pro", chain.direction, profile) for profile in chain.profiles)
    return Contribution(tuple(slots), frozenset(refs))


def _ref_source(ref: Ref) -> tuple[str, str] | None:
    """The policy or profile whose content a jump target's rules are."""
    if ref[0] == "pol":
        return ("pol", ref[3])
    if ref[0] == "pro":
        return ("pro", ref[2])
    return None


class Renderer:
    """Renders models into :class:`Desired` tables, pass after pass (see the module docstring)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._model_serial: int | None = None
        self._eff: Effective | None = None
        self._out_serial = 0
        self._sets: dict[str, SetState] = {}
        self._set_names: dict[str, tuple[str, ...]] = {}  # set id -> the names of its non-empty sets
        self._spoof: tuple | None = None
        self._endpoints = Tally(_ref_source)
        self._all_iface: dict[str, str] = {}
        self._made: dict[Ref, tuple[Chain, frozenset[str]]] = {}  # jump targets rendered, with the sets they may use
        self._set_users: dict[str, set[Ref]] = {}
        self._static_key: tuple | None = None
        self._chains: dict[str, Chain] = {}
        self._states: dict[str, ChainState] = {}
        self._maps: dict[str, dict[str, str]] = {name: {} for name, _ in DISPATCH_MAPS}

    def render(self, model: PolicyModel, eff: Effective) -> Desired:
        try:
            return self._render(model, eff)
        except BaseException:
            self._reset()
            raise

    def _render(self, model: PolicyModel, eff: Effective) -> Desired:
        changes = model.changes_since(self._model_serial)
        if changes is None or eff != self._eff:
            self._reset()
            changes = None
        else:
            eff = self._eff  # the same object: later comparisons stop at identity
        self._eff = eff
        touched_chains: set[str] = set()
        touched_sets: set[str] = set()

        flipped = self._update_sets(model, eff, changes, touched_sets)
        self._update_endpoints(model, eff, changes, touched_chains)
        redo = self._endpoints.redo(changes)
        for name in flipped:
            redo |= self._set_users.get(name, set())
        for ref in redo:
            self._update_target(ref, model, eff, touched_chains)
        self._update_static(eff, touched_chains)

        previous = self._out_serial
        self._out_serial = next(_SERIALS)
        self._model_serial = model.serial
        touched = None if changes is None else Touched(previous, frozenset(touched_chains), frozenset(touched_sets))
        return Desired(
            chains=dict(self._chains),
            sets=dict(self._sets),
            maps={name: MapState(_VMAP, dict(elements)) for name, elements in self._maps.items()},
            chain_states=dict(self._states),
            serial=self._out_serial,
            touched=touched,
        )

    # --- sets ---------------------------------------------------------------------------

    def _put_set(self, name: str, state: SetState | None, touched: set[str], flipped: set[str]) -> None:
        old = self._sets.get(name)
        if state is None or not state.elements:
            if old is not None:
                del self._sets[name]
                touched.add(name)
                flipped.add(name)
            return
        if old != state:
            self._sets[name] = state
            touched.add(name)
            if old is None:
                flipped.add(name)

    def _update_sets(self, model: PolicyModel, eff: Effective, changes: Changes | None, touched: set[str]) -> set[str]:
        """Bring the sets up to date; the names of those made or gone (empty sets are not made)."""
        flipped: set[str] = set()
        for set_id in model.ip_sets if changes is None else changes.ip_sets:
            ipset = model.ip_sets.get(set_id)
            made = []
            for v in eff.versions if ipset is not None else ():
                members = ipset.members(v)
                if members:
                    name = names.set_name(set_id, v)
                    self._put_set(name, set_state(ipset.spec.set_type, members, v), touched, flipped)
                    made.append(name)
            for name in self._set_names.pop(set_id, ()):
                if name not in made:
                    self._put_set(name, None, touched, flipped)
            if made:
                self._set_names[set_id] = tuple(made)
        if model.anti_spoofing != self._spoof:
            self._spoof = model.anti_spoofing
            for v in (4, 6):
                state = wl_sources_state(model, v) if v in eff.versions else None
                self._put_set(names.WL_SOURCES[v], state, touched, flipped)
        return flipped

    # --- chains -------------------------------------------------------------------------

    def _put_chain(self, name: str, chain: Chain | None, touched: set[str]) -> None:
        old = self._chains.get(name)
        if chain is None:
            if old is not None:
                del self._chains[name]
                del self._states[name]
                touched.add(name)
            return
        if old != chain:
            self._chains[name] = chain
            self._states[name] = chain.state
            touched.add(name)

    def _update_endpoints(self, model: PolicyModel, eff: Effective, changes: Changes | None, touched: set[str]) -> None:
        """Bring the endpoints' chains and map entries up to date."""
        for key in model.endpoints if changes is None else changes.endpoints:
            resolved = model.endpoints.get(key)
            self._endpoints.put(key, endpoint_part(resolved, eff) if resolved is not None else None)
        for slot in self._endpoints.take_moved():
            value = self._endpoints.value(slot)
            if slot[0] == "chain":
                self._put_chain(slot[1], value, touched)
            elif slot[0] == "entry":
                entries = self._maps[slot[1]]
                if value is None:
                    entries.pop(slot[2], None)
                else:
                    entries[slot[2]] = value
            elif value is None:
                self._all_iface.pop(slot[1], None)
            else:
                self._all_iface[slot[1]] = value

    def _target_chain(self, ref: Ref, model: PolicyModel, eff: Effective) -> tuple[Chain, frozenset[str]]:
        """A jump target's chain, and the names of the sets its rules may refer to."""
        if ref[0] == "grp":
            _, direction, tier, keys, untracked = ref
            name = group_chain_name(direction, tier, keys)
            return make_chain(name, group_rules(direction, tier, keys, untracked=untracked)), frozenset()
        if ref[0] == "pol":
            _, direction, tier, key = ref
            owner = model.policies[key]
            name = names.policy_chain(direction, tier, key)
            early = owner.do_not_track or owner.pre_dnat
        else:
            _, direction, profile = ref
            owner = model.profiles[profile]
            name = names.profile_chain(direction, profile)
            early = False
        rules = owner.rules(direction)
        used = frozenset(n for rule in rules for n in rule_set_names(rule, eff.versions))
        return make_chain(name, policy_rules(rules, eff, self._sets, early=early)), used

    def _update_target(self, ref: Ref, model: PolicyModel, eff: Effective, touched: set[str]) -> None:
        old = self._made.pop(ref, None)
        if old is not None:
            for name in old[1]:
                self._set_users[name].discard(ref)
        if not self._endpoints.wanted(ref):
            if old is not None:
                self._put_chain(old[0].name, None, touched)
            return
        chain, used = self._made[ref] = self._target_chain(ref, model, eff)
        for name in used:
            self._set_users.setdefault(name, set()).add(ref)
        self._put_chain(chain.name, chain, touched)

    def _update_static(self, eff: Effective, touched: set[str]) -> None:
        """The base, dispatch, failsafe and NAT chains, made again when what they depend on moved."""
        depends = [names.WL_SOURCES[v] for v in (4, 6)]
        depends += [names.set_name(ids.MASQ_POOLS_SET, v) for v in (4, 6)]
        key = (eff, tuple(sorted(self._all_iface.items())), tuple(n in self._sets for n in depends))
        if key == self._static_key:
            return
        self._static_key = key
        for chain in static_chains(eff, self._all_iface, self._sets):
            self._put_chain(chain.name, chain, touched)
