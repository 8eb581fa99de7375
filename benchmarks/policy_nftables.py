"""Benchmark the nftables policy dataplane against plain ``nft -f``.

    .venv/bin/python benchmarks/policy_nftables.py [--policies 1000] [--endpoints 1000]
        [--sizes 100,1000,5000] [--repeat 7] [--skip-scratch]

Runs as root, entirely inside network namespaces it creates and deletes (never the
root namespace's ruleset); the state is ``_policy.py``'s (every policy has its own rule
selectors, so each adds two sets per IP family).

1. **From scratch**: ``--policies`` policies over ``--endpoints`` local endpoints. The
   plugin's first pass (its compiler, render, read back, one ``nft -f``) against the
   floor: the same final script loaded once with plain ``nft -f`` into an empty namespace.
2. **One policy changed** (a port of one rule), at each of ``--sizes`` policies: the time
   until the kernel has it, as the agent's hook runs it: the plugin's compiler takes the
   new state (the changed policy is its only new object, as in the agent's cache), then
   the pass (render, plan, ``nft -f``). Median and worst of ``--repeat``. The floors,
   measured after the passes in the same namespace and the same way (a child of a thread
   in the namespace): (a) the plugin's last script again with plain ``nft -f``; (b) one
   rule: the changed chain flushed and given back its first rule only; (c) the same with
   a rule without a verdict (``counter``). ``nft`` reads the table's chains and sets
   before every transaction, and the kernel validates the whole table when a rule has a
   verdict ((b) - (c)): both grow with the table.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys

import _policy  # benchmarks/ is on sys.path (the script's own directory)
from _policy import Namespaces, OneChange, by_size, changed_passes, require_namespaces, resources, state_of, timed

from pycalico.plugins.policy.nftables import NftablesPolicy


def nft_load(script: str) -> float:
    """Seconds for ``nft -f`` of ``script`` in the calling thread's namespace."""
    return timed(lambda: subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True))[0]


def from_scratch(spaces: Namespaces, policies: int, endpoints: int) -> None:
    state = state_of(resources(policies, endpoints))
    plugin = NftablesPolicy()
    ns_plugin, ns_floor = spaces.add("scratch"), spaces.add("floor")
    dp = spaces.run(ns_plugin, lambda: plugin.dataplane())
    t_compile, model = timed(lambda: dp.compiler.compile(state))
    gc.collect()
    t_pass, lines = timed(lambda: spaces.run(ns_plugin, lambda: plugin.reconcile_model(model)))
    timings, script = dp.last_timings, dp.last_transaction
    t_floor = spaces.run(ns_floor, lambda: nft_load(script))
    t_again, again = timed(lambda: spaces.run(ns_plugin, lambda: plugin.reconcile(state)))
    assert again == [], again[:5]
    rules = script.count("\nadd rule ")
    sets = script.count("\nadd set ")
    print(f"from scratch: {policies:,} policies x {endpoints:,} endpoints -> {rules:,} rules, {sets:,} sets, "
          f"{len(script) / 1e6:.1f} MB script; {lines[0]}")
    print(f"  compile (the plugin's compiler, first pass) {t_compile:8.2f} s")
    print(f"  plugin pass                                 {t_pass:8.2f} s   (render {timings['render']:.2f}, "
          f"read {timings['read']:.2f}, plan {timings['plan']:.2f}, nft {timings['nft']:.2f})")
    print(f"  floor: plain nft -f of the same script      {t_floor:8.2f} s")
    print(f"  ratio plugin pass / floor                   {t_pass / t_floor:8.2f}x   "
          f"(compile + pass: {(t_pass + t_compile) / t_floor:.2f}x)")
    print(f"  second pass, nothing to do (compile + pass) {t_again * 1000:8.1f} ms")
    for ns in (ns_plugin, ns_floor):
        spaces.delete(ns)


def _one_size(changes: OneChange, repeat: int) -> dict:
    """Runs in the namespace's thread: the first pass, the changes, then the floors."""
    plugin = NftablesPolicy()
    plugin.reconcile(state_of(changes.res))
    dp = plugin.dataplane()
    samples: dict[str, list] = {k: [] for k in ("hook", "compile", "python", "nft", "lines", "replay", "one", "bare")}
    for t_compile, t_pass, lines, port in changed_passes(dp.compiler.compile, plugin.reconcile_model, changes, repeat):
        assert any("cali-pi-" in line for line in lines) and len(lines) <= 3, lines
        timings = dp.last_timings
        samples["hook"].append(t_compile + t_pass)
        samples["compile"].append(t_compile)
        samples["python"].append(timings["render"] + timings["plan"])
        samples["nft"].append(timings["nft"])
        samples["lines"].append(dp.last_transaction.count("\n"))
    script = dp.last_transaction
    assert f"th dport {port}" in script, script
    flush, first_rule = script.splitlines()[:2]
    assert flush.startswith("flush chain ") and first_rule.startswith("add rule "), script
    # Writing behind the plugin's back makes its next pass read back: measured last.
    chain = flush.split()[-1]
    for _ in range(repeat):
        samples["replay"].append(nft_load(script))
        samples["one"].append(nft_load(f"{flush}\n{first_rule}\n"))
        samples["bare"].append(nft_load(f"{flush}\nadd rule inet calico {chain} counter\n"))  # no verdict
        nft_load(script)  # the chain as it was
    return samples


def one_change(spaces: Namespaces, sizes: list[int], endpoints: int, repeat: int) -> None:
    print(f"\none policy changed, {endpoints:,} endpoints, median of {repeat} (ms):")
    print(f"  {'policies':>8} {'compile+pass':>15} {'compile':>8} {'render+plan':>12} {'nft -f':>7} {'script':>7} "
          f"{'replay':>7} {'one rule':>9} {'no verdict':>11} {'/ replay':>9} {'/ first':>8}")
    first = None
    for size, s, med in by_size(spaces, sizes, endpoints, lambda ns, ch: spaces.run(ns, lambda: _one_size(ch, repeat))):
        first = first or med["hook"]
        print(f"  {size:>8,} {med['hook'] * 1e3:7.1f} / {max(s['hook']) * 1e3:5.1f} {med['compile'] * 1e3:8.1f} "
              f"{med['python'] * 1e3:12.1f} {med['nft'] * 1e3:7.1f} {med['lines']:4.0f} ln {med['replay'] * 1e3:7.1f} "
              f"{med['one'] * 1e3:9.1f} {med['bare'] * 1e3:11.1f} {med['hook'] / med['replay']:8.2f}x "
              f"{med['hook'] / first:7.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--skip-scratch", action="store_true")
    args = ap.parse_args(argv)
    require_namespaces()
    prefix = f"pcnftb{os.getpid() % 100000}"
    print(f"namespaces {prefix}-*; state: {_policy.NAMESPACES} namespaces, {_policy.APPS} apps")
    with Namespaces(prefix) as spaces:
        if not args.skip_scratch:
            from_scratch(spaces, args.policies, args.endpoints)
        one_change(spaces, [int(s) for s in args.sizes.split(",")], args.endpoints, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
