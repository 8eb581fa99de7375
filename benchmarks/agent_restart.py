"""calico-node restart: time from the agent's start to /readiness 200 with 250 endpoints
(and 1,000 policies) already in the kernel, beside a cold start with the same endpoints
and an empty kernel, alternately in the same lab; and what each first pass changed.

    .venv/bin/python benchmarks/agent_restart.py [--endpoints 250] [--policies 1000]
        [--rounds 5] [--policy iptables|nftables|all]

Per policy plugin, one lab with one node (routing ``none``): the policy benchmarks'
load (``_policy.py``) written to etcd and a veth pair per endpoint in the node's
namespace, calico-node started once to program it all. Then ``--rounds`` times each,
alternately:

* restart: the agent SIGKILLed (the kernel keeps what it programmed), started again;
* cold start: the agent SIGKILLed, its rules and sets removed (iptables: the plugin's
  ``cleanup``; nftables: ``nft delete table inet calico``), started again.

Timed from the spawn of ``calico-node`` (interpreter and imports included) until its
health listener answers ``/readiness`` with 200 (polled every 20 ms). The first pass's
change count and duration come from the agent's log; after a restart with nothing
changed in the datastore it should change nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys

import _agent  # benchmarks/ is on sys.path (its own directory)
from _machine import load_line
from pycalico.core.lab.netns import run_in_netns


def kill(lab) -> None:
    """SIGKILL the agent, as a crash or an OOM kill would end it."""
    pid = lab.agent_pid(_agent.NODE)
    os.kill(pid, signal.SIGKILL)
    lab.stop(pid)  # reaps it and drops its record


def empty_kernel(lab, policy: str) -> None:
    if policy == "nftables":
        lab.exec(_agent.NODE, ["nft", "delete", "table", "inet", "calico"], check=True, capture_output=True)
    else:
        from pycalico.plugins.policy.iptables import IptablesPlugin

        run_in_netns(lab.node(_agent.NODE).netns, lambda: IptablesPlugin().cleanup(), timeout=120)


def start(lab) -> tuple[float, tuple[int, str, int, float]]:
    """Seconds to readiness, and the first pass (number, reason, changes, ms)."""
    offset = len(_agent.agent_log(lab))
    _, seconds = _agent.start_until_ready(lab)
    return seconds, _agent.passes(_agent.agent_log(lab)[offset:])[0]


def measure(policy: str, args: argparse.Namespace, root: str) -> dict:
    lab = _agent.up(f"rst{policy[:3]}", root, policy)
    try:
        _agent.write(lab, _agent.load_docs(args.endpoints, args.policies))
        _agent.add_veths(lab, args.endpoints)
        _, first_start = start(lab)
        out: dict = {"restart": [], "cold": [], "programmed": first_start}
        for _ in range(args.rounds):
            kill(lab)
            out["restart"].append(start(lab))
            kill(lab)
            empty_kernel(lab, policy)
            out["cold"].append(start(lab))
        return out
    finally:
        lab.down()


def report(policy: str, r: dict, args: argparse.Namespace) -> None:
    print(f"\n{policy}: {args.endpoints} endpoints, {args.policies} policies; {args.rounds} rounds; {load_line()}")
    print(f"  first programming of the empty node: {r['programmed'][2]} changes in {r['programmed'][3]:.0f} ms")
    p50 = {}
    for kind, label in (("restart", "restart, kernel programmed"), ("cold", "cold start, kernel empty (reference)")):
        seconds = [s for s, _ in r[kind]]
        changes = sorted({p[2] for _, p in r[kind]})
        pass_ms = statistics.median(p[3] for _, p in r[kind])
        p50[kind] = statistics.median(seconds)
        print(f"  {label:38} to ready p50 {p50[kind]:.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f}); "
              f"first pass {'/'.join(map(str, changes))} changes, p50 {pass_ms:.0f} ms")
    print(f"  restart / cold start: {p50['restart'] / p50['cold']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = _agent.arguments(__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    return _agent.run(parser.parse_args(argv), measure, report)


if __name__ == "__main__":
    sys.exit(main())
