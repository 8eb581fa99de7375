"""calico-node's footprint: resident memory and CPU at 250 local endpoints and 1,000
policies, idle and under 10 datastore updates a second. Beside it, measured in the same
run and lab, the reference: the same agent with nothing to enforce (0 endpoints, 0
policies), idle.

    .venv/bin/python benchmarks/agent_footprint.py [--endpoints 250] [--policies 1000]
        [--seconds 30] [--rate 10] [--policy iptables|nftables|all]

Per policy plugin, one lab with one node (routing ``none``, etcd in the lab):

1. the reference: calico-node started, ready, 5 s to settle, then ``--seconds`` idle;
2. calico-node stopped; the policy benchmarks' load written to etcd (``_policy.py``:
   10 namespace profiles, ``--endpoints`` WorkloadEndpoints of this node in 50 apps,
   ``--policies`` NetworkPolicies each with its own selectors) and a veth pair per
   endpoint in the node's namespace; calico-node started again (its time to readiness
   printed), 5 s to settle, then ``--seconds`` idle;
3. ``--rate`` updates a second for ``--seconds``, alternately a policy's port and an
   endpoint's app label (which moves it between IP sets), written by this process.

Memory is the agent's VmRSS at the end of each window (and VmHWM, its peak); CPU is its
user+system time over the window, with the iptables-restore / nft children it ran and
reaped, as a percentage of one CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import _agent  # benchmarks/ is on sys.path (its own directory)
import _policy
from _machine import load_line

SETTLE = 5.0


def window(pid: int, seconds: float) -> tuple[_agent.Usage, float]:
    """The agent's usage at the end of ``seconds``, and its CPU % over them."""
    before = _agent.Usage.of(pid)
    time.sleep(seconds)
    after = _agent.Usage.of(pid)
    return after, after.cpu_percent(before)


def update(k: int, endpoints: int, policies: int) -> dict:
    """Update number ``k``: a policy's ingress port, or an endpoint's app label."""
    if k % 2 == 0:
        return _policy.policy_doc((k * 37) % policies, port=1000 + k)
    doc = _policy.endpoint_doc((k * 13) % endpoints, _agent.NODE)
    doc["metadata"]["labels"]["app"] = f"app-{k % _policy.APPS}"
    return doc


def under_updates(lab, pid: int, args: argparse.Namespace) -> tuple[_agent.Usage, float, int]:
    """Usage and CPU % over ``--seconds`` of ``--rate`` updates a second; the updates written."""
    from pycalico.core.lab.pods import with_datastore
    from pycalico.core.resources.codec import load_resource

    def run(ds) -> tuple[_agent.Usage, float, int]:
        before = _agent.Usage.of(pid)
        start, k = time.monotonic(), 0
        while (due := start + k / args.rate) < start + args.seconds:
            time.sleep(max(0.0, due - time.monotonic()))
            ds.update(load_resource(update(k, args.endpoints, args.policies)))
            k += 1
        time.sleep(max(0.0, start + args.seconds - time.monotonic()))
        after = _agent.Usage.of(pid)
        return after, after.cpu_percent(before), k

    return with_datastore(lab, _agent.NODE, run, timeout=args.seconds + 120)


def measure(policy: str, args: argparse.Namespace, root: str) -> dict:
    lab = _agent.up(f"foot{policy[:3]}", root, policy)
    try:
        pid, _ = _agent.start_until_ready(lab)
        time.sleep(SETTLE)
        empty, empty_cpu = window(pid, args.seconds)
        lab.stop(pid)

        _agent.write(lab, _agent.load_docs(args.endpoints, args.policies))
        _agent.add_veths(lab, args.endpoints)
        pid, to_ready = _agent.start_until_ready(lab)
        time.sleep(SETTLE)
        idle, idle_cpu = window(pid, args.seconds)
        offset = len(_agent.agent_log(lab))
        busy, busy_cpu, written = under_updates(lab, pid, args)
        during = _agent.passes(_agent.agent_log(lab)[offset:])
        return {"empty": (empty, empty_cpu), "idle": (idle, idle_cpu), "busy": (busy, busy_cpu),
                "to_ready": to_ready, "written": written, "passes": during}
    finally:
        lab.down()


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def report(policy: str, r: dict, args: argparse.Namespace) -> None:
    (empty, empty_cpu), (idle, idle_cpu), (busy, busy_cpu) = r["empty"], r["idle"], r["busy"]
    ms = [p[3] for p in r["passes"]]
    print(f"\n{policy}: {args.endpoints} local endpoints, {args.policies} policies; {args.seconds:.0f} s windows; "
          f"{load_line()}")
    print(f"  {'':42} {'RSS MiB':>8} {'peak MiB':>9} {'CPU %':>6}")
    print(f"  {'reference: 0 endpoints, 0 policies, idle':42} {mib(empty.rss):>8} {mib(empty.hwm):>9} {empty_cpu:6.2f}")
    print(f"  {'loaded, idle':42} {mib(idle.rss):>8} {mib(idle.hwm):>9} {idle_cpu:6.2f}")
    print(f"  {f'loaded, {args.rate:g} updates/s':42} {mib(busy.rss):>8} {mib(busy.hwm):>9} {busy_cpu:6.2f}")
    print(f"  RSS loaded/reference: idle {idle.rss / empty.rss:.2f}x, under updates {busy.rss / empty.rss:.2f}x")
    print(f"  loaded start to /readiness 200: {r['to_ready']:.2f} s")
    if ms:
        print(f"  under updates: {r['written']} writes, {len(ms)} passes "
              f"(p50 {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = _agent.arguments(__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=10.0)
    return _agent.run(parser.parse_args(argv), measure, report)


if __name__ == "__main__":
    sys.exit(main())
