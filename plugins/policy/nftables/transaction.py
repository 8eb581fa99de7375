"""The one ``nft -f`` script that takes the kernel's table to the desired one.

Only what differs is in it: set and map elements are added and deleted one by one; a
changed chain is flushed and its rules added again; an unchanged object is not mentioned.
The order follows Felix's (``felix/calc/event_sequencer.go``): sets before the chains that
use them, chains before the map elements that point at them, and deletions in reverse
(map elements, then chains, flushed first, then sets). A set or map of the wrong type, or
a table that is missing, means writing the whole table.

Each change is one report line; a difference that the previous pass did not cause (the
kernel no longer holds what was written) is reported as ``repaired``.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .names import FAMILY, TABLE
from .render import PRIORITY_NAMES, Chain
from .state import MapState, SetState, TableState
from .table import Desired

T = f"{FAMILY} {TABLE}"
CHUNK = 1000  # elements per add/delete element command


@attrs.frozen
class Plan:
    text: str
    lines: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.text


def _set_decl(name: str, st: SetState) -> str:
    flags = f" flags {', '.join(sorted(st.flags))};" if st.flags else ""
    return f"add set {T} {name} {{ type {' . '.join(st.type)};{flags} }}"


def _map_decl(name: str, ms: MapState) -> str:
    colon = ms.type.index(":")
    return f"add map {T} {name} {{ type {' . '.join(ms.type[:colon])} : {' . '.join(ms.type[colon + 1:])}; }}"


def _elements(verb: str, name: str, items: Iterable[str]) -> list[str]:
    items = sorted(items)
    return [f"{verb} element {T} {name} {{ {', '.join(items[i:i + CHUNK])} }}" for i in range(0, len(items), CHUNK)]


def _chain_decl(chain: Chain) -> str:
    if chain.base is None:
        return f"add chain {T} {chain.name}"
    type_, hook, prio, policy = chain.base
    return f"add chain {T} {chain.name} {{ type {type_} hook {hook} priority {PRIORITY_NAMES.get(prio, prio)}; policy {policy}; }}"


def _rules(chain: Chain) -> list[str]:
    return [f'add rule {T} {chain.name} {rule} comment "{c}"' for rule, c in zip(chain.rules, chain.comments, strict=True)]


def full(desired: Desired, *, delete_first: bool = False) -> list[str]:
    """The commands that create the whole table (after deleting the old one)."""
    out = [f"delete table {T}"] if delete_first else []
    out.append(f"add table {T}")
    for name, st in desired.sets.items():
        out.append(_set_decl(name, st))
        out += _elements("add", name, st.elements)
    for name, ms in desired.maps.items():
        out.append(_map_decl(name, ms))
    out += [_chain_decl(c) for c in desired.chains.values()]
    for chain in desired.chains.values():
        out += _rules(chain)
    for name, ms in desired.maps.items():
        out += _elements("add", name, (f"{k} : {v}" for k, v in ms.elements.items()))
    return out


def _summary(desired: Desired) -> str:
    return f"{len(desired.chains)} chains, {len(desired.sets)} sets, {len(desired.maps)} maps"


def _map_problem(desired: Desired, actual: TableState) -> str | None:
    for name, ms in desired.maps.items():
        have = actual.maps.get(name)
        if have is not None and have.type != ms.type:
            return f"map {name} has type {' '.join(have.type)}"
        if name in actual.sets:
            return f"{name} is a set, not a map"
    for name in desired.sets:
        if name in actual.maps:
            return f"{name} is a map, not a set"
    return None


def _references(chain: Chain, set_names: set[str]) -> bool:
    return any(word[1:] in set_names for rule in chain.rules for word in rule.split() if word.startswith("@"))


def plan(
    desired: Desired,
    actual: TableState | None,
    previous: TableState | None = None,
    *,
    rebuild: str = "",
    only_touched: bool = False,
) -> Plan:
    """The script from ``actual`` (None: no table) to ``desired``; ``previous`` is what the
    last successful pass wrote, to tell repairs from changes. ``rebuild`` (a reason) forces
    writing the whole table. ``only_touched``: ``actual`` is known to be the renderer's
    previous result, so only the chains and sets ``desired.touched`` names can differ
    (maps, a few, are always compared).

    A set whose type or flags must change (a selector's set gains its first CIDR and
    becomes an interval set) is deleted and made again: every chain that refers to it, or
    differs anyway, is flushed first and refilled after.
    """
    if actual is None:
        verb = "repaired (the table was missing)" if previous is not None else "created"
        return Plan("\n".join(full(desired)) + "\n", (f"nft table {T} {verb}: {_summary(desired)}",))
    problem = rebuild or _map_problem(desired, actual)
    if problem:
        return Plan("\n".join(full(desired, delete_first=True)) + "\n", (f"nft table {T} rebuilt ({problem}): {_summary(desired)}",))

    if only_touched and desired.touched is not None:
        chain_names, set_names = sorted(desired.touched.chains), sorted(desired.touched.sets)
    else:
        chain_names = [*desired.chains, *(n for n in actual.chains if n not in desired.chains)]
        set_names = [*desired.sets, *(n for n in actual.sets if n not in desired.sets)]
    prev_chains = previous.chains if previous is not None else {}
    prev_sets = previous.sets if previous is not None else {}
    prev_maps = previous.maps if previous is not None else {}
    pre: list[str] = []
    sets_out: list[str] = []
    maps_decl: list[str] = []
    chain_decl: list[str] = []
    chain_rules: list[str] = []
    map_elems: list[str] = []
    removals: list[str] = []
    lines: list[str] = []

    def repaired(prev, want) -> bool:
        return prev is not None and (prev is want or prev == want)

    retyped = set()
    for name in set_names:
        st, have = desired.sets.get(name), actual.sets.get(name)
        if st is not None and have is not None and (have.type != st.type or have.flags != st.flags):
            retyped.add(name)
    have_chains = actual.chains
    changed = []
    for name in chain_names:
        chain, have = desired.chains.get(name), have_chains.get(name)
        if chain is not None and have is not None and have is not chain.state and have != chain.state:
            changed.append(name)
    stale_chains = sorted(n for n in chain_names if n in actual.chains and n not in desired.chains)
    stale_sets = sorted(n for n in set_names if n in actual.sets and n not in desired.sets)
    flushed: set[str] = set()
    if retyped:
        # Nothing may refer to a set that is deleted: empty every chain that does (or may).
        referring = {n for n, c in desired.chains.items() if n in actual.chains and _references(c, retyped)}
        flushed = set(changed) | referring | set(stale_chains)
        pre += [f"flush chain {T} {name}" for name in sorted(flushed)]
        pre += [f"delete set {T} {name}" for name in sorted(retyped)]
        changed = sorted(set(changed) | referring)
        chain_names = [*chain_names, *sorted(referring.difference(chain_names))]

    # Sets: new ones, then element differences.
    for name in set_names:
        st, have = desired.sets.get(name), actual.sets.get(name)
        if st is None:
            continue
        if have is None or name in retyped:
            sets_out.append(_set_decl(name, st))
            sets_out += _elements("add", name, st.elements)
            if name in retyped:
                kind = "interval set" if "interval" in st.flags else "set"
                lines.append(f"nft set {name} made again as an {kind} of {' . '.join(st.type)} ({len(st.elements)} elements)")
            else:
                note = " (repaired: it was missing)" if repaired(prev_sets.get(name), st) else ""
                lines.append(f"nft set {name} added ({len(st.elements)} elements){note}")
            continue
        if have is st or have.elements == st.elements:
            continue
        extra, missing = have.elements - st.elements, st.elements - have.elements
        sets_out += _elements("delete", name, extra)
        sets_out += _elements("add", name, missing)
        note = " (repaired)" if repaired(prev_sets.get(name), st) else ""
        lines.append(f"nft set {name}: +{len(missing)} -{len(extra)} elements{note}")

    # Maps: declared with the sets, elements once their chains exist (stale ones first).
    stale_elems: list[str] = []
    new_elems: list[str] = []
    for name, ms in desired.maps.items():
        have = actual.maps.get(name)
        want = dict(ms.elements)
        if have is None:
            maps_decl.append(_map_decl(name, ms))
            new_elems += _elements("add", name, (f"{k} : {v}" for k, v in want.items()))
            lines.append(f"nft map {name} added ({len(want)} elements)")
            continue
        got = dict(have.elements)
        if got == want:
            continue
        stale = [k for k, v in got.items() if want.get(k) != v]
        new = [f"{k} : {v}" for k, v in want.items() if got.get(k) != v]
        stale_elems += _elements("delete", name, stale)
        new_elems += _elements("add", name, new)
        note = " (repaired)" if repaired(prev_maps.get(name), ms) else ""
        lines.append(f"nft map {name}: +{len(new)} -{len(stale)} elements{note}")
    map_elems = stale_elems + new_elems

    # Chains: declare new ones, flush and refill changed ones.
    changed_set = set(changed)
    for name in chain_names:
        chain, have = desired.chains.get(name), actual.chains.get(name)
        if chain is None:
            continue
        if have is None:
            chain_decl.append(_chain_decl(chain))
            chain_rules += _rules(chain)
            note = " (repaired: it was missing)" if repaired(prev_chains.get(name), chain.state) else ""
            lines.append(f"nft chain {name} added ({len(chain.rules)} rules){note}")
            continue
        if name not in changed_set:
            continue
        if have.base != chain.base:
            # A base chain's hook cannot be changed in place; nothing jumps to base chains.
            chain_decl += [f"flush chain {T} {name}", f"delete chain {T} {name}", _chain_decl(chain)]
        elif name not in flushed:
            chain_rules.append(f"flush chain {T} {name}")
        chain_rules += _rules(chain)
        if have == chain.state:
            lines.append(f"nft chain {name} rewritten ({len(chain.rules)} rules): a set it uses was made again")
        else:
            note = " (repaired)" if repaired(prev_chains.get(name), chain.state) else ""
            lines.append(f"nft chain {name} updated ({len(chain.rules)} rules){note}")

    # Deletions, in reverse order of use: maps (their elements point at chains), chains
    # (flushed first, so that none still jumps to another), sets, then anything foreign.
    for name in sorted(actual.maps.keys() - desired.maps.keys()):
        removals.append(f"delete map {T} {name}")
        lines.append(f"nft map {name} deleted")
    removals += [f"flush chain {T} {name}" for name in stale_chains if name not in flushed]
    removals += [f"delete chain {T} {name}" for name in stale_chains]
    lines += [f"nft chain {name} deleted" for name in stale_chains]
    for name in stale_sets:
        removals.append(f"delete set {T} {name}")
        lines.append(f"nft set {name} deleted")
    for obj in actual.foreign:
        removals.append(f"delete {obj.kind} {T} {obj.name}")
        lines.append(f"nft {obj.kind} {obj.name} deleted (this plugin does not make it)")

    script = pre + sets_out + maps_decl + chain_decl + chain_rules + map_elems + removals
    if not script:
        return Plan("", ())
    return Plan("\n".join(script) + "\n", tuple(lines))
