"""Benchmark Calico selector evaluation against hand-written Python predicates.

    .venv/bin/python benchmarks/selector_eval.py [--pairs 1000000] [--repeat 3]

Evaluates the same (selector, labels) pairs twice: once through
``pycalico.core.selector.parse(...).evaluate`` and once through the equivalent
predicates written by hand as lambdas, which is the floor for any evaluator
written in Python.  Also reports the uncached parse rate.
"""

from __future__ import annotations

import argparse
import random
import re
import time

from pycalico.core.selector import parse, parse_uncached

NS = "projectcalico.org/namespace"

# (selector, the same predicate hand-written)
CASES = [
    ("app == 'frontend'", lambda l: l.get("app") == "frontend"),
    ("app != 'frontend'", lambda l: l.get("app") != "frontend"),
    ("app in {'frontend', 'backend', 'cache'}", lambda l: l.get("app") in {"frontend", "backend", "cache"}),
    ("app not in {'db', 'cache'}", lambda l: l.get("app") not in {"db", "cache"}),
    ("has(team)", lambda l: "team" in l),
    ("!has(canary)", lambda l: "canary" not in l),
    ("app == 'backend' && tier == 'api'", lambda l: l.get("app") == "backend" and l.get("tier") == "api"),
    ("env == 'prod' || env == 'staging'", lambda l: l.get("env") == "prod" or l.get("env") == "staging"),
    (f"{NS} == 'payments'", lambda l: l.get(NS) == "payments"),
    (f"{NS} == 'payments' && app == 'api'", lambda l: l.get(NS) == "payments" and l.get("app") == "api"),
    (f"{NS} in {{'payments', 'orders'}} && has(team)",
     lambda l: l.get(NS) in {"payments", "orders"} and "team" in l),
    ("version starts with 'v2'", lambda l: l.get("version", "").startswith("v2")),
    ("app contains 'end'", lambda l: "end" in l.get("app", "")),
    ("pod-template-hash ends with '7f'", lambda l: l.get("pod-template-hash", "").endswith("7f")),
    ("(app == 'frontend' || app == 'backend') && env == 'prod'",
     lambda l: (l.get("app") == "frontend" or l.get("app") == "backend") and l.get("env") == "prod"),
    ("!(env == 'dev') && tier in {'api', 'web'}",
     lambda l: l.get("env") != "dev" and l.get("tier") in {"api", "web"}),
    (f"has({NS}) && role != 'admin'", lambda l: NS in l and l.get("role") != "admin"),
    ("all()", lambda l: True),
    ("app == 'db' && (tier == 'data' || has(backup)) && env != 'dev'",
     lambda l: l.get("app") == "db" and (l.get("tier") == "data" or "backup" in l) and l.get("env") != "dev"),
    ("team == 'core' || app in {'frontend', 'backend'} && version not in {'v1.0', 'v1.1'}",
     lambda l: l.get("team") == "core"
     or (l.get("app") in {"frontend", "backend"} and l.get("version") not in {"v1.0", "v1.1"})),
]

OPTIONAL_LABELS = {
    "tier": ["web", "api", "data"],
    "env": ["prod", "staging", "dev"],
    "version": ["v1.0", "v1.1", "v2.0", "v2.3"],
    "team": ["core", "payments", "search"],
    "canary": ["true"],
    "backup": ["daily"],
    "role": ["admin", "user"],
}


def make_pods(count: int, rng: random.Random) -> list[dict[str, str]]:
    pods = []
    for _ in range(count):
        labels = {
            "app": rng.choice(["frontend", "backend", "api", "db", "cache", "worker"]),
            NS: rng.choice(["payments", "orders", "default", "kube-system"]),
            "projectcalico.org/orchestrator": "k8s",
            "pod-template-hash": f"{rng.getrandbits(40):010x}",
        }
        for key in rng.sample(sorted(OPTIONAL_LABELS), rng.randint(1, 6)):
            labels[key] = rng.choice(OPTIONAL_LABELS[key])
        pods.append(labels)
    return pods


def run(predicates, pods, reps: int) -> int:
    hits = 0
    for _ in range(reps):
        for predicate in predicates:
            for labels in pods:
                hits += predicate(labels)
    return hits


def run_selectors(selectors, pods, reps: int) -> int:
    # Written the way callers use the API: look up .evaluate on each call.
    hits = 0
    for _ in range(reps):
        for sel in selectors:
            for labels in pods:
                hits += sel.evaluate(labels)
    return hits


def best_time(fn, *args, repeat: int) -> tuple[float, int]:
    best, result = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


_FIRST_OPERAND = re.compile(r"'([^']*)'|has\(([^)]*)\)")


def distinct_variant(text: str, i: int) -> str:
    def bump(m: re.Match) -> str:
        return f"'{m.group(1)}-{i}'" if m.group(1) is not None else f"has({m.group(2)}-{i})"

    return _FIRST_OPERAND.sub(bump, text, count=1)


def check_agreement(selectors, references, pods) -> None:
    for sel, ref, (text, _) in zip(selectors, references, CASES):
        for labels in pods:
            if sel.evaluate(labels) is not bool(ref(labels)):
                raise SystemExit(f"MISMATCH: {text!r} on {labels}")


def bench_parse(rounds: int) -> tuple[int, float]:
    # all() has no operand to vary, so a few variants repeat; drop them.
    texts = list(dict.fromkeys(distinct_variant(text, i) for i in range(rounds) for text, _ in CASES))
    start = time.perf_counter()
    for text in texts:
        parse_uncached(text)
    return len(texts), time.perf_counter() - start


def bench_cached_parse(count: int) -> float:
    texts = [text for text, _ in CASES]
    start = time.perf_counter()
    for _ in range(count // len(texts)):
        for text in texts:
            parse(text)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5, help="timing runs; the best is reported")
    ap.add_argument("--parse-rounds", type=int, default=250)
    args = ap.parse_args()

    pods = make_pods(args.pods, random.Random(7))
    selectors = [parse(text) for text, _ in CASES]
    references = [ref for _, ref in CASES]
    check_agreement(selectors, references, pods)

    reps = max(1, args.pairs // (len(CASES) * len(pods)))
    pairs = reps * len(CASES) * len(pods)
    ours_s, ours_hits = best_time(run_selectors, selectors, pods, reps, repeat=args.repeat)
    hoisted = [sel.evaluate for sel in selectors]
    hoisted_s, hoisted_hits = best_time(run, hoisted, pods, reps, repeat=args.repeat)
    ref_s, ref_hits = best_time(run, references, pods, reps, repeat=args.repeat)
    if not ours_hits == hoisted_hits == ref_hits:
        raise SystemExit(f"MISMATCH: {ours_hits}/{hoisted_hits} vs {ref_hits} matches")

    n_parsed, parse_s = bench_parse(args.parse_rounds)
    cached_s = bench_cached_parse(200_000)

    label_counts = sorted(len(p) for p in pods)
    print(f"{len(CASES)} selectors x {len(pods)} pods ({label_counts[0]}-{label_counts[-1]} labels each), "
          f"{pairs:,} (selector, labels) pairs, best of {args.repeat}")
    print(f"  pycalico parse().evaluate : {pairs / ours_s:>12,.0f} evals/s  ({ours_s:.3f} s)")
    print(f"  same, .evaluate hoisted   : {pairs / hoisted_s:>12,.0f} evals/s  ({hoisted_s:.3f} s)")
    print(f"  hand-written lambdas      : {pairs / ref_s:>12,.0f} evals/s  ({ref_s:.3f} s)")
    print(f"  ratio ours/reference      : {ref_s / ours_s:12.2f}  (hoisted: {ref_s / hoisted_s:.2f})")
    print(f"  matches                   : {ours_hits:>12,} (identical)")
    print(f"parse_uncached, {n_parsed:,} distinct strings : {n_parsed / parse_s:>10,.0f} parses/s")
    print(f"parse, cache hits                  : {200_000 / cached_s:>10,.0f} parses/s")


if __name__ == "__main__":
    main()
