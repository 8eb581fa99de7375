"""What to write: the restore input that turns the tables we read into the ones we want.

Per table, in one ``iptables-restore --noflush`` transaction (Felix's ``Table.Apply``):

1. declare the chains that are new (``:cali-x - [0:0]``) and flush the ones to delete;
2. rewrite our chains whose hashes differ, rule by rule: ``-R`` where a hash differs,
   ``-A`` for extra rules, ``-D`` (from the end) for surplus ones, so unchanged rules
   keep their counters; chains that are the same are not mentioned at all;
3. repair the hooks: if our rules at the top (or end) of a kernel chain are not exactly
   the expected ones, delete every rule of ours there by its spec and insert ours again;
   rules of others are never touched;
4. delete our chains that are no longer wanted (``-X``), except those a chain we do not
   own still refers to: those are left empty.

A table where nothing differs gets no transaction at all. When the tables we have are
known to be the renderer's previous result, only the chains it touched since are compared
(the hooks, a few rules, always are).
"""

from __future__ import annotations

import attrs

from .chains import Chain, is_ours
from .kernel import KernelRule, TableState
from .ruleset import Ruleset, TableSpec, Touched


@attrs.define
class TablePlan:
    table: str
    lines: list[str]
    changes: list[str]
    result: TableState  # the table once the lines are applied

    @property
    def empty(self) -> bool:
        return not self.lines


def where(table: str, version: int) -> str:
    """The suffix of a change line: nothing for IPv4 filter, else the table."""
    if version == 4:
        return "" if table == "filter" else f" ({table})"
    return f" (ip6 {table})"


def _chain_edits(chain: Chain, actual: tuple[str | None, ...]) -> list[str]:
    lines = []
    want = chain.hashes
    common = min(len(want), len(actual))
    for i in range(common):
        if want[i] != actual[i]:
            lines.append(chain.line(i, "-R", i + 1))
    for i in range(common, len(want)):
        lines.append(chain.line(i))
    for n in range(len(actual), len(want), -1):
        lines.append(f"-D {chain.name} {n}")
    return lines


def _hooks_ok(rules: list[KernelRule], top: Chain, end: Chain) -> bool:
    ours = [r for r in rules if r.ours]
    if len(ours) != len(top.rules) + len(end.rules):
        return False
    if tuple(r.hash for r in rules[: len(top.rules)]) != top.hashes:
        return False
    tail = rules[len(rules) - len(end.rules) :] if end.rules else []
    return tuple(r.hash for r in tail) == end.hashes


def _spec(chain: Chain, index: int) -> str:
    return chain.line(index).split(" ", 2)[2]


def plan_table(
    table: str, version: int, want: TableSpec, have: TableState, names: frozenset[str] | None = None
) -> TablePlan:
    """The restore input for one table; ``names``: only these chains can differ."""
    suffix = where(table, version)
    header: list[str] = []
    body: list[str] = []
    tail: list[str] = []
    changes: list[str] = []
    result = TableState(chains=dict(have.chains), kernel={k: list(v) for k, v in have.kernel.items()},
                        foreign_refs=set(have.foreign_refs), exists=True)

    if names is None:
        wanted = want.chains.items()
        stale = [name for name in have.chains if is_ours(name) and name not in want.chains]
    else:
        wanted = [(n, want.chains[n]) for n in sorted(names) if n in want.chains]
        stale = [n for n in sorted(names) if is_ours(n) and n in have.chains and n not in want.chains]
    have_chains = have.chains
    for name, chain in wanted:
        actual = have_chains.get(name)
        if actual is chain.hashes:
            continue  # what we wrote (or read back and matched) last time
        if actual is None:
            header.append(f":{name} - [0:0]")
            body.extend(chain.lines())
            changes.append(f"chain {name} created{suffix}")
        elif actual != chain.hashes:
            body.extend(_chain_edits(chain, actual))
            changes.append(f"chain {name} updated{suffix}")
        result.chains[name] = chain.hashes  # (when equal, the same tuple: next time "is")
    for name in stale:
        if name in have.foreign_refs:
            if not have.chains[name]:
                continue  # already emptied; it goes once nothing refers to it
            header.append(f"-F {name}")
            changes.append(f"chain {name} emptied{suffix} (still referred to by a chain we do not own)")
            result.chains[name] = ()
        else:
            header.append(f"-F {name}")
            tail.append(f"-X {name}")
            changes.append(f"chain {name} deleted{suffix}")
            del result.chains[name]

    for kernel_chain in sorted(set(want.inserts) | set(want.appends)):
        top, end = want.inserts[kernel_chain], want.appends[kernel_chain]
        rules = have.kernel.get(kernel_chain, [])
        if _hooks_ok(rules, top, end):
            continue
        for rule in rules:
            if rule.ours:
                body.append(f"-D {kernel_chain} {rule.spec}")
        for i in range(len(top.rules)):
            body.append(top.line(i, "-I", i + 1))
        for i in range(len(end.rules)):
            body.append(end.line(i))
        foreign = [r for r in rules if not r.ours]
        result.kernel[kernel_chain] = (
            [KernelRule(h, True, _spec(top, i)) for i, h in enumerate(top.hashes)]
            + foreign
            + [KernelRule(h, True, _spec(end, i)) for i, h in enumerate(end.hashes)]
        )
        if not top.rules and not end.rules:
            verb = "removed"
        else:
            verb = "repaired" if any(r.ours for r in rules) else "added"
        changes.append(f"hooks in {kernel_chain} {verb}{suffix}")

    lines = header + body + tail
    if lines:
        lines = [f"*{table}", *lines, "COMMIT"]
    return TablePlan(table, lines, changes, result)


def plan(ruleset: Ruleset, have: dict[str, TableState], since: Touched | None = None) -> list[TablePlan]:
    """The plans of every table of one IP version (raw, mangle, nat, filter); ``since``:
    ``have`` is the ruleset these changes are against, so only what they touched is compared."""
    out = []
    for table, want in ruleset.tables.items():
        names = since.chains.get(table, frozenset()) if since is not None else None
        out.append(plan_table(table, ruleset.version, want, have.get(table) or TableState(), names))
    return out
