"""Pod-to-pod TCP throughput across nodes, per routing mode, against a plain veth between
the same two pods, same run.

    .venv/bin/python benchmarks/pod_throughput.py [--modes bird,vxlan] [--seconds 3] [--rounds 3]

For each mode, a two-node lab (calico-node with that routing and the iptables policy
plugin on each node, removed afterwards) with one pod per node, wired by the real CNI.
The reference is a veth pair strung straight between the two pods' namespaces
(203.0.113.253/30 and .254, MTU 1500 like the pods' own interfaces): the same sockets,
the same iperf3, none of the path through the nodes. Rounds alternate the two paths;
each is one ``iperf3 -c`` of ``--seconds`` seconds, and the figure is the median of the
receiver's rate. Prints each mode's rate, the reference's, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time

from pycalico.core.lab import Lab
from pycalico.core.lab import netns as lab_netns
from pycalico.core.lab.pods import add_pod

DIRECT = ("203.0.113.253", "203.0.113.254")
PORT = 5201


def iperf(server_ns: str, client_ns: str, address: str, seconds: float) -> float:
    """One iperf3 run from ``client_ns`` to a one-shot server in ``server_ns``; bits/s received."""
    server = subprocess.Popen(lab_netns.exec_argv(server_ns, ["iperf3", "-s", "-1", "-p", str(PORT)]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            probe = subprocess.run(lab_netns.exec_argv(server_ns, ["ss", "-Htln", f"sport = :{PORT}"]),
                                   capture_output=True, text=True)
            if probe.stdout.strip():
                break
            if time.monotonic() > deadline:
                raise RuntimeError("iperf3 server did not start listening")
            time.sleep(0.05)
        run = subprocess.run(
            lab_netns.exec_argv(client_ns, ["iperf3", "-c", address, "-p", str(PORT), "-t", str(seconds), "-J"]),
            capture_output=True, text=True, timeout=seconds + 30,
        )
        result = json.loads(run.stdout)
        if "error" in result:
            raise RuntimeError(f"iperf3 to {address}: {result['error']}")
        return result["end"]["sum_received"]["bits_per_second"]
    finally:
        server.kill()
        server.wait()


def measure(mode: str, seconds: float, rounds: int, root: str) -> tuple[float, float]:
    lab = Lab.up(f"tp-{mode}", nodes=2, routing=mode, state_root=root)
    try:
        a = add_pod(lab, "node1", "default/client")
        b = add_pod(lab, "node2", "default/server")
        # Routes to each other's block arrive with the agents' next passes.
        target = b.ips[0].split("/")[0]
        deadline = time.monotonic() + 60
        while subprocess.run(lab_netns.exec_argv(a.netns, ["ping", "-c1", "-W1", target]),
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mode}: the pods do not reach each other")
            time.sleep(0.2)
        lab_netns.add_veth(a.netns, "direct0", b.netns, "direct1")
        for ns, dev, addr in ((a.netns, "direct0", DIRECT[0]), (b.netns, "direct1", DIRECT[1])):
            lab_netns.add_addr(ns, dev, f"{addr}/30")
            lab_netns.link_up(ns, dev)
        pods, plain = [], []
        for _ in range(rounds):
            pods.append(iperf(b.netns, a.netns, target, seconds))
            plain.append(iperf(b.netns, a.netns, DIRECT[1], seconds))
        return statistics.median(pods), statistics.median(plain)
    finally:
        lab.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="bird,vxlan")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pycalico-tp-") as root:
        for mode in args.modes.split(","):
            pod, plain = measure(mode, args.seconds, args.rounds, root)
            print(f"{mode:6s} pod to pod {pod / 1e9:6.2f} Gbit/s   plain veth {plain / 1e9:6.2f} Gbit/s   "
                  f"ratio {pod / plain:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
