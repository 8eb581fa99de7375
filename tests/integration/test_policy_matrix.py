"""Real-packet 9x9 reachability matrices on both policy plugins, against the judge.

One lab (real etcd, one node) per plugin; nine pods (namespaces x, y, z x pods a, b, c,
labelled ``pod=<name>``) wired by the real ``calico`` CNI executable, each serving TCP 80
from a socket made in its namespace. For each policy case the resources go to etcd, a
snapshot becomes the node's DesiredState, the plugin converges the node namespace to it,
and every pod connects (``nc -z``) to every pod at once; the measured matrix must equal
the one ``pycalico.core.policy`` predicts for the same state.

The lab's conflist has no Kubernetes policy type, so the CNI gives each endpoint the
network's profile; the test points each endpoint at ``kns.<namespace>`` instead (what
Kubernetes policy mode does), whose ``labelsToApply`` carry the namespace labels
(``pcns.`` prefixed) that namespace selectors match.

Safety: the plugin only runs in a thread joined to the node namespace (checked not to be
the root one); probes run with ``ip netns exec``; the lab is torn down even on failure.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import attrs
import pytest

from pycalico.core.calc import DesiredState
from pycalico.core.config import Config, Slot
from pycalico.core.lab import netns
from pycalico.core.lab.pods import add_pod, exec_in_pod, get_pod, with_datastore
from pycalico.core.policy import compile
from pycalico.core.policy.evaluate import format_matrix, reachability
from pycalico.core.resources.codec import load_resources
from tests.lab_fixtures import down_all, require_lab, unique_lab_name

pytestmark = pytest.mark.lab

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
KEYS = [f"{ns}/{p}" for ns in NAMESPACES for p in PODS]
PORT = 80


def _roots() -> set[int]:
    found = {0xEFFFFFF9, os.stat("/proc/self/ns/net").st_ino}
    try:
        found.add(os.stat("/proc/1/ns/net").st_ino)
    except PermissionError:
        pass
    return found


ROOTS = _roots()


def in_ns(ns: str, fn, timeout: float = 120):
    """``fn()`` in a thread joined to ``ns``, refusing the root namespace."""
    assert os.stat(f"/run/netns/{ns}").st_ino not in ROOTS

    def guarded():
        here = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
        assert here not in ROOTS, "refusing to act on the root network namespace"
        return fn()

    return netns.run_in_netns(ns, guarded, timeout=timeout)


# --- resources -------------------------------------------------------------------------------

PROFILES = "".join(
    f"""---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {{name: kns.{ns}}}
spec:
  labelsToApply: {{pcns.projectcalico.org/name: {ns}, pcns.ns: {ns}}}
  ingress: [{{action: Allow}}]
  egress: [{{action: Allow}}]
"""
    for ns in NAMESPACES
)

DEFAULT_DENY_X = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: knp.default.deny, namespace: x}
spec:
  order: 1000
  selector: projectcalico.org/orchestrator == 'k8s'
  types: [Ingress]
"""

ALLOW_B_TO_XA = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: knp.default.allow-b, namespace: x}
spec:
  order: 1000
  selector: projectcalico.org/orchestrator == 'k8s' && pod == 'a'
  types: [Ingress]
  ingress:
  - action: Allow
    source: {selector: pod == 'b', namespaceSelector: all()}
"""

DENY_FROM_Y = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-from-y}
spec:
  order: 10
  selector: all()
  types: [Ingress]
  ingress:
  - action: Deny
    source: {namespaceSelector: projectcalico.org/name == 'y'}
  - action: Pass
"""

# case: (policies, how many pairs the judge must block, so that it is not vacuous)
CASES = {
    "no-policy": ([], 0),
    "default-deny-x": ([DEFAULT_DENY_X], 24),  # 9 sources x 3 x-pods, less each x-pod to itself
    "allow-b-to-x-a": ([DEFAULT_DENY_X, ALLOW_B_TO_XA], 24 - 3),  # x/b, y/b, z/b reach x/a
    # Deny from y first; everything else is Passed, which skips the rest of the default
    # tier (the knp.* policies of x too) and lands on the allow-all profiles.
    "gnp-deny-from-y": ([DEFAULT_DENY_X, ALLOW_B_TO_XA, DENY_FROM_Y], 24),  # 3 y-pods x 8 others
}


def _policy_ids(ds) -> list[tuple[str, str, str | None]]:
    out = []
    for kind in ("NetworkPolicy", "GlobalNetworkPolicy"):
        for r in ds.list(kind).items:
            out.append((kind, r.metadata.name, getattr(r.metadata, "namespace", None)))
    return out


def write_case(lab, node, docs: list[str]) -> DesiredState:
    """Make etcd's policies exactly ``docs``; returns the node's DesiredState."""
    wanted = [r for text in docs for r in load_resources(text)]

    def run(ds):
        for kind, name, namespace in _policy_ids(ds):
            ds.delete(kind, name, namespace)
        for r in wanted:
            ds.create(r)
        return ds.snapshot()

    snap = with_datastore(lab, node, run)
    kinds: dict[str, list] = {}
    for r in snap.resources:
        kinds.setdefault(type(r).KIND, []).append(r)
    revision = snap.revision if isinstance(snap.revision, int) else 1
    return DesiredState(node_name=node.name, revision=revision,
                        resources={k: tuple(v) for k, v in kinds.items()})


# --- servers and probes ----------------------------------------------------------------------


class Servers:
    """TCP 80 listeners made in the pods' namespaces, accepted by one thread."""

    def __init__(self):
        self.socks: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def listen(self, ns: str) -> None:
        def make():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", PORT))
            s.listen(128)
            s.setblocking(False)
            return s

        self.socks.append(in_ns(ns, make))

    def _serve(self):
        while not self.stop.is_set():
            ready, _, _ = select.select(self.socks, [], [], 0.2)
            for s in ready:
                try:
                    s.accept()[0].close()
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        for s in self.socks:
            s.close()


def measure(lab, ips: dict[str, str]) -> dict[tuple[str, str], bool]:
    pairs = [(a, b) for a in KEYS for b in KEYS]

    def probe(pair):
        a, b = pair
        res = exec_in_pod(lab, a, ["nc", "-z", "-n", "-w", "1", ips[b], str(PORT)],
                          capture_output=True, timeout=30)
        return res.returncode == 0

    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        return dict(zip(pairs, pool.map(probe, pairs), strict=True))


class _Seen:
    def __init__(self, allowed: bool):
        self.allowed = allowed


# --- the lab, one per plugin -----------------------------------------------------------------


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def world(request, tmp_path_factory):
    require_lab()
    name = request.param
    if name == "iptables":
        from pycalico.plugins.policy.iptables import Options, plugin
    else:
        from pycalico.plugins.policy.nftables import Options, plugin
    root = tmp_path_factory.mktemp(f"labs-{name}")
    from pycalico.core.lab import Lab

    servers = Servers()
    try:
        lab = Lab.up(unique_lab_name("pm"), nodes=1, subnets=1, state_root=root)
        node = lab.nodes[0]
        with_datastore(lab, node, lambda ds: [ds.create(r) for r in load_resources(PROFILES)])
        for key in KEYS:
            ns, pod = key.split("/")
            add_pod(lab, node, key, labels={"pod": pod})

        def point_at_kns(ds):
            for r in ds.list("WorkloadEndpoint").items:
                ns = r.metadata.namespace
                ds.update(attrs.evolve(r, spec=attrs.evolve(r.spec, profiles=(f"kns.{ns}",))))

        with_datastore(lab, node, point_at_kns)
        pods = {key: get_pod(lab, key) for key in KEYS}
        for p in pods.values():
            servers.listen(p.netns)
        servers.thread.start()
        config = Config(node_name=node.name, policy=Slot(type=name, options=Options()))
        yield {"lab": lab, "node": node, "plugin": plugin, "config": config, "name": name,
               "ips": {k: p.ip for k, p in pods.items()}}
    finally:
        servers.close()
        errors = down_all(root)
        assert not errors, errors


@pytest.mark.parametrize("case", list(CASES))
def test_matrix_matches_the_judge(world, case):
    lab, node, plugin = world["lab"], world["node"], world["plugin"]
    docs, blocked = CASES[case]
    start = time.monotonic()
    state = write_case(lab, node, docs)
    in_ns(node.netns, lambda: plugin.pycalico_reconcile_policy(state=state, config=world["config"]))

    model = compile(state, scope="cluster")
    peers = {key: model.find(*key.split("/")) for key in KEYS}
    judged = reachability(model, peers, "TCP", PORT)
    seen = measure(lab, world["ips"])

    predicted = format_matrix(judged, KEYS)
    measured = format_matrix({k: _Seen(v) for k, v in seen.items()}, KEYS)
    report = (f"{world['name']} / {case}\njudge:\n{predicted}\nmeasured:\n{measured}")
    print(report, f"\n({time.monotonic() - start:.1f} s)")
    if blocked is not None:
        assert sum(not v.allowed for v in judged.values()) == blocked, report
    assert {k: v.allowed for k, v in judged.items()} == seen, report
