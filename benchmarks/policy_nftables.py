"""Benchmark the nftables policy dataplane against plain ``nft -f``.

    .venv/bin/python benchmarks/policy_nftables.py [--policies 1000] [--endpoints 1000]
        [--update-sizes 100,1000,5000] [--repeat 5]

Runs as root, entirely inside a network namespace it creates and deletes (never the
root namespace's ruleset):

1. **From scratch**: 1,000 policies over 1,000 local endpoints. The plugin's pass
   (compile the state, render, read back, one ``nft -f``) against the floor: the same
   final script loaded once with plain ``nft -f`` into an empty namespace.
2. **One policy changed** (a port of one rule), at 100, 1,000 and 5,000 policies: the time
   until the kernel has the change, for the whole hook (``compile`` of the new state, which
   is the core's, included) and for the plugin's pass (render, plan, ``nft -f``) given the
   compiled model; beside it, the same one-chain script loaded again with plain ``nft -f``:
   the floor of anything that drives the ``nft`` executable, which reads the table's
   chains and sets before every transaction.

Every policy has its own rule selectors, so each adds two sets per IP family.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import threading
import time

import attrs

from pycalico.core.calc import DesiredState
from pycalico.core.lab.netns import run_in_netns
from pycalico.core.policy import compile
from pycalico.core.resources.codec import load_resource
from pycalico.plugins.policy.nftables import NftablesPolicy, Options
from pycalico.plugins.policy.nftables.kernel import generation

NAMESPACES = 10
APPS = 50


def _meta(name, namespace=None, labels=None):
    meta = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return meta


def _policy(p: int, port: int = 80) -> dict:
    ns = f"ns-{p % NAMESPACES}"
    ingress = [
        {
            "action": "Allow",
            "protocol": "TCP",
            "source": {"selector": f"app == 'app-{(p + 1) % APPS}' && pod != 'pod-{p}'", "namespaceSelector": "all()"},
            "destination": {"ports": [port, "http"]},
        },
        {"action": "Deny", "source": {"namespaceSelector": f"name == 'ns-{(p + 3) % NAMESPACES}'"}},
    ]
    egress = [
        {"action": "Allow", "destination": {"selector": f"app == 'app-{(p - 1) % APPS}'", "namespaceSelector": "all()"}},
        {"action": "Allow", "destination": {"nets": [f"192.0.{p % 256}.0/24"], "notNets": [f"192.0.{p % 256}.128/25"]}},
    ]
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": _meta(f"pol-{p}", ns),
        "spec": {"order": p % 7, "selector": f"app == 'app-{p % APPS}'", "ingress": ingress, "egress": egress},
    }


def resources(policies: int, endpoints: int) -> list:
    docs = []
    for n in range(NAMESPACES):
        allow = [{"action": "Allow"}]
        docs.append({"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": _meta(f"kns.ns-{n}"),
                     "spec": {"labelsToApply": {"pcns.name": f"ns-{n}"}, "ingress": allow, "egress": allow}})
    docs.append({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": _meta("pods"),
                 "spec": {"cidr": "10.0.0.0/16", "natOutgoing": True}})
    for i in range(endpoints):
        ns = f"ns-{i % NAMESPACES}"
        docs.append({
            "apiVersion": "projectcalico.org/v3",
            "kind": "WorkloadEndpoint",
            "metadata": _meta(f"node1-k8s-pod--{i}-eth0", ns, {"app": f"app-{i % APPS}", "pod": f"pod-{i}"}),
            "spec": {
                "node": "node1", "orchestrator": "k8s", "pod": f"pod-{i}", "endpoint": "eth0",
                "interfaceName": f"cali{i:011d}", "ipNetworks": [f"10.0.{i // 256 % 256}.{i % 256}/32"],
                "profiles": [f"kns.{ns}"], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            },
        })
    docs += [_policy(p) for p in range(policies)]
    return [load_resource(d) for d in docs]


def state_of(res: list, revision: int = 1) -> DesiredState:
    kinds: dict[str, list] = {}
    for r in res:
        kinds.setdefault(type(r).KIND, []).append(r)
    return DesiredState(node_name="node1", revision=revision, resources={k: tuple(v) for k, v in kinds.items()})


# --- the namespace --------------------------------------------------------------------


INIT_NET_INODE = 0xEFFFFFF9  # the kernel's fixed inode number of the initial network namespace


def root_inodes() -> set[int]:
    """The root namespace (PID 1's, when readable; the kernel's initial one) and this
    process's own (its main thread never moves): the benchmark touches none of them."""
    found = {INIT_NET_INODE, os.stat("/proc/self/ns/net").st_ino}
    try:
        found.add(os.stat("/proc/1/ns/net").st_ino)
    except PermissionError:
        pass  # a sandbox may hide PID 1's namespaces
    return found


def make_netns(name: str, made: list[str]) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    made.append(name)
    if os.stat(f"/run/netns/{name}").st_ino in root_inodes():
        raise SystemExit("refusing: the benchmark namespace is the root namespace")


def delete_netns(made: list[str]) -> None:
    for name in made:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def in_ns(ns: str, fn):
    def guarded():
        tid = threading.get_native_id()
        if os.stat(f"/proc/self/task/{tid}/ns/net").st_ino in root_inodes():
            raise RuntimeError("refusing to touch the root network namespace")
        return fn()

    return run_in_netns(ns, guarded, timeout=3600)


def nft_load(ns: str, script: str) -> float:
    start = time.perf_counter()
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True, check=True)
    return time.perf_counter() - start


# --- runs -----------------------------------------------------------------------------


def from_scratch(prefix: str, policies: int, endpoints: int) -> None:
    res = resources(policies, endpoints)
    state = state_of(res)
    plugin = NftablesPolicy()
    ns_plugin, ns_floor = f"{prefix}-a", f"{prefix}-b"
    made: list[str] = []
    try:
        make_netns(ns_plugin, made)
        make_netns(ns_floor, made)
        start = time.perf_counter()
        model = compile(state)
        t_compile = time.perf_counter() - start
        gc.collect()
        start = time.perf_counter()
        lines = in_ns(ns_plugin, lambda: plugin.reconcile_model(model, Options()))
        t_plugin = time.perf_counter() - start
        timings = in_ns(ns_plugin, lambda: plugin.dataplane().last_timings)
        script = in_ns(ns_plugin, lambda: plugin.dataplane().last_transaction)
        t_floor = nft_load(ns_floor, script)
        rules = script.count("\nadd rule ")
        sets = script.count("\nadd set ")
        print(f"from scratch: {policies} policies x {endpoints} endpoints -> {rules} rules, {sets} sets, "
              f"{len(script) / 1e6:.1f} MB script; {lines[0]}")
        print(f"  compile (core)             {t_compile:8.2f} s")
        print(f"  plugin pass (render+nft)   {t_plugin:8.2f} s   "
              f"(render {timings['render']:.2f}, read {timings['read']:.2f}, plan {timings['plan']:.2f}, nft {timings['nft']:.2f})")
        print(f"  floor: plain nft -f        {t_floor:8.2f} s")
        print(f"  ratio plugin / floor       {t_plugin / t_floor:8.2f}x   (with compile: {(t_plugin + t_compile) / t_floor:.2f}x)")
    finally:
        delete_netns(made)


@attrs.frozen
class Update:
    hook: float  # compile + the plugin's pass
    plugin: float  # the plugin's pass: render, plan, nft -f
    python: float  # render + plan
    nft: float  # the plugin's nft -f
    floor: float  # the same script again with plain nft -f
    script_lines: int


def one_change(prefix: str, policies: int, endpoints: int, repeat: int) -> Update:
    res = resources(policies, endpoints)
    plugin = NftablesPolicy()
    ns = f"{prefix}-u{policies}"
    made: list[str] = []
    try:
        make_netns(ns, made)
        model = compile(state_of(res))
        in_ns(ns, lambda: plugin.reconcile_model(model, Options()))
        samples: list[tuple[float, ...]] = []
        index = [i for i, r in enumerate(res) if type(r).KIND == "NetworkPolicy"]
        for k in range(repeat):
            p = (k * 37) % policies
            changed = list(res)
            changed[index[p]] = load_resource(_policy(p, port=1000 + k))
            state = state_of(changed, revision=k + 2)
            start = time.perf_counter()
            model = compile(state)
            t_compile = time.perf_counter() - start
            gc.collect()  # the compiled model's garbage is not the plugin's to collect
            start = time.perf_counter()
            lines = in_ns(ns, lambda: plugin.reconcile_model(model, Options()))
            t_plugin = time.perf_counter() - start
            assert any("cali-pi-" in line for line in lines), lines
            assert len(lines) <= 3, lines  # the policy's ingress chain (+ at most its sets)
            timings = in_ns(ns, lambda: plugin.dataplane().last_timings)
            script = in_ns(ns, lambda: plugin.dataplane().last_transaction)
            t_floor = nft_load(ns, script)  # flush and refill the same chain: a no-op for packets
            # That load bumped the ruleset generation; tell the dataplane it was ours (the table
            # is unchanged), or its next pass would rightly read the table back.
            in_ns(ns, lambda: setattr(plugin.dataplane(), "generation", generation()))
            samples.append((t_compile + t_plugin, t_plugin, timings["render"] + timings["plan"], timings["nft"], t_floor, script.count("\n")))
            res = changed
        return Update(*(statistics.median(column) for column in zip(*samples, strict=True)))
    finally:
        delete_netns(made)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--update-sizes", default="100,1000,5000")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-scratch", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    prefix = f"pcnftb{os.getpid()}"
    if not args.skip_scratch:
        from_scratch(prefix, args.policies, args.endpoints)
    print(f"one policy changed, {args.endpoints} endpoints, median of {args.repeat} (ms):")
    print(f"  {'policies':>8} {'hook':>8} {'plugin':>8} {'render+plan':>12} {'nft -f':>8} {'plain nft -f':>13} {'script':>7}")
    results = []
    for size in (int(s) for s in args.update_sizes.split(",")):
        u = one_change(prefix, size, args.endpoints, args.repeat)
        results.append((size, u))
        print(f"  {size:>8} {u.hook * 1e3:>8.1f} {u.plugin * 1e3:>8.1f} {u.python * 1e3:>12.1f} {u.nft * 1e3:>8.1f} "
              f"{u.floor * 1e3:>13.1f} {int(u.script_lines):>4} lines")
    if len(results) > 1:
        base = results[0][1]
        print("  plugin pass relative to the smallest: " + ", ".join(f"{n}: {u.plugin / base.plugin:.2f}x" for n, u in results))
        print("  plugin pass / plain nft -f of its script: " + ", ".join(f"{n}: {u.plugin / u.floor:.2f}x" for n, u in results))
    print("  (hook = compile of the whole state + the plugin's pass; the plugin's pass is what this plugin adds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
