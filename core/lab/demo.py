"""``calico-lab demo``: the operator's first hour in one command.

A lab with calico-node and BIRD on every node (full BGP mesh), pods in two Kubernetes
namespaces spread over the nodes, then, in order: the topology, ``calicoctl node status``
of every node, a pod-to-pod ping matrix, a Kubernetes NetworkPolicy and the matrix again
with the cells it changed marked, and teardown (or, with ``keep``, commands to explore).

What the matrix must look like is not written down here: the policy model the dataplanes
render (:mod:`pycalico.core.policy`) judges every cell from what etcd holds, and the demo
fails (:class:`DemoFailed`) if the packets disagree once the agents have had time to
catch up, or if a BGP session never reaches Established.
"""

from __future__ import annotations

import ipaddress
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pycalico.core.calc import Cache, compute
from pycalico.core.policy import Verdict, compile, verdict
from pycalico.plugins.routing.bird import Options
from pycalico.plugins.routing.bird.model import build

from . import bgp, kube, pods
from .cluster import Lab
from .state import LabError, default_state_root

NAMESPACES = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: tools}
"""

# Namespace -> its pods' names and labels. Each namespace's pods are dealt out over the
# nodes from node1, so each of the first three nodes runs a pod of each namespace.
PODS = {
    "shop": (("web", {"app": "web"}), ("api", {"app": "api"}), ("db", {"app": "db"})),
    "tools": (("ui", {"app": "ui", "role": "frontend"}), ("debug", {"app": "debug"}), ("batch", {"app": "batch"})),
}

POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: shop-ingress
  namespace: shop
spec:
  podSelector: {}              # every pod in shop ...
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {}          # ... admits the pods of shop
    - namespaceSelector: {}    # and, from any namespace,
      podSelector:             # the pods labelled role=frontend
        matchLabels: {role: frontend}
"""

# Two cells the policy decides, for the commands printed with --keep.
ADMITTED = ("tools/ui", "shop/web")  # a frontend from another namespace
BLOCKED = ("tools/debug", "shop/web")

BGP_TIMEOUT = 40.0  # s for every session to reach Established
CONVERGE_TIMEOUT = 30.0  # s for the measured matrix to match the judged one
PING_TIMEOUT = 1  # s, ping -W


class DemoFailed(LabError):
    """The cluster did not do what it should: says what, with what was seen."""


Matrix = dict[tuple[str, str], bool]  # (from pod, to pod) -> replied


# --- building ---------------------------------------------------------------------------------------


def add_pods(lab: Lab) -> list[pods.Pod]:
    """The namespaces (as ``calico-lab apply`` makes them), then every pod of PODS, in parallel."""
    kube.apply(lab, NAMESPACES, "demo namespaces")
    placed = [(lab.nodes[i % len(lab.nodes)].name, f"{ns}/{name}", labels)
              for ns, members in PODS.items() for i, (name, labels) in enumerate(members)]
    with ThreadPoolExecutor(len(placed)) as pool:
        return list(pool.map(lambda p: pods.add_pod(lab, p[0], p[1], labels=p[2]), placed))


def wait_established(lab: Lab, timeout: float = BGP_TIMEOUT) -> None:
    """Until every node has a session to every other node, all Established; DemoFailed
    naming each node's sessions if that does not happen within ``timeout``."""
    deadline = time.monotonic() + timeout
    want = len(lab.nodes) - 1
    while True:
        seen = bgp.status(lab)
        if all(not s["error"] and len(s["sessions"]) == want and
               all(p["info"].startswith("Established") for p in s["sessions"]) for s in seen.values()):
            return
        if time.monotonic() > deadline:
            raise DemoFailed(f"BGP did not establish within {timeout:.0f} s (want {want} Established "
                             "session(s) per node):\n" + "\n".join(bgp.format_status(seen)[1:]))
        time.sleep(0.2)


# --- what etcd says --------------------------------------------------------------------------------


def cluster_cache(lab: Lab) -> Cache:
    """A :class:`~pycalico.core.calc.Cache` of everything etcd holds now."""
    cache = Cache()
    cache.replace(pods.with_datastore(lab, lab.nodes[0], lambda ds: ds.snapshot()))
    return cache


def judge(lab: Lab, all_pods: Sequence[pods.Pod]) -> dict[tuple[str, str], Verdict]:
    """The policy model's verdict on a ping (ICMP echo request) for every ordered pair of pods."""
    model = compile(compute(cluster_cache(lab), lab.nodes[0].name), scope="cluster")
    ends = {p.key: model.find(p.namespace, p.name) for p in all_pods}
    return {(a, b): verdict(model, ends[a], ends[b], "ICMP", icmp_type=8, icmp_code=0)
            for a in ends for b in ends if a != b}


# --- printing ----------------------------------------------------------------------------------------


def topology(lab: Lab, all_pods: Sequence[pods.Pod]) -> list[str]:
    """The underlay, etcd, each node as BIRD is configured for it (address, AS, its
    blocks) and each pod."""
    cache = cluster_cache(lab)
    subnets = sorted({(str(ipaddress.ip_interface(n.cidr).network), n.gateway) for n in lab.nodes})
    lines = [f"Lab {lab.name!r} (state in {lab.state_dir})",
             f"  underlay  bridge in {lab.underlay_netns}: "
             + ", ".join(f"{net} (router {gw})" for net, gw in subnets),
             f"  etcd      {', '.join(lab.etcd_endpoints)} in {lab.cp_netns} "
             + ("(healthy)" if lab.etcd_healthy() else "(NOT healthy)")]
    secrets = Options().secrets_dir
    for n in lab.nodes:
        cfg = build(compute(cache, n.name), secrets)
        blocks = ", ".join(b.cidr for b in cfg.blocks) or "none yet"
        lines.append(f"  {n.name:<9} {n.cidr:<17} AS {cfg.as_number:<6} pod block {blocks:<17} netns {n.netns}")
    width = max(len(p.key) for p in all_pods)
    lines.append("  pods:")
    lines += [f"    {p.key:<{width}}  on {p.node:<7} {p.ip}" for p in all_pods]
    return lines


def node_status(lab: Lab) -> list[str]:
    """``calicoctl node status`` run on every node, as it printed it; DemoFailed unless it
    lists every other node as an Established peer."""
    lines = []
    for n in lab.nodes:
        res = lab.exec(n, ["calicoctl", "node", "status"], capture_output=True, text=True)
        lines += [f"{n.name}$ calicoctl node status", *res.stdout.rstrip().splitlines(), ""]
        if res.returncode != 0 or res.stdout.count("Established") != len(lab.nodes) - 1:
            raise DemoFailed(f"calicoctl node status on {n.name} (exit {res.returncode}) does not show "
                             f"{len(lab.nodes) - 1} Established peer(s):\n{res.stdout}{res.stderr}")
    return lines


def render(matrix: Matrix, keys: Sequence[str], before: Matrix | None = None) -> list[str]:
    """Rows ping columns: ``.`` replied, ``X`` no reply; ``*`` marks a cell that differs from ``before``."""
    width = max(len(k) for k in keys) + 1
    lines = [(" " * width + "".join(k.rjust(width - 1) + " " for k in keys)).rstrip()]
    for a in keys:
        cells = []
        for b in keys:
            changed = a != b and before is not None and before[(a, b)] != matrix[(a, b)]
            symbol = "-" if a == b else "." if matrix[(a, b)] else "X"
            cells.append((symbol + ("*" if changed else " ")).rjust(width))
        lines.append((a.ljust(width) + "".join(cells)).rstrip())
    return lines


# --- packets -----------------------------------------------------------------------------------------


def ping_matrix(lab: Lab, all_pods: Sequence[pods.Pod]) -> Matrix:
    """One ping from every pod to every other pod, all at once, each waiting PING_TIMEOUT s."""
    pairs = [(a, b) for a in all_pods for b in all_pods if a is not b]

    def replied(pair: tuple[pods.Pod, pods.Pod]) -> bool:
        a, b = pair
        argv = ["ping", "-n", "-q", "-c", "1", "-W", str(PING_TIMEOUT), b.ip]
        return pods.exec_in_pod(lab, a.key, argv, capture_output=True).returncode == 0

    with ThreadPoolExecutor(len(pairs)) as pool:
        return {(a.key, b.key): ok for (a, b), ok in zip(pairs, pool.map(replied, pairs))}


def converge(lab: Lab, all_pods: Sequence[pods.Pod], what: str, timeout: float = CONVERGE_TIMEOUT) -> Matrix:
    """Ping until the matrix is what the policy model says (the agents may still be applying
    the last change); DemoFailed naming the cells that still differ after ``timeout``."""
    verdicts = judge(lab, all_pods)
    deadline = time.monotonic() + timeout
    while True:
        measured = ping_matrix(lab, all_pods)
        wrong = [f"  {a} -> {b}: {'replied' if seen else 'no reply'}, but the policy says {verdicts[(a, b)]}"
                 for (a, b), seen in measured.items() if seen != verdicts[(a, b)].allowed]
        if not wrong:
            return measured
        if time.monotonic() > deadline:
            keys = [p.key for p in all_pods]
            raise DemoFailed(f"{what}: the ping matrix still differs from what the policy implies after "
                             f"{timeout:.0f} s:\n" + "\n".join(render(measured, keys) + wrong))


# --- the run -----------------------------------------------------------------------------------------


def calico_lab() -> str:
    """How this shell reaches the running calico-lab: by name when PATH finds this one
    (an activated venv), else by its path (``make demo`` runs ``.venv/bin/calico-lab``)."""
    mine = Path(sys.executable).parent / "calico-lab"
    found = shutil.which("calico-lab")
    if found and Path(found).resolve() == mine.resolve():
        return "calico-lab"
    return shlex.quote(str(mine.relative_to(Path.cwd()) if mine.is_relative_to(Path.cwd()) else mine))


def explore(lab: Lab, all_pods: Sequence[pods.Pod], state_root: str | None) -> list[str]:
    """The commands to try on a kept lab, with its real name (and state root if not the default)."""
    tool = calico_lab()
    where = f"--name {lab.name}"
    if state_root and Path(state_root).resolve() != Path(default_state_root()).resolve():
        where += f" --state-dir {shlex.quote(str(state_root))}"
    ips = {p.key: p.ip for p in all_pods}
    lines = [f"Lab {lab.name!r} kept. Try:",
             f"  {tool} status {where}",
             f"  {tool} exec {lab.nodes[0].name} {where} -- calicoctl node status",
             f"  {tool} pod list {where}"]
    for (a, b), why in ((ADMITTED, "admitted"), (BLOCKED, "blocked by the policy")):
        if b in ips:
            lines.append(f"  {tool} exec {a} {where} -- ping -c 3 -W 1 {ips[b]}    # {a} -> {b}: {why}")
    lines.append(f"  {tool} down {where}")
    return lines


def say(*lines: str) -> None:
    print(*lines, sep="\n", flush=True)


def run(name: str = "demo", keep: bool = False, nodes: int = 3, state_root: str | None = None,
        policy: str = "iptables") -> int:
    """Build the demo lab, show it on stdout, check it, and tear it down unless ``keep``.
    Raises DemoFailed (the lab torn down unless ``keep``) when BGP or the policy misbehaves."""
    started = time.monotonic()
    say(f"Building a {nodes}-node lab: etcd, calico-node with BIRD (full BGP mesh) and {policy} policy "
        "on every node ...")
    lab = Lab.up(name, nodes=nodes, state_root=state_root, recreate=True, routing="bird", policy=policy)
    all_pods: list[pods.Pod] = []
    try:
        all_pods = add_pods(lab)
        wait_established(lab)
        say(f"... ready in {time.monotonic() - started:.1f} s", "", "== Topology", *topology(lab, all_pods))
        say("", "== BGP", *node_status(lab))
        keys = [p.key for p in all_pods]
        before = converge(lab, all_pods, "before the policy")
        say(f"== Ping matrix (row pings column; . replied, X no reply within {PING_TIMEOUT} s)",
            *render(before, keys))
        say("", "== Policy: calico-lab apply -f -", *POLICY.rstrip().splitlines(),
            *(str(o) for o in kube.apply(lab, POLICY, "demo policy")))
        applied = time.monotonic()
        after = converge(lab, all_pods, "after the policy")
        changed = sum(before[k] != after[k] for k in after)
        say("", f"== Ping matrix with the policy (matched it {time.monotonic() - applied:.1f} s after the apply; "
                f"* marks the {changed} cell(s) it changed)", *render(after, keys, before))
    finally:
        if keep:
            say("", *explore(lab, all_pods, state_root))
        else:
            done = lab.down()
            say("", f"Lab {name!r} torn down: ended {len(done['killed'])} process(es), deleted "
                    f"{len(done['deleted_netns'])} namespace(s); demo took {time.monotonic() - started:.0f} s.")
    return 0
