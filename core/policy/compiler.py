"""``Compiler``: a node's :class:`~.model.PolicyModel`, recompiled only where its inputs moved.

A reconcile pass hands the whole desired state; between two passes a few resources
change. The compiler keeps what it made last time and redoes only what depends on
what changed, as Felix's calculation graph does (``felix/calc/``):

* resources are compared with last pass's by identity (the loop's cache keeps unchanged
  objects), then by value (a fresh snapshot after a resync holds equal copies);
* a changed policy is normalised again; endpoints are re-resolved only when its
  selector, tier, order, types or flags moved, and then only those its old or new
  selector matches (a selector's matches are indexed, a changed endpoint is run through
  every selector once);
* a changed endpoint (or a profile whose labels it inherits) is rebuilt, re-resolved and
  put in the set index (:class:`~.ipsets.SetIndex`), which rebuilds the sets it is in;
* the active policies and profiles (those some local endpoint uses) are counted, so a
  set is computed when the first active rule refers to it and dropped with the last.

A model compiled from scratch (:func:`compile`, or the first pass) and one reached by any
sequence of changes are equal. If a pass fails half-way, the compiler forgets everything
and the next pass starts from scratch.
"""

from __future__ import annotations

import ipaddress
import itertools
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from pycalico.core.policy import ipsets
from pycalico.core.policy.endpoints import (
    NAMESPACE_PROFILE_PREFIX,
    Endpoint,
    EndpointKey,
    endpoint_source,
    host_endpoint,
    network_set_source,
    workload_endpoint,
)
from pycalico.core.policy.model import AntiSpoof, Changes, NatOutgoing, PolicyModel, Scope, felix_settings
from pycalico.core.policy.resolve import TierOrder, tiers_from
from pycalico.core.policy.rules import (
    DEFAULT_ALLOW_PROFILE,
    Policy,
    Profile,
    default_allow_profile,
    missing_profile,
    normalise_policy,
    normalise_profile,
    policy_key,
)
from pycalico.core.resources.types import parse_cidr
from pycalico.core.selector import parse

ResourceKey = tuple[str, str]  # namespace ("" when cluster-wide), name
ENDPOINT_KINDS = ("WorkloadEndpoint", "HostEndpoint")
NETWORK_SET_KINDS = ("NetworkSet", "GlobalNetworkSet")
POLICY_KINDS = ("NetworkPolicy", "GlobalNetworkPolicy")
_SERIALS = itertools.count(1)  # model numbers, unique in the process


def _key(resource: Any) -> ResourceKey:
    meta = resource.metadata
    return meta.namespace or "", meta.name


class _Seen:
    """The resources of one kind as the last pass saw them, to tell what changed."""

    def __init__(self) -> None:
        self.items: tuple = ()
        self.by_key: dict[ResourceKey, Any] = {}

    def update(self, items: tuple) -> list[tuple[ResourceKey, Any, Any]]:
        """``(key, old, new)`` for every resource added (old None), removed (new None) or changed."""
        old_items = self.items
        self.items = items
        if items is old_items:
            return []
        if len(items) == len(old_items):
            # The usual pass: the same resources in the same (sorted) order, a few replaced.
            moved = [i for i, (a, b) in enumerate(zip(old_items, items)) if a is not b]
            if all(_key(old_items[i]) == _key(items[i]) for i in moved):
                changes = []
                for i in moved:
                    old, new = old_items[i], items[i]
                    key = _key(new)
                    self.by_key[key] = new
                    if old != new:
                        changes.append((key, old, new))
                return changes
        by_key = {}
        changes = []
        for new in items:
            key = _key(new)
            by_key[key] = new
            old = self.by_key.get(key)
            if old is not new and (old is None or old != new):
                changes.append((key, old, new))
        changes += [(key, old, None) for key, old in self.by_key.items() if key not in by_key]
        self.by_key = by_key
        return changes


class _Ordered:
    """A dict kept in key order: values replaced in place, sorted again only when keys come."""

    def __init__(self) -> None:
        self.data: dict = {}
        self._unsorted = False

    def get(self, key):
        return self.data.get(key)

    def put(self, key, value) -> None:
        if value is None:
            self.data.pop(key, None)
            return
        if key not in self.data:
            self._unsorted = True
        self.data[key] = value

    def view(self) -> dict:
        if self._unsorted:
            self.data = dict(sorted(self.data.items()))
            self._unsorted = False
        return self.data


def _set_specs(owner: Policy | Profile) -> Iterable[ipsets.SetSpec]:
    """The sets an owner's rules refer to, each once."""
    return {spec.id: spec for rule in (*owner.ingress, *owner.egress) for spec in rule.sets}.values()


def _placement(policy: Policy | None) -> tuple | None:
    """What decides where a policy sits in endpoint chains (not its rules)."""
    if policy is None:
        return None
    return (
        policy.selector,
        policy.tier,
        policy.sort_key,
        policy.governs_ingress,
        policy.governs_egress,
        policy.do_not_track,
        policy.pre_dnat,
        policy.apply_on_forward,
    )


class Compiler:
    """Compiles the desired states of one node, pass after pass (see the module docstring).

    ``scope="node"`` resolves the endpoints on ``state.node_name`` (what a dataplane
    programs); ``scope="cluster"`` every endpoint of the cluster, as a packet judge needs
    to apply both ends' policy. Thread-safe: passes are serialised.
    """

    def __init__(self, scope: Scope = "node") -> None:
        self.scope = scope
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, node: str | None) -> None:
        self._node = node
        self._seen: dict[str, _Seen] = {}
        self._profile_labels: dict[str, dict] = {}
        self._profile_objects: dict[str, Profile] = {}  # normalised, for the names seen
        self._inheritors: dict[str, set[tuple[str, ResourceKey]]] = {}  # profile -> (kind, key) taking its labels
        self._endpoints = _Ordered()  # EndpointKey -> Endpoint, every node's
        self._labels: dict[EndpointKey, dict[str, str]] = {}  # local (in scope) endpoints' labels
        self._policies: dict[str, Policy] = {}
        self._tier_refs: Counter[str] = Counter()
        self._selectors: dict[str, set[str]] = {}  # policy selector -> keys of the policies with it
        self._selected: dict[str, set[EndpointKey]] = {}  # policy selector -> in-scope endpoints it matches
        self._matches: dict[EndpointKey, set[str]] = {}  # in-scope endpoint -> policy selectors matching it
        self._tiers: TierOrder | None = None
        self._resolved = _Ordered()  # EndpointKey -> ResolvedEndpoint
        self._policy_users: Counter[str] = Counter()
        self._profile_users: Counter[str] = Counter()
        self._active_policies = _Ordered()
        self._active_profiles = _Ordered()
        self._sets = ipsets.SetIndex()
        self._anti_spoofing: tuple[AntiSpoof, ...] = ()
        self._spoofing: bool | None = None  # the setting the anti-spoofing list was made for
        self._local_workloads_moved = True
        self._last: PolicyModel | None = None  # what the previous pass returned
        self._changed: dict[str, set] = {"policies": set(), "profiles": set(), "endpoints": set()}

    def compile(self, state) -> PolicyModel:
        """The model of ``state`` (a :class:`~pycalico.core.calc.DesiredState`)."""
        with self._lock:
            if state.node_name != self._node:
                self._reset(state.node_name)
            try:
                return self._compile(state)
            except BaseException:
                self._reset(None)
                raise

    def _changes(self, state, kind: str) -> list[tuple[ResourceKey, Any, Any]]:
        seen = self._seen.get(kind)
        if seen is None:
            seen = self._seen[kind] = _Seen()
        return seen.update(state.of_kind(kind))

    def _current(self, kind: str, key: ResourceKey) -> Any:
        return self._seen[kind].by_key.get(key)

    # --- one pass ---------------------------------------------------------------------

    def _compile(self, state) -> PolicyModel:
        settings, failsafe = felix_settings(state)
        relabelled, profiles_changed = self._profiles(state)
        moved_endpoints = self._endpoints_and_sets(state, relabelled)
        self._reindex_endpoints(moved_endpoints)
        policies_changed, dirty = self._policies_of(state)
        dirty |= moved_endpoints
        order = TierOrder(tiers_from(state.of_kind("Tier")), (t for t, n in self._tier_refs.items() if n))
        if self._tiers is None or order.tiers != self._tiers.tiers:
            dirty = set(self._matches) | {k for k in self._resolved.data}
        self._tiers = order
        users_moved = self._resolve(dirty)
        self._activate(policies_changed | users_moved[0], profiles_changed | users_moved[1])
        rules_sets = self._sets.sets()

        last = self._last
        pools = [(parse_cidr(p.spec.cidr)[1], bool(p.spec.nat_outgoing)) for p in state.of_kind("IPPool") if p.spec.cidr]
        nat = NatOutgoing(*ipsets.pool_sets(pools))
        if last is not None and nat == last.nat:
            nat = last.nat
        # The pool sets, then the rules' sets by id.
        ip_sets = {nat.all_pools.id: nat.all_pools, nat.masq_pools.id: nat.masq_pools, **rules_sets}

        spoofing = settings.workload_source_spoofing == "Any"
        if spoofing != self._spoofing or self._local_workloads_moved:
            self._anti_spoofing = self._anti_spoof(spoofing)
            self._spoofing, self._local_workloads_moved = spoofing, False

        model = PolicyModel(
            node_name=self._node,
            scope=self.scope,
            settings=settings,
            tiers=order.tiers,
            policies=self._active_policies.view(),
            profiles=self._active_profiles.view(),
            ip_sets=ip_sets,
            endpoints=self._resolved.view(),
            all_endpoints=self._endpoints.view(),
            failsafe=failsafe,
            nat=nat,
            anti_spoofing=self._anti_spoofing,
            serial=next(_SERIALS),
            changes=self._changes_since(last, settings, failsafe, order, nat),
        )
        self._last = model
        return model

    def _changes_since(self, last: PolicyModel | None, settings, failsafe, order: TierOrder, nat) -> Changes | None:
        changed, self._changed = self._changed, {"policies": set(), "profiles": set(), "endpoints": set()}
        set_ids = self._sets.take_changed()
        if last is None:
            return None
        if nat is not last.nat:
            set_ids |= {nat.all_pools.id, nat.masq_pools.id}
        rest = (
            settings != last.settings
            or failsafe != last.failsafe
            or order.tiers != last.tiers
            or nat is not last.nat
            or self._anti_spoofing != last.anti_spoofing
        )
        return Changes(
            since=last.serial,
            policies=frozenset(changed["policies"]),
            profiles=frozenset(changed["profiles"]),
            endpoints=frozenset(changed["endpoints"]),
            ip_sets=frozenset(set_ids),
            rest=rest,
        )

    def _profiles(self, state) -> tuple[set[str], set[str]]:
        """Profiles: (names whose labels changed, names whose resource changed)."""
        relabelled, changed = set(), set()
        for (_, name), _old, new in self._changes(state, "Profile"):
            labels = dict(new.spec.labels_to_apply or {}) if new is not None else {}
            if labels != self._profile_labels.get(name, {}):
                relabelled.add(name)
            if new is None:
                self._profile_labels.pop(name, None)
            else:
                self._profile_labels[name] = labels
            self._profile_objects.pop(name, None)
            changed.add(name)
        return relabelled, changed

    def _inherit(self, kind: str, key: ResourceKey, old: tuple[str, ...], new: tuple[str, ...]) -> None:
        for name in old:
            self._inheritors.get(name, set()).discard((kind, key))
        for name in new:
            self._inheritors.setdefault(name, set()).add((kind, key))

    def _endpoints_and_sets(self, state, relabelled: set[str]) -> set[EndpointKey]:
        """Rebuild changed endpoints and network sets, feeding the set index; the keys of
        the endpoints that changed."""
        redo: dict[tuple[str, ResourceKey], Any] = {}
        for kind in (*ENDPOINT_KINDS, *NETWORK_SET_KINDS):
            for key, _old, new in self._changes(state, kind):
                redo[(kind, key)] = new
        for name in relabelled:
            for kind, key in self._inheritors.get(name, ()):
                redo.setdefault((kind, key), self._current(kind, key))
        moved: set[EndpointKey] = set()
        labels = self._profile_labels
        for (kind, key), res in redo.items():
            if kind in NETWORK_SET_KINDS:
                profiles = (NAMESPACE_PROFILE_PREFIX + key[0],) if key[0] else ()
                self._inherit(kind, key, profiles, profiles if res is not None else ())
                source = network_set_source(res, labels) if res is not None else None
                self._sets.put_source((kind, *key), source)
                continue
            ep_key = EndpointKey(kind, *key)
            old = self._endpoints.get(ep_key)
            if kind == "WorkloadEndpoint":
                new = workload_endpoint(res, labels) if res is not None else None
            else:
                new = host_endpoint(res, labels) if res is not None else None
            self._inherit(kind, key, old.profiles if old else (), new.profiles if new else ())
            if new == old:
                continue
            self._endpoints.put(ep_key, new)
            self._sets.put_source(ep_key, endpoint_source(new) if new is not None else None)
            moved.add(ep_key)
            if self._local_workload(old) or self._local_workload(new):
                self._local_workloads_moved = True
        return moved

    def _in_scope(self, endpoint: Endpoint | None) -> bool:
        return endpoint is not None and (self.scope == "cluster" or endpoint.node == self._node)

    def _local_workload(self, endpoint: Endpoint | None) -> bool:
        return endpoint is not None and endpoint.is_workload and endpoint.node == self._node

    def _reindex_endpoints(self, moved: set[EndpointKey]) -> None:
        """Run the moved endpoints through the policy selectors."""
        for key in moved:
            for selector in self._matches.pop(key, ()):
                self._selected[selector].discard(key)
            self._labels.pop(key, None)
            endpoint = self._endpoints.get(key)
            if not self._in_scope(endpoint):
                continue
            labels = self._labels[key] = endpoint.label_map
            matching = {s for s in self._selectors if parse(s).evaluate(labels)}
            for selector in matching:
                self._selected[selector].add(key)
            self._matches[key] = matching

    def _policies_of(self, state) -> tuple[set[str], set[EndpointKey]]:
        """Policies: (keys whose content changed, endpoints to resolve again)."""
        changed: set[str] = set()
        dirty: set[EndpointKey] = set()
        for kind in POLICY_KINDS:
            for (namespace, name), _old, res in self._changes(state, kind):
                key = policy_key(kind, namespace, name)
                old = self._policies.get(key)
                new = normalise_policy(res) if res is not None else None
                if new is old or (new is not None and old is not None and new.id == old.id):
                    continue
                changed.add(key)
                if new is None:
                    del self._policies[key]
                else:
                    self._policies[key] = new
                if _placement(old) == _placement(new):
                    continue
                if old is not None:
                    self._tier_refs[old.tier] -= 1
                    dirty |= self._selected[old.selector]
                    self._unindex(old)
                if new is not None:
                    self._tier_refs[new.tier] += 1
                    self._index(new)
                    dirty |= self._selected[new.selector]
        return changed, dirty

    def _index(self, policy: Policy) -> None:
        keys = self._selectors.get(policy.selector)
        if keys is None:
            keys = self._selectors[policy.selector] = set()
            evaluate = parse(policy.selector).evaluate
            selected = {k for k, labels in self._labels.items() if evaluate(labels)}
            self._selected[policy.selector] = selected
            for key in selected:
                self._matches[key].add(policy.selector)
        keys.add(policy.key)

    def _unindex(self, policy: Policy) -> None:
        keys = self._selectors[policy.selector]
        keys.discard(policy.key)
        if keys:
            return
        del self._selectors[policy.selector]
        for key in self._selected.pop(policy.selector):
            self._matches[key].discard(policy.selector)

    def _resolve(self, keys: set[EndpointKey]) -> tuple[set[str], set[str]]:
        """Resolve ``keys`` again; the policies and profiles that gained or lost their
        first or last user."""
        assert self._tiers is not None
        policies, profiles = set(), set()
        self._changed["endpoints"].update(k for k in keys if k in self._matches or self._resolved.get(k) is not None)
        for key in keys:
            old = self._resolved.get(key)
            if key in self._matches:
                matched = (self._policies[k] for s in self._matches[key] for k in self._selectors[s])
                new = self._tiers.resolve(self._endpoints.get(key), matched)
                if new == old:
                    continue
            else:
                new = None
            self._resolved.put(key, new)
            for counter, moved, before, after in (
                (self._policy_users, policies, old.policy_keys if old else (), new.policy_keys if new else ()),
                (self._profile_users, profiles, old.endpoint.profiles if old else (), new.endpoint.profiles if new else ()),
            ):
                for name in before:
                    counter[name] -= 1
                    if not counter[name]:
                        del counter[name]
                        moved.add(name)
                for name in after:
                    if not counter[name]:
                        moved.add(name)
                    counter[name] += 1
        return policies, profiles

    def _profile(self, name: str) -> Profile:
        profile = self._profile_objects.get(name)
        if profile is None:
            resource = self._current("Profile", ("", name))
            if resource is not None:
                profile = normalise_profile(resource)
            elif name == DEFAULT_ALLOW_PROFILE:
                profile = default_allow_profile()
            else:
                profile = missing_profile(name)
            self._profile_objects[name] = profile
        return profile

    def _activate(self, policies: set[str], profiles: set[str]) -> None:
        """Bring the active policies and profiles, and the sets they want, up to date."""
        for active, names, make, changed in (
            (self._active_policies, policies, lambda k: self._policies[k] if self._policy_users[k] else None,
             self._changed["policies"]),
            (self._active_profiles, profiles, lambda n: self._profile(n) if self._profile_users[n] else None,
             self._changed["profiles"]),
        ):
            for name in names:
                old, new = active.get(name), make(name)
                if old is new or (old is not None and new is not None and old.id == new.id):
                    continue
                for spec in _set_specs(new) if new is not None else ():
                    self._sets.want(spec)
                for spec in _set_specs(old) if old is not None else ():
                    self._sets.unwant(spec)
                active.put(name, new)
                changed.add(name)

    def _anti_spoof(self, spoofing: bool) -> tuple[AntiSpoof, ...]:
        return tuple(
            AntiSpoof(
                endpoint=ep.key,
                interface=ep.interface,
                addresses=tuple(str(ipaddress.ip_network(a)) for a in ep.addresses),
                allowed_prefixes=ep.allow_spoofed_source_prefixes if spoofing else (),
            )
            for ep in self._endpoints.view().values()
            if ep.is_workload and ep.node == self._node
        )


def compile(state, *, scope: Scope = "node") -> PolicyModel:  # shadows the builtin inside this module only
    """Compile ``state`` (a :class:`~pycalico.core.calc.DesiredState`) from scratch; see
    :class:`Compiler` for the scopes, and for compiling pass after pass."""
    return Compiler(scope).compile(state)
