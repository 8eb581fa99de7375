"""Pod-to-pod TCP throughput with policies in force, as a ratio to no policy, on both policy plugins.

    .venv/bin/python benchmarks/policy_throughput.py [--policies 1000] [--seconds 5]
        [--rounds 3] [--plugins iptables,nftables]

Per plugin, a one-node lab (its own etcd, no agent) and two pods on the node, wired by
the real ``calico`` CNI executable: ``bench/server`` and ``bench/client``. The plugin
converges the node's namespace, from a thread in it, to a desired state made of the lab's
own resources (the pods' WorkloadEndpoints, given the namespace's allow-all ``kns.bench``
profile as in Kubernetes policy mode) and, for the policy case, ``--policies``
NetworkPolicies that are never written to etcd (the plugin needs only the state).

Every policy selects both pods, in order; each allows ingress on its own port from a
selector no pod matches and egress to its own port, which the flow does not use; only
the last allows the flow. So a connection's first packet is judged by every policy in
both endpoints' chains; after it, conntrack accepts the connection's packets at the top
of the endpoint chains, as in Felix. Before measuring, real packets check that the
policies are in force: with them a second server in the pod (port 5202) cannot be
reached, without them it can.

iperf3 runs for ``--seconds`` per sample (after a first second left out: slow start);
rounds alternate the two cases (the plugin converges between, then the sample waits
``SETTLE`` seconds, as the kernel frees a replaced ruleset in the background), and the
ratio is of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import attrs
from _policy import require_namespaces, root_inodes, run_in  # benchmarks/ is on sys.path (its own directory)

from pycalico.core.calc import DesiredState
from pycalico.core.lab import Lab
from pycalico.core.lab.pods import add_pod, get_pod, with_datastore
from pycalico.core.resources.codec import load_resource

NAMESPACE = "bench"
PORT, CLOSED_PORT = 5201, 5202
SETTLE = 2.0  # seconds after converging: the kernel frees a replaced ruleset's rules in the background


def policies(count: int) -> list:
    """``count`` policies that select both pods; only the last one allows the flow."""
    docs = []
    for p in range(count):
        last = p == count - 1
        source = "role == 'client'" if last else f"role == 'nobody-{p}'"
        port = PORT if last else 10000 + p
        docs.append({
            "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": f"bench-{p:05d}", "namespace": NAMESPACE},
            "spec": {"order": p, "selector": "app == 'bench'", "types": ["Ingress", "Egress"],
                     "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": source},
                                  "destination": {"ports": [port]}}],
                     "egress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [port]}}]},
        })
    return [load_resource(d) for d in docs]


def lab_state(lab: Lab, node, extra: list) -> DesiredState:
    """The lab's resources (workload endpoints in Kubernetes policy mode) plus ``extra``."""
    snap = with_datastore(lab, node, lambda ds: ds.snapshot())
    kinds: dict[str, list] = {}
    for r in [*snap.resources, *extra]:
        if type(r).KIND == "WorkloadEndpoint":
            r = attrs.evolve(r, spec=attrs.evolve(r.spec, profiles=(f"kns.{r.metadata.namespace}",)))
        kinds.setdefault(type(r).KIND, []).append(r)
    return DesiredState(node_name=node.name, revision=1, resources={k: tuple(v) for k, v in kinds.items()})


def in_pod(pod, argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", pod.netns, *argv], capture_output=True, text=True, **kw)


def iperf(client, server, seconds: int) -> float:
    """Bits per second received, one TCP stream from ``client`` to ``server``."""
    argv = ["iperf3", "-c", server.ip, "-p", str(PORT), "-t", str(seconds), "-O", "1", "-J"]  # -O: past slow start
    res = in_pod(client, argv, timeout=seconds + 60)
    if res.returncode:
        raise RuntimeError(f"iperf3 failed: {res.stdout[-500:]} {res.stderr[-500:]}")
    return json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"]


def reachable(client, server, port: int) -> bool:
    return in_pod(client, ["nc", "-z", "-n", "-w", "2", server.ip, str(port)], timeout=30).returncode == 0


def measure(name: str, count: int, seconds: int, rounds: int) -> dict:
    if name == "iptables":
        from pycalico.plugins.policy.iptables import Options, plugin
    else:
        from pycalico.plugins.policy.nftables import Options, plugin
    roots = root_inodes()
    root = tempfile.mkdtemp(prefix="pycalico-bench-")
    servers: list[subprocess.Popen] = []
    lab = Lab.up(f"pt{os.getpid() % 100000}{name[:3]}", nodes=1, subnets=1, state_root=root)
    try:
        node = lab.nodes[0]
        add_pod(lab, node, f"{NAMESPACE}/server", labels={"app": "bench", "role": "server"})
        add_pod(lab, node, f"{NAMESPACE}/client", labels={"app": "bench", "role": "client"})
        server, client = get_pod(lab, f"{NAMESPACE}/server"), get_pod(lab, f"{NAMESPACE}/client")
        for port in (PORT, CLOSED_PORT):
            servers.append(subprocess.Popen(["ip", "netns", "exec", server.netns, "iperf3", "-s", "-p", str(port)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        cases = {"no policy": lab_state(lab, node, []), f"{count:,} policies": lab_state(lab, node, policies(count))}
        options = Options()

        def converge(state) -> float:
            start = time.perf_counter()
            run_in(node.netns, lambda: plugin.reconcile(state, options), roots)
            return time.perf_counter() - start

        checks = {}
        for case, state in cases.items():
            seconds_to_converge = converge(state)
            checks[case] = (reachable(client, server, PORT), reachable(client, server, CLOSED_PORT), seconds_to_converge)
        (open_none, other_none, _), (open_pol, other_pol, _) = checks.values()
        if not (open_none and other_none and open_pol and not other_pol):
            raise SystemExit(f"{name}: policies not in force as expected: {checks}")
        samples: dict[str, list[float]] = {case: [] for case in cases}
        for _ in range(rounds):
            for case, state in cases.items():
                converge(state)
                time.sleep(SETTLE)
                samples[case].append(iperf(client, server, seconds))
        return {"samples": samples, "checks": checks}
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=10)
        lab.down()  # if it fails, its state stays under root for `calico-lab down`
        shutil.rmtree(root)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--plugins", default="iptables,nftables")
    args = ap.parse_args(argv)
    require_namespaces()
    print(f"pod-to-pod TCP (iperf3, {args.seconds} s per sample, median of {args.rounds}, cases alternating)")
    for name in args.plugins.split(","):
        result = measure(name, args.policies, args.seconds, args.rounds)
        (none_case, none), (pol_case, pol) = result["samples"].items()
        converged = result["checks"][pol_case][2]
        med_none, med_pol = statistics.median(none), statistics.median(pol)
        print(f"{name:>9}: {none_case} {med_none / 1e9:6.2f} Gbit/s, {pol_case} {med_pol / 1e9:6.2f} Gbit/s, "
              f"ratio {med_pol / med_none:.3f}   (samples Gbit/s: {' '.join(f'{x / 1e9:.2f}' for x in none)} | "
              f"{' '.join(f'{x / 1e9:.2f}' for x in pol)}; first pass with the policies {converged:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
