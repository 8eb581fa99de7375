"""What each endpoint puts into a rendered table, kept as endpoints come, change and go.

Both dataplanes render a table whose endpoint parts are independent of each other: an
endpoint's own chains and dispatch entries (*slots*: a value under a name) and what its
chains jump to (*refs*: policy, profile and group chains, made while any endpoint needs
them). A :class:`Tally` keeps those contributions per owner, so that a pass replaces only
the owners that changed and learns which slots and refs moved.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable

import attrs

from pycalico.core.policy.model import Changes


@attrs.frozen
class Contribution:
    """One owner's part: ``slots`` as (name, value) pairs, ``refs`` it needs (repeats count once)."""

    slots: tuple[tuple[Hashable, object], ...] = ()
    refs: frozenset = frozenset()


class Tally:
    """Owners' contributions. Where several owners claim a slot, the smallest owner's value
    wins (so the result is the same whatever order the updates came in).

    ``source_of(ref)`` names the policy (``("pol", key)``) or profile (``("pro", name)``)
    whose rules a ref's chain holds, or None; :meth:`redo` uses it.
    """

    def __init__(self, source_of: Callable[[Hashable], Hashable | None]) -> None:
        self._source_of = source_of
        self._by_source: dict[Hashable, set] = {}
        self._parts: dict[Hashable, Contribution] = {}
        self._claims: dict[Hashable, dict[Hashable, object]] = {}
        self._counts: Counter = Counter()
        self._moved_slots: set = set()
        self._moved_refs: set = set()

    def put(self, owner: Hashable, part: Contribution | None) -> None:
        """Replace what ``owner`` contributes (None: it is gone)."""
        old = self._parts.pop(owner, None)
        if old is not None:
            for slot, _ in old.slots:
                claims = self._claims[slot]
                del claims[owner]
                if not claims:
                    del self._claims[slot]
                self._moved_slots.add(slot)
            for ref in old.refs:
                self._counts[ref] -= 1
                if not self._counts[ref]:
                    del self._counts[ref]
                    self._moved_refs.add(ref)
                    source = self._source_of(ref)
                    if source is not None:
                        self._by_source[source].discard(ref)
        if part is None:
            return
        self._parts[owner] = part
        for slot, value in part.slots:
            self._claims.setdefault(slot, {})[owner] = value
            self._moved_slots.add(slot)
        for ref in part.refs:
            if not self._counts[ref]:
                self._moved_refs.add(ref)
                source = self._source_of(ref)
                if source is not None:
                    self._by_source.setdefault(source, set()).add(ref)
            self._counts[ref] += 1

    def value(self, slot: Hashable):
        """The winning value of ``slot``, None when nobody claims it."""
        claims = self._claims.get(slot)
        return claims[min(claims)] if claims else None

    def wanted(self, ref: Hashable) -> bool:
        return ref in self._counts

    def take_moved(self) -> set:
        """The slots whose claims changed since the last call (a superset: a slot may have
        kept its value)."""
        moved, self._moved_slots = self._moved_slots, set()
        return moved

    def redo(self, changes: Changes | None) -> set:
        """The refs whose chains a pass must make (again) or remove: those that gained their
        first or lost their last owner since the last call, and the wanted ones whose
        policy or profile ``changes`` lists."""
        redo, self._moved_refs = self._moved_refs, set()
        if changes is not None:
            for kind, keys in (("pol", changes.policies), ("pro", changes.profiles)):
                for key in keys:
                    redo |= self._by_source.get((kind, key), set())
        return redo
