"""What calico-node's metrics and health cost, beside the work they describe.

    .venv/bin/python benchmarks/daemon_overhead.py [--endpoints 250] [--policies 1000] [--repeat 200]

At ``--endpoints`` local endpoints and ``--policies`` policies (the policy benchmarks'
Kubernetes-like state), each figure is printed with its reference, measured in the
same run:

* per pass, the loop's bookkeeping (``LoopMetrics.passed``: counters, local endpoint
  and cluster counts) against computing the pass's desired state (``calc.compute``),
  the cheapest step every pass takes;
* per pass, the policy plugin's sizes of its compiled model (``PolicySizes.of``)
  against recompiling after a one-policy change (what that pass costs the compiler);
* per scrape, ``GET /metrics`` (the loop's and a policy plugin's samples, formatted)
  against ``GET /readiness`` on the same listener: the HTTP round trip alone.

Medians of ``--repeat`` runs. Nothing here grows per packet: these are the only places
the daemon does work for metrics and health.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import sys
import time

import _policy  # benchmarks/ is on sys.path (the script's own directory)
from _machine import load_line

from pycalico.core import calc, health, metrics
from pycalico.core.config import Endpoint
from pycalico.core.datastore import Snapshot
from pycalico.core.listener import Listener
from pycalico.core.policy import Compiler
from pycalico.core.report import PassReport


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def get(port: int, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        reply.read()
        assert reply.status in (200, 503), reply.status
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoints", type=int, default=250)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()

    res = _policy.resources(args.policies, args.endpoints)
    cache = calc.Cache()
    cache.replace(Snapshot(1, tuple(res)))
    state = calc.compute(cache, "node1")
    report = PassReport(1, "update", 1, time.time(), 0.01, {"policy": ()}, timings={"node": 0.001, "policy": 0.01})
    loop = metrics.LoopMetrics()

    compute = median_seconds(lambda: calc.compute(cache, "node1"), args.repeat)
    passed = median_seconds(lambda: loop.passed(report, state), args.repeat)

    compiler = Compiler()
    compiler.compile(state)
    changes = _policy.OneChange(res)
    recompile = statistics.median(
        _policy.timed(lambda k=k: compiler.compile(changes.state(k)[0]))[0] for k in range(min(args.repeat, 50))
    )
    model = compiler.compile(changes.state(10_000)[0])
    sizes = median_seconds(lambda: metrics.PolicySizes.of(model), args.repeat)

    counters = metrics.PolicyCounters()
    counters.sizes = metrics.PolicySizes.of(model)

    def scrape():
        samples = loop.samples(in_sync=True, ready=True)
        samples += metrics.policy_samples("iptables", counters.sizes, 10, 3, 0)
        return metrics.response(samples)

    listener = Listener(Endpoint(host="127.0.0.1", port=_free_port()),
                        {**health.routes(lambda: [], lambda: []), "/metrics": scrape}, "bench")
    try:
        get(listener.port, "/metrics")
        probe = median_seconds(lambda: get(listener.port, "/readiness"), args.repeat)
        scraped = median_seconds(lambda: get(listener.port, "/metrics"), args.repeat)
        body = scrape().body
    finally:
        listener.close()

    print(f"{args.endpoints} local endpoints, {args.policies} policies; {load_line()}")
    print(f"{'figure':52} {'median':>10} {'reference':>10} {'ratio':>7}")
    for name, value, ref in (
        ("pass bookkeeping (LoopMetrics.passed) vs calc.compute", passed, compute),
        ("model sizes (PolicySizes.of) vs one-change recompile", sizes, recompile),
        (f"GET /metrics ({len(body.splitlines())} lines) vs GET /readiness", scraped, probe),
    ):
        print(f"{name:52} {value * 1e3:8.3f}ms {ref * 1e3:8.3f}ms {value / ref:7.3f}")
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
