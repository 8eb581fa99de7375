"""Benchmark the iptables policy plugin against plain iptables-restore, in namespaces it makes.

    .venv/bin/python benchmarks/policy_iptables.py [--endpoints 1000] [--policies 1000]
        [--sizes 100,1000,5000] [--repeat 7] [--backend auto] [--ipv6 auto|off]

Everything runs in network namespaces created here (``pcbench<pid>-*``) and deleted on
exit; the endpoints are WorkloadEndpoints whose interfaces do not exist (the kernel takes
rules naming absent interfaces). The state is ``_policy.py``'s.

1. From scratch: ``--policies`` policies over ``--endpoints`` endpoints, one plugin pass
   (compile included) into an empty namespace, beside the floor: the final ruleset
   (``ipset save``, ``iptables-save``, ``ip6tables-save`` of that namespace) loaded once
   into another empty namespace with plain ``ipset restore`` / ``iptables-restore``; and
   the same loaded with ``--noflush`` (which the plugin must use, not to flush others' rules).
2. One policy changed (a port of one policy's ingress rule), at each of ``--sizes``
   policies: the time until the kernel has it, as the agent's hook runs it: the plugin's
   compiler takes the new state (the changed policy is its only new object, as in the
   agent's cache), then the pass (render, compare, restore). Median and worst of
   ``--repeat``. The floors, measured after the passes in the same namespace and the same
   way (a child of a thread in the namespace): (a) the plugin's last restore inputs again
   by ``iptables-restore --noflush`` alone (IPv4 and IPv6 at once, as the plugin writes
   them); (b) the smallest rule change there is, one
   ``-R`` of one rule of that policy's IPv4 chain. With the nft backend any rule with a
   verdict makes the kernel validate the whole table, so both grow with the table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import _policy  # benchmarks/ is on sys.path (the script's own directory)
from _policy import Namespaces, OneChange, by_size, changed_passes, require_namespaces, resources, state_of, timed

from pycalico.plugins.policy.iptables import Options, plugin
from pycalico.plugins.policy.iptables.kernel import command, detect_backend


def count_rules(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("-A "))


def run(argv: list[str], data: str | None = None) -> str:
    """A command in the calling thread's namespace (the benchmark only calls it from one of its own)."""
    return subprocess.run(argv, input=data, capture_output=True, text=True, check=True).stdout


def from_scratch(spaces: Namespaces, policies: int, endpoints: int, options: Options) -> None:
    print(f"\n== from scratch: {policies:,} policies x {endpoints:,} endpoints ==")
    state = state_of(resources(policies, endpoints))
    ns_plugin, ns_floor, ns_noflush = spaces.add("scratch"), spaces.add("floor"), spaces.add("noflush")
    dp = spaces.run(ns_plugin, lambda: plugin.dataplane(options))
    compile_s, model = timed(lambda: dp.compiler.compile(state))
    pass_s, changes = timed(lambda: spaces.run(ns_plugin, lambda: dp.apply(model)))
    t = dp.timings
    v4 = spaces.sh(ns_plugin, [command(dp.backend, 4, "save")])
    v6 = spaces.sh(ns_plugin, [command(dp.backend, 6, "save")]) if options.ipv6 != "off" else ""
    sets = spaces.sh(ns_plugin, ["ipset", "save"])
    rules = count_rules(v4) + count_rules(v6)
    nsets = sets.count("\ncreate ") + sets.startswith("create ")
    floor_sets, _ = timed(lambda: spaces.sh(ns_floor, ["ipset", "restore"], sets))
    floor_v4, _ = timed(lambda: spaces.sh(ns_floor, [command(dp.backend, 4, "restore")], v4))
    floor_v6, _ = timed(lambda: spaces.sh(ns_floor, [command(dp.backend, 6, "restore")], v6)) if v6 else (0.0, None)
    floor = floor_sets + floor_v4 + floor_v6
    # The same, but with --noflush, as any writer that must leave others' rules alone.
    spaces.sh(ns_noflush, ["ipset", "restore"], sets)
    nf_v4, _ = timed(lambda: spaces.sh(ns_noflush, [command(dp.backend, 4, "restore"), "--noflush"], v4))
    nf_v6 = timed(lambda: spaces.sh(ns_noflush, [command(dp.backend, 6, "restore"), "--noflush"], v6))[0] if v6 else 0.0
    check_s, again = timed(lambda: spaces.run(ns_plugin, lambda: dp.apply(dp.compiler.compile(state))))
    assert again == [], again[:5]
    total = compile_s + pass_s
    print(f"result: {rules:,} rules (IPv4 + IPv6), {nsets:,} IP sets, {len(changes):,} change lines")
    print(f"compile (the plugin's compiler, first pass)          {compile_s:7.2f} s")
    print(f"plugin pass                                          {pass_s:7.2f} s   "
          f"(render {t['render']:.2f}, ipset restore {t['ipset']:.2f}, iptables-restore {t['restore']:.2f}, "
          f"compare {t['plan']:.2f}, read {t['read']:.2f})")
    print(f"floor: plain restore of the final ruleset            {floor:7.2f} s   "
          f"(ipset restore {floor_sets:.2f}, iptables-restore {floor_v4:.2f}, ip6tables-restore {floor_v6:.2f})")
    print(f"ratio plugin pass / floor                            {pass_s / floor:7.2f}x   "
          f"(compile + pass: {total / floor:.2f}x)")
    print(f"same ruleset by iptables-restore --noflush           {nf_v4 + nf_v6:7.2f} s   "
          f"(plugin's iptables writes / that: {t['restore'] / (nf_v4 + nf_v6):.2f}x)")
    print(f"second pass, nothing to do (compile + pass)          {check_s * 1000:7.1f} ms")
    for ns in (ns_plugin, ns_floor, ns_noflush):
        spaces.delete(ns)


def _one_size(changes: OneChange, repeat: int, options: Options) -> dict:
    """Runs in the namespace's thread: the first pass, the changes, then the floors."""
    dp = plugin.dataplane(options)
    model = dp.compiler.compile(state_of(changes.res))
    dp.apply(model)
    samples: dict[str, list] = {k: [] for k in ("hook", "compile", "python", "restore", "lines", "replay", "one")}
    samples["rules"] = [sum(count_rules(run([command(dp.backend, v, "save")])) for v in dp.versions(model))]
    for c_s, p_s, lines, port in changed_passes(dp.compiler.compile, dp.apply, changes, repeat):
        assert lines and all("cali-pi-" in c for c in lines), lines
        samples["hook"].append(c_s + p_s)
        samples["compile"].append(c_s)
        samples["python"].append(dp.timings["render"] + dp.timings["plan"])
        samples["restore"].append(dp.timings["restore"])
        samples["lines"].append(sum(len(t.splitlines()) for t in dp.last_restore.values()))
    chain = lines[0].split()[1]
    listed = run([command(dp.backend, 4, "save")])
    assert f"-A {chain} " in listed and f"--dports {port}" in listed
    first_rule = next(line for line in listed.splitlines() if line.startswith(f"-A {chain} "))
    one_rule = f"*filter\n-R {chain} 1 {first_rule.split(' ', 2)[2]}\nCOMMIT\n"
    # Writing behind the plugin's back makes its next pass read back: measured last.
    def restore(item: tuple[int, str]) -> str:
        return run([command(dp.backend, item[0], "restore"), "--noflush", "--wait"], item[1])

    for _ in range(repeat):
        # Both versions at once, as the plugin writes them.
        with ThreadPoolExecutor(max_workers=2) as pool:
            samples["replay"].append(timed(lambda: list(pool.map(restore, dp.last_restore.items())))[0])
        samples["one"].append(timed(lambda: run([command(dp.backend, 4, "restore"), "--noflush", "--wait"], one_rule))[0])
    return samples


def one_change(spaces: Namespaces, sizes: list[int], endpoints: int, repeat: int, options: Options) -> None:
    print(f"\n== one policy changed ({endpoints:,} endpoints; median / worst of {repeat}) ==")
    print(f"{'policies':>9} {'rules':>8} {'compile+pass':>15} {'compile':>8} {'render+plan':>11} {'restore':>8} "
          f"{'lines':>6} {'replay':>8} {'one -R':>8} {'/ replay':>9} {'/ first':>8}")
    first = None

    def measure(ns: str, changes: OneChange) -> dict:
        return spaces.run(ns, lambda: _one_size(changes, repeat, options))

    for size, s, med in by_size(spaces, sizes, endpoints, measure):
        first = first or med["hook"]
        print(f"{size:>9,} {med['rules']:>8,} {med['hook'] * 1000:7.1f} / {max(s['hook']) * 1000:5.1f} "
              f"{med['compile'] * 1000:6.1f}ms {med['python'] * 1000:9.1f}ms {med['restore'] * 1000:6.1f}ms "
              f"{med['lines']:6.0f} {med['replay'] * 1000:6.1f}ms {med['one'] * 1000:6.1f}ms "
              f"{med['hook'] / med['replay']:8.2f}x {med['hook'] / first:7.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--backend", default="auto", choices=["auto", "nft", "legacy"])
    ap.add_argument("--ipv6", default="auto", choices=["auto", "off"], help="off: IPv4 tables only")
    ap.add_argument("--skip-scratch", action="store_true")
    args = ap.parse_args()
    require_namespaces()
    options = Options(backend=args.backend, ipv6=args.ipv6)
    prefix = f"pcbench{os.getpid() % 100000}"
    families = "IPv4 and IPv6" if args.ipv6 == "auto" else "IPv4"
    print(f"iptables backend: {detect_backend(args.backend)}; {families} tables; namespaces {prefix}-*; "
          f"state: {_policy.NAMESPACES} namespaces, {_policy.APPS} apps")
    with Namespaces(prefix) as spaces:
        if not args.skip_scratch:
            from_scratch(spaces, args.policies, args.endpoints, options)
        one_change(spaces, [int(s) for s in args.sizes.split(",")], args.endpoints, args.repeat, options)


if __name__ == "__main__":
    main()
