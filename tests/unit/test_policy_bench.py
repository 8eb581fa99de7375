"""pycalico.core.policy at scale: the benchmarks' state (``benchmarks/_policy.py``),
1,000 policies x 1,000 endpoints, compiled from scratch and then one change at a time.

No timing asserts: the figures are printed (``pytest -s``) and recorded in the report.
Every policy has its own rule selectors, so the model holds over a thousand distinct sets.
"""

import importlib.util
import time
from pathlib import Path

from pycalico.core.policy import Compiler, compile, verdict

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "_policy.py"
_SPEC = importlib.util.spec_from_file_location("benchmarks_policy", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_compile_1000_policies_by_1000_endpoints(capsys):
    state = bench.state_of(bench.resources(1000, 1000))
    start = time.perf_counter()
    model = compile(state)
    node_seconds = time.perf_counter() - start
    start = time.perf_counter()
    cluster = compile(state, scope="cluster")
    cluster_seconds = time.perf_counter() - start
    assert len(model.endpoints) == 1000 and len(model.policies) == 1000
    assert len(model.ip_sets) > 1000
    first = next(iter(model.endpoints.values()))
    assert first.ingress.policy_keys  # every endpoint is selected by some policy
    start = time.perf_counter()
    eps = list(cluster.all_endpoints.values())
    by_pod = {ep.pod: ep for ep in eps}
    # pod-i (app i) may send to pod-(i-1) (app i-1), which accepts from app i: all allowed.
    pairs = [(by_pod[f"pod-{i}"], by_pod[f"pod-{(i - 1) % 1000}"]) for i in range(1000)]
    judged = sum(verdict(cluster, src, dst, "TCP", 80).allowed for src, dst in pairs)
    assert judged == 1000
    judge_seconds = time.perf_counter() - start
    with capsys.disabled():
        print(
            f"\ncompile 1000 policies x 1000 endpoints: node scope {node_seconds:.2f} s, "
            f"cluster scope {cluster_seconds:.2f} s; {len(model.ip_sets)} sets; "
            f"1000 verdicts {judge_seconds:.2f} s ({judged} allowed)"
        )


def test_one_policy_changed_at_a_time(capsys):
    changes = bench.OneChange(bench.resources(1000, 1000))
    compiler = Compiler()
    compiler.compile(bench.state_of(changes.res))
    seconds = []
    for k in range(5):
        state, p, port = changes.state(k)
        start = time.perf_counter()
        model = compiler.compile(state)
        seconds.append(time.perf_counter() - start)
        key = f"ns-{p % bench.NAMESPACES}/pol-{p}"
        assert model.changes.policies == {key} and not model.changes.endpoints
        assert model.policies[key].ingress[0].destination.ports[0].first == port
    with capsys.disabled():
        print(f"\none policy changed in 1000 x 1000: compile {sorted(seconds)[2] * 1000:.2f} ms (median of 5)")
