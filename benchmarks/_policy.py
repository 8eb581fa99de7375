"""Shared by the policy benchmarks (policy_iptables.py, policy_nftables.py,
policy_throughput.py) and tests/unit/test_policy_bench.py: a Kubernetes-like policy
state, one policy changed the way the agent's cache changes it, and network namespaces
that are checked never to be the root one.

The state: 10 namespaces (a ``kns.<ns>`` profile each), pods in 50 apps, and
NetworkPolicies that each select one app with an ingress allow from another app's pods
(its own source selector, so one IP set per policy and family), a deny from a namespace,
and two egress allows (a selector, an ipBlock).
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pycalico.core.calc import DesiredState
from pycalico.core.lab import netns
from pycalico.core.resources.codec import load_resource

NAMESPACES = 10
APPS = 50
INIT_NET_INODE = 0xEFFFFFF9  # the kernel's fixed inode number of the initial network namespace


# --- the state ---------------------------------------------------------------------------


def _meta(name: str, namespace: str | None = None, labels: dict | None = None) -> dict:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return meta


def policy_doc(p: int, port: int = 80, selector: str | None = None) -> dict:
    """Policy number ``p``: it selects app ``p``, or whatever ``selector`` says."""
    ns = f"ns-{p % NAMESPACES}"
    ingress = [
        {"action": "Allow", "protocol": "TCP",
         "source": {"selector": f"app == 'app-{(p + 1) % APPS}' && pod != 'pod-{p}'", "namespaceSelector": "all()"},
         "destination": {"ports": [port, "http"]}},
        {"action": "Deny", "source": {"namespaceSelector": f"name == 'ns-{(p + 3) % NAMESPACES}'"}},
    ]
    egress = [
        {"action": "Allow", "destination": {"selector": f"app == 'app-{(p - 1) % APPS}'", "namespaceSelector": "all()"}},
        {"action": "Allow", "destination": {"nets": [f"192.0.{p % 256}.0/24"], "notNets": [f"192.0.{p % 256}.128/25"]}},
    ]
    return {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": _meta(f"pol-{p}", ns),
            "spec": {"order": p % 7, "selector": selector or f"app == 'app-{p % APPS}'", "ingress": ingress,
                     "egress": egress}}


def endpoint_doc(i: int, node: str = "node1") -> dict:
    ns = f"ns-{i % NAMESPACES}"
    return {
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": _meta(f"{node}-k8s-pod--{i}-eth0", ns, {"app": f"app-{i % APPS}", "pod": f"pod-{i}"}),
        "spec": {"node": node, "orchestrator": "k8s", "pod": f"pod-{i}", "endpoint": "eth0",
                 "interfaceName": f"cali{i:011d}", "ipNetworks": [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}/32"],
                 "profiles": [f"kns.{ns}"], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
    }


def base_docs() -> list[dict]:
    """The namespace profiles and the pool."""
    allow = [{"action": "Allow"}]
    docs = [{"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": _meta("pods"),
             "spec": {"cidr": "10.0.0.0/8", "natOutgoing": True}}]
    for n in range(NAMESPACES):
        docs.append({"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": _meta(f"kns.ns-{n}"),
                     "spec": {"labelsToApply": {"pcns.name": f"ns-{n}"}, "ingress": allow, "egress": allow}})
    return docs


def resources(policies: int, endpoints: int, nodes: int = 1) -> list:
    """The loaded resources: endpoints spread over ``nodes`` nodes (node1, node2, ...)."""
    docs = base_docs()
    docs += [endpoint_doc(i, f"node{i % nodes + 1}") for i in range(endpoints)]
    docs += [policy_doc(p) for p in range(policies)]
    return [load_resource(d) for d in docs]


def state_of(res: list, revision: int = 1, node: str = "node1") -> DesiredState:
    kinds: dict[str, list] = {}
    for r in res:
        kinds.setdefault(type(r).KIND, []).append(r)
    return DesiredState(node_name=node, revision=revision, resources={k: tuple(v) for k, v in kinds.items()})


class OneChange:
    """States that each change one policy's ingress port, as the agent's cache has them:
    the changed policy is a new object, every other resource the same object."""

    def __init__(self, res: list) -> None:
        self.res = list(res)
        self.index = [i for i, r in enumerate(self.res) if type(r).KIND == "NetworkPolicy"]

    def state(self, k: int) -> tuple[DesiredState, int, int]:
        """Change number ``k``: (the state, the policy changed, its new port)."""
        p = (k * 37) % len(self.index)
        port = 1000 + k
        self.res[self.index[p]] = load_resource(policy_doc(p, port=port))
        return state_of(self.res, revision=k + 2), p, port


# --- namespaces --------------------------------------------------------------------------


def root_inodes() -> set[int]:
    """The root namespace (PID 1's, when readable; the kernel's initial one) and this
    process's own (its main thread never moves): nothing here may act on them."""
    found = {INIT_NET_INODE, os.stat("/proc/self/ns/net").st_ino}
    try:
        found.add(os.stat("/proc/1/ns/net").st_ino)
    except PermissionError:
        pass  # a sandbox may hide PID 1's namespaces
    return found


def run_in(name: str, fn: Callable[[], Any], roots: set[int], timeout: float = 3600) -> Any:
    """``fn()`` in a thread joined to namespace ``name``, refusing any of ``roots``."""

    def guarded():
        here = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
        if here in roots:
            raise RuntimeError("refusing to act on the root network namespace")
        return fn()

    return netns.run_in_netns(name, guarded, timeout)


class Namespaces:
    """Network namespaces named ``<prefix>-*``, made here and deleted on exit."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.made: list[str] = []
        self.roots = root_inodes()

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, *exc) -> None:
        for name in list(self.made):
            self.delete(name)

    def add(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        netns.add(name)
        self.made.append(name)
        if os.stat(f"/run/netns/{name}").st_ino in self.roots:
            raise SystemExit(f"refusing: {name} is the root namespace")
        return name

    def delete(self, name: str) -> None:
        self.made.remove(name)
        netns.delete(name)

    def _check(self, name: str) -> None:
        if name not in self.made:
            raise ValueError(f"{name} is not a namespace of this benchmark")

    def run(self, name: str, fn: Callable[[], Any], timeout: float = 3600) -> Any:
        """``fn()`` in a thread joined to ``name``."""
        self._check(name)
        return run_in(name, fn, self.roots, timeout)

    def sh(self, name: str, argv: list[str], data: str | None = None) -> str:
        """``argv`` in ``name`` (``ip netns exec``); its output."""
        self._check(name)
        res = subprocess.run(["ip", "netns", "exec", name, *argv], input=data, capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip()}")
        return res.stdout


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def require_namespaces() -> None:
    ok, why = netns.available()
    if not ok:
        raise SystemExit(f"needs root and ip netns: {why}")


def changed_passes(compile_state: Callable, apply: Callable, changes: OneChange, repeat: int) -> Iterator[tuple]:
    """``repeat`` changes, each compiled and applied as the agent's hook does: (compile
    seconds, pass seconds, the pass's change lines, the changed policy's new port)."""
    for k in range(repeat):
        state, _, port = changes.state(k)
        gc.collect()  # the last pass's garbage is not this one's to collect
        t_compile, model = timed(lambda: compile_state(state))
        t_pass, lines = timed(lambda: apply(model))
        yield t_compile, t_pass, lines, port


def by_size(spaces: Namespaces, sizes: list[int], endpoints: int, measure: Callable) -> Iterator[tuple[int, dict, dict]]:
    """For each number of policies: a namespace of its own and ``measure(namespace,
    changes)``, which returns samples by name; yields (size, samples, their medians)."""
    for size in sizes:
        ns = spaces.add(f"size{size}")
        try:
            samples = measure(ns, OneChange(resources(size, endpoints)))
        finally:
            spaces.delete(ns)
        yield size, samples, {k: statistics.median(v) for k, v in samples.items()}
