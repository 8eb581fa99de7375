"""pycalico.core.policy.Compiler: pass after pass, the same model as a compile from scratch.

The resources change one at a time along a random walk (``tests/policy_world.py``), as
the loop's cache applies watch events. After every step the incremental model must equal
``compile`` of the same state, and its ``changes`` must list everything that differs from
the previous model.
"""

import copy
import random

import pytest

from pycalico.core.policy import Compiler, compile
from pycalico.core.policy.model import Changes
from tests.policy_world import World, walk

FIELDS = ("node_name", "scope", "settings", "tiers", "policies", "profiles", "ip_sets", "endpoints", "all_endpoints",
          "failsafe", "nat", "anti_spoofing")


def differences(a, b) -> list[str]:
    out = []
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if name in ("policies", "profiles", "ip_sets", "endpoints", "all_endpoints"):
            x, y = dict(x), dict(y)
            for k in sorted(x.keys() | y.keys(), key=str):
                if x.get(k) != y.get(k):
                    out.append(f"{name}[{k}]: {x.get(k)!r} != {y.get(k)!r}"[:300])
        elif x != y:
            out.append(f"{name}: {x!r} != {y!r}"[:300])
    return out


def unlisted(before, after) -> list[str]:
    """What differs between two models of one compiler but ``after.changes`` does not list."""
    changes = after.changes
    out = []
    for name, listed in (("policies", changes.policies), ("profiles", changes.profiles),
                         ("endpoints", changes.endpoints), ("ip_sets", changes.ip_sets)):
        x, y = getattr(before, name), getattr(after, name)
        out += [f"{name}[{k}]" for k in x.keys() | y.keys() if x.get(k) != y.get(k) and k not in listed]
    if not changes.rest:
        out += [n for n in ("settings", "tiers", "failsafe", "nat", "anti_spoofing") if getattr(before, n) != getattr(after, n)]
    return out


@pytest.mark.parametrize("scope", ["node", "cluster"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_pass_equals_a_compile_from_scratch_and_lists_what_changed(scope, seed):
    compiler = Compiler(scope)
    seen = set()
    before = None
    for step, what, state in walk(seed, 120):
        seen.add(what)
        got = compiler.compile(state)
        want = compile(state, scope=scope)
        assert not differences(got, want), (step, what, differences(got, want)[:5])
        if before is None:
            assert got.changes is None
        else:
            assert got.changes.since == before.serial
            assert not unlisted(before, got), (step, what, unlisted(before, got))
        before = got
    assert len(seen) > 16  # the walk went through (nearly) every kind of change


def test_an_unchanged_pass_keeps_the_same_objects():
    world = World(random.Random(7))
    compiler = Compiler()
    first = compiler.compile(world.state())
    second = compiler.compile(world.state())
    assert all(second.endpoints[k] is v for k, v in first.endpoints.items())
    assert all(second.policies[k] is v for k, v in first.policies.items())
    assert all(second.ip_sets[k] is v for k, v in first.ip_sets.items())
    assert second.changes == Changes(since=first.serial)


def test_a_rule_change_touches_only_that_policy_and_its_sets():
    world = World(random.Random(11))
    compiler = Compiler()
    first = compiler.compile(world.state())
    key = next(k for k in sorted(world.docs) if k[0] == "NetworkPolicy" and f"{k[1]}/{k[2]}" in first.policies)
    doc = copy.deepcopy(world.docs[key])
    doc["spec"]["ingress"][0]["destination"]["ports"][0] = 4242
    world.put(doc)
    second = compiler.compile(world.state())
    changed = [k for k, v in second.policies.items() if first.policies.get(k) is not v]
    assert changed == [f"{key[1]}/{key[2]}"]
    assert all(second.endpoints[k] is v for k, v in first.endpoints.items())  # no endpoint re-resolved
    assert second.changes.policies == {changed[0]} and not second.changes.endpoints and not second.changes.rest


def test_a_failed_pass_starts_the_next_from_scratch(monkeypatch):
    from pycalico.core.policy import compiler as module

    world = World(random.Random(5))
    compiler = Compiler()
    compiler.compile(world.state())
    world.change()
    world.put(world.policy(500))  # normalised in the next pass, after endpoints were updated
    real = module.normalise_policy

    def failing(resource):
        if resource.name.endswith("pol-500"):
            raise ValueError("pol-500 cannot be normalised")
        return real(resource)

    monkeypatch.setattr(module, "normalise_policy", failing)
    with pytest.raises(ValueError, match="pol-500"):
        compiler.compile(world.state())
    monkeypatch.setattr(module, "normalise_policy", real)
    state = world.state()
    assert not differences(compiler.compile(state), compile(state))
