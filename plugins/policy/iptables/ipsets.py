"""IP sets: what to write so that the kernel's ``cali40*`` / ``cali60*`` sets match the rules.

Felix's way (``felix/ipsets/ipsets.go``): one ``ipset restore`` for everything that is
created or changes, before the iptables rules that use the sets are written; sets nobody
uses any more are destroyed after them. A set that exists with the right type is
updated member by member (``add`` / ``del``); one whose parameters differ (``maxelem``)
is filled under a temporary name (``cali4t<n>``) and swapped in, so that rules using it
never see it half-filled; one of another type (which no swap can fix) is destroyed and
created again.
"""

from __future__ import annotations

import attrs

from .kernel import SetState
from .ruleset import DesiredSet


@attrs.define
class SetPlan:
    lines: list[str]  # create / update, before iptables
    stale: list[str]  # destroy, after iptables
    changes: list[str]
    result: dict[str, SetState]  # our sets once the lines are applied (stale ones still there)


def _create(name: str, want: DesiredSet) -> str:
    return f"create {name} {want.set_type} family {want.family} maxelem {want.maxelem}"


def _temp_names(have: dict[str, SetState]):
    counters = {"inet": 0, "inet6": 0}

    def next_name(family: str) -> str:
        prefix = "cali4t" if family == "inet" else "cali6t"
        while True:
            name = f"{prefix}{counters[family]}"
            counters[family] += 1
            if name not in have:
                return name

    return next_name


def plan_sets(want: dict[str, DesiredSet], have: dict[str, SetState], names: frozenset[str] | None = None) -> SetPlan:
    """What to write for ``want``; ``names``: only these sets can differ from ``have``."""
    lines: list[str] = []
    changes: list[str] = []
    result = dict(have)
    temp = _temp_names(have)
    todo = []
    for name in want if names is None else (n for n in names if n in want):
        w, h = want[name], have.get(name)
        if h is None or h.members is not w.members or h.set_type != w.set_type or h.family != w.family \
                or h.maxelem != w.maxelem:
            todo.append(name)
    for name in sorted(todo):
        w, h = want[name], have.get(name)
        if h is not None and h.set_type == w.set_type and h.family == w.family and h.maxelem == w.maxelem:
            if h.members == w.members:
                continue
            added = w.members - h.members
            removed = h.members - w.members
            lines.extend(f"del {name} {m}" for m in sorted(removed))
            lines.extend(f"add {name} {m}" for m in sorted(added))
            parts = []
            if added:
                parts.append(f"{len(added)} member{'s' if len(added) != 1 else ''} added")
            if removed:
                parts.append(f"{len(removed)} member{'s' if len(removed) != 1 else ''} removed")
            changes.append(f"ipset {name} {', '.join(parts)}")
        elif h is None:
            lines.append(_create(name, w))
            lines.extend(f"add {name} {m}" for m in sorted(w.members))
            changes.append(f"ipset {name} created with {len(w.members)} member{'s' if len(w.members) != 1 else ''}")
        elif h.set_type == w.set_type and h.family == w.family:
            tmp = temp(w.family)
            lines.append(_create(tmp, w))
            lines.extend(f"add {tmp} {m}" for m in sorted(w.members))
            lines += [f"swap {tmp} {name}", f"destroy {tmp}"]
            changes.append(f"ipset {name} rewritten through {tmp} (maxelem {h.maxelem} -> {w.maxelem})")
        else:
            lines += [f"destroy {name}", _create(name, w)]
            lines.extend(f"add {name} {m}" for m in sorted(w.members))
            changes.append(f"ipset {name} recreated ({h.set_type} {h.family} -> {w.set_type} {w.family})")
        result[name] = SetState(name, w.set_type, w.family, w.maxelem, w.members)
    stale = sorted(n for n in (have if names is None else names) if n in have and n not in want)
    return SetPlan(lines, stale, changes, result)
