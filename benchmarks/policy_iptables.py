"""Benchmark the iptables policy plugin against plain iptables-restore, in a namespace it makes.

    .venv/bin/python benchmarks/policy_iptables.py [--endpoints 1000] [--policies 1000]
        [--sizes 100,1000,5000] [--repeat 7] [--backend auto]

Everything runs in network namespaces created here (``pcbench<pid>-*``) and deleted on
exit; the endpoints are WorkloadEndpoints whose interfaces do not exist (the kernel takes
rules naming absent interfaces). The state is Kubernetes-like: 10 namespaces, pods in
50 apps, each NetworkPolicy selecting one app with an ingress allow from another app's
pods (its own source selector, so one IP set per policy), a deny from a namespace and two
egress allows (a selector, an ipBlock).

1. From scratch: ``--policies`` policies over ``--endpoints`` endpoints, one plugin pass
   into an empty namespace, beside the floor: the final ruleset (``ipset save``,
   ``iptables-save``, ``ip6tables-save`` of that namespace) loaded once into another
   empty namespace with plain ``ipset restore`` / ``iptables-restore``; and the same
   loaded with ``--noflush`` (which the plugin must use, not to flush others' rules).
2. One policy changed (a port of one policy's ingress rule), at each of ``--sizes``
   policies: the time of the plugin pass that puts it in the kernel (render, compare,
   restore), median and worst of ``--repeat``; compiling the model (the core's work, done
   before any policy plugin runs) is shown apart. The floor is the same change applied
   again by ``iptables-restore --noflush`` alone: with the nft backend, any rule with a
   verdict makes the kernel validate the whole table, so it grows with the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import threading
import time

from pycalico.core.calc import DesiredState
from pycalico.core.lab import netns
from pycalico.core.policy import compile
from pycalico.core.resources.codec import load_resource
from pycalico.plugins.policy.iptables import Options, plugin

NAMESPACES = 10
APPS = 50
PREFIX = f"pcbench{os.getpid() % 100000}"


def _root_netns() -> int:
    try:
        return os.stat("/proc/1/ns/net").st_ino
    except PermissionError:
        return os.stat("/proc/self/ns/net").st_ino


ROOT_NETNS = _root_netns()


def in_ns(ns: str, fn, timeout: float = 3600):
    assert ns.startswith(PREFIX)

    def guarded():
        here = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
        assert here != ROOT_NETNS, "refusing to run in the root namespace"
        return fn()

    return netns.run_in_netns(ns, guarded, timeout)


def sh(ns: str, argv: list[str], data: str | None = None) -> str:
    assert ns.startswith(PREFIX)
    res = subprocess.run(["ip", "netns", "exec", ns, *argv], input=data, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip()}")
    return res.stdout


# --- the state -----------------------------------------------------------------------------


def _meta(name, namespace=None, labels=None):
    meta = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return meta


def state(policies: int, endpoints: int, port: int = 80) -> DesiredState:
    docs = [{"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": _meta("pods"),
             "spec": {"cidr": "10.0.0.0/8", "natOutgoing": True}}]
    allow = [{"action": "Allow"}]
    for n in range(NAMESPACES):
        docs.append({"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": _meta(f"kns.ns-{n}"),
                     "spec": {"labelsToApply": {"pcns.name": f"ns-{n}"}, "ingress": allow, "egress": allow}})
    for i in range(endpoints):
        ns = f"ns-{i % NAMESPACES}"
        docs.append({
            "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": _meta(f"node1-k8s-pod--{i}-eth0", ns, {"app": f"app-{i % APPS}", "pod": f"pod-{i}"}),
            "spec": {"node": "node1", "orchestrator": "k8s", "pod": f"pod-{i}", "endpoint": "eth0",
                     "interfaceName": f"cali{i:011d}", "ipNetworks": [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}/32"],
                     "profiles": [f"kns.{ns}"], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
        })
    for p in range(policies):
        ns = f"ns-{p % NAMESPACES}"
        ingress = [
            {"action": "Allow", "protocol": "TCP",
             "source": {"selector": f"app == 'app-{(p + 1) % APPS}' && pod != 'pod-{p}'", "namespaceSelector": "all()"},
             "destination": {"ports": [port if p == 0 else 80, "http"]}},
            {"action": "Deny", "source": {"namespaceSelector": f"name == 'ns-{(p + 3) % NAMESPACES}'"}},
        ]
        egress = [
            {"action": "Allow", "destination": {"selector": f"app == 'app-{(p - 1) % APPS}'", "namespaceSelector": "all()"}},
            {"action": "Allow", "destination": {"nets": [f"192.0.{p % 256}.0/24"], "notNets": [f"192.0.{p % 256}.128/25"]}},
        ]
        docs.append({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": _meta(f"pol-{p}", ns),
                     "spec": {"order": p % 7, "selector": f"app == 'app-{p % APPS}'", "ingress": ingress, "egress": egress}})
    kinds: dict[str, list] = {}
    for doc in docs:
        res = load_resource(doc)
        kinds.setdefault(type(res).KIND, []).append(res)
    return DesiredState(node_name="node1", revision=1, resources={k: tuple(v) for k, v in kinds.items()})


# --- measurements --------------------------------------------------------------------------


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def count_rules(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("-A "))


def from_scratch(policies: int, endpoints: int, options: Options, names: list[str]) -> None:
    print(f"\n== from scratch: {policies:,} policies x {endpoints:,} endpoints ==")
    compile_s, model = timed(lambda: compile(state(policies, endpoints)))
    print(f"compile the model (core, before any policy plugin)   {compile_s:7.2f} s")
    ns_plugin, ns_floor, ns_noflush = f"{PREFIX}-scratch", f"{PREFIX}-floor", f"{PREFIX}-noflush"
    for ns in (ns_plugin, ns_floor, ns_noflush):
        netns.add(ns)
        names.append(ns)
    dp = in_ns(ns_plugin, lambda: plugin.dataplane(options))
    plugin_s, changes = timed(lambda: in_ns(ns_plugin, lambda: dp.apply(model)))
    t = dp.timings
    v4 = sh(ns_plugin, [f"iptables-{dp.backend}-save"])
    v6 = sh(ns_plugin, [f"ip6tables-{dp.backend}-save"]) if options.ipv6 != "off" else ""
    sets = sh(ns_plugin, ["ipset", "save"])
    rules = count_rules(v4) + count_rules(v6)
    nsets = sets.count("\ncreate ") + sets.startswith("create ")
    floor_sets, _ = timed(lambda: sh(ns_floor, ["ipset", "restore"], sets))
    floor_v4, _ = timed(lambda: sh(ns_floor, [f"iptables-{dp.backend}-restore"], v4))
    floor_v6, _ = timed(lambda: sh(ns_floor, [f"ip6tables-{dp.backend}-restore"], v6)) if v6 else (0.0, None)
    floor = floor_sets + floor_v4 + floor_v6
    # The same, but with --noflush, as any writer that must leave others' rules alone.
    sh(ns_noflush, ["ipset", "restore"], sets)
    nf_v4, _ = timed(lambda: sh(ns_noflush, [f"iptables-{dp.backend}-restore", "--noflush"], v4))
    nf_v6, _ = timed(lambda: sh(ns_noflush, [f"ip6tables-{dp.backend}-restore", "--noflush"], v6)) if v6 else (0.0, None)
    check_s, again = timed(lambda: in_ns(ns_plugin, lambda: dp.apply(model)))
    assert again == [], again[:5]
    print(f"result: {rules:,} rules (IPv4 + IPv6), {nsets:,} IP sets, {len(changes):,} change lines")
    print(f"plugin pass                                          {plugin_s:7.2f} s   "
          f"(render {t['render']:.2f}, ipset restore {t['ipset']:.2f}, iptables-restore {t['restore']:.2f}, "
          f"compare {t['plan']:.2f}, read {t['read']:.2f})")
    print(f"floor: plain restore of the final ruleset            {floor:7.2f} s   "
          f"(ipset restore {floor_sets:.2f}, iptables-restore {floor_v4:.2f}, ip6tables-restore {floor_v6:.2f})")
    print(f"ratio plugin / floor                                 {plugin_s / floor:7.2f}x")
    print(f"ratio iptables writes alone (plugin / floor)         {t['restore'] / (floor_v4 + floor_v6):7.2f}x")
    print(f"same ruleset by iptables-restore --noflush           {nf_v4 + nf_v6:7.2f} s   "
          f"(plugin's iptables writes / that: {t['restore'] / (nf_v4 + nf_v6):.2f}x)")
    print(f"second pass, nothing to do                           {check_s * 1000:7.1f} ms")
    for ns in (ns_plugin, ns_floor, ns_noflush):
        netns.delete(ns)
        names.remove(ns)


def one_change(sizes: list[int], endpoints: int, repeat: int, options: Options, names: list[str]) -> None:
    print(f"\n== one policy changed ({endpoints:,} endpoints; median / worst of {repeat}) ==")
    print(f"{'policies':>9} {'rules':>8} {'compile':>9} {'plugin pass':>17} {'render':>8} {'compare':>8} "
          f"{'read':>7} {'restore':>8} {'lines':>6} {'floor':>8} {'vs floor':>9} {'vs first':>9}")
    first = None
    for size in sizes:
        ns = f"{PREFIX}-inc{size}"
        netns.add(ns)
        names.append(ns)
        dp = in_ns(ns, lambda: plugin.dataplane(options))
        in_ns(ns, lambda: dp.apply(compile(state(size, endpoints))))
        rules = count_rules(sh(ns, [f"iptables-{dp.backend}-save"]))
        if options.ipv6 != "off":
            rules += count_rules(sh(ns, [f"ip6tables-{dp.backend}-save"]))
        passes, compiles, renders, plans, restores, lines, floors, reads = [], [], [], [], [], [], [], []
        for i in range(repeat):
            port = 81 + i
            c_s, model = timed(lambda: compile(state(size, endpoints, port=port)))
            p_s, changes = timed(lambda: in_ns(ns, lambda: dp.apply(model)))
            assert changes and all("cali-pi-" in c for c in changes), changes
            compiles.append(c_s)
            passes.append(p_s)
            renders.append(dp.timings["render"])
            plans.append(dp.timings["plan"])
            restores.append(dp.timings["restore"])
            lines.append(sum(len(t.splitlines()) for t in dp.last_restore.values()))
            reads.append(dp.timings["read"])
        # The floor: the last change (its restore input again) by iptables-restore alone.
        # (Measured after the passes: writing behind the plugin's back makes it read back.)
        for _ in range(repeat):
            floor = 0.0
            for version, text in dp.last_restore.items():
                tool = f"{'iptables' if version == 4 else 'ip6tables'}-{dp.backend}-restore"
                floor += timed(lambda: sh(ns, [tool, "--noflush", "--wait"], text))[0]
            floors.append(floor)
        chain = changes[0].split()[1]
        listed = sh(ns, [f"iptables-{dp.backend}", "-S", chain])
        assert f"--dports {port}" in listed, listed
        med = statistics.median(passes)
        first = first or med
        print(f"{size:>9,} {rules:>8,} {statistics.median(compiles):8.2f}s "
              f"{med * 1000:7.1f} / {max(passes) * 1000:5.1f} ms "
              f"{statistics.median(renders) * 1000:6.1f}ms {statistics.median(plans) * 1000:6.1f}ms "
              f"{statistics.median(reads) * 1000:5.1f}ms "
              f"{statistics.median(restores) * 1000:6.1f}ms {statistics.median(lines):6.0f} "
              f"{statistics.median(floors) * 1000:6.1f}ms {med / statistics.median(floors):8.2f}x {med / first:8.2f}x")
        netns.delete(ns)
        names.remove(ns)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--backend", default="auto", choices=["auto", "nft", "legacy"])
    ap.add_argument("--ipv6", default="auto", choices=["auto", "off"], help="off: IPv4 tables only")
    args = ap.parse_args()
    ok, why = netns.available()
    if not ok:
        raise SystemExit(f"needs root and ip netns: {why}")
    options = Options(backend=args.backend, ipv6=args.ipv6)
    names: list[str] = []
    try:
        from pycalico.plugins.policy.iptables.kernel import detect_backend

        families = "IPv4 and IPv6" if args.ipv6 == "auto" else "IPv4"
        print(f"iptables backend: {detect_backend(args.backend)}; {families} tables; namespaces {PREFIX}-*")
        from_scratch(args.policies, args.endpoints, options, names)
        one_change([int(s) for s in args.sizes.split(",")], args.endpoints, args.repeat, options, names)
    finally:
        for ns in names:
            try:
                netns.delete(ns)
            except Exception:
                pass


if __name__ == "__main__":
    main()
