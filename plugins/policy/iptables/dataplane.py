"""One pass: render, compare with what the kernel has, write only the difference.

Order (Felix's ``event_sequencer.go``): IP sets are created and updated first, then the
iptables tables are written (one ``iptables-restore`` per IP version, both at once, one
transaction per changed table), then IP sets no rule uses any more are destroyed.

What the kernel has is read back with ``iptables-save`` and ``ipset save`` (only the
hashes and members are kept) and remembered; a pass trusts what it remembers, except:

* a full read of everything at least every ``refresh_seconds`` (0: every pass), and after
  any failure;
* the tables are read again whenever the kernel says they changed since our last write
  or read, which is cheap to ask: with the nft backend the nftables generation (any
  change to any table moves it), with the legacy backend each table's rule count and
  size (a rule replaced by one of the very same size goes unnoticed until the full read).
  So drift in our chains is repaired on the next pass.

IP set members changed behind our back are noticed at the next full read. When nothing
was read back, what we remember is the previous pass's result, so only the chains and
sets the renderer touched since are compared.
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

from pycalico.core.policy import Compiler, PolicyModel

from . import kernel
from .diff import plan
from .ipsets import plan_sets
from .options import Options
from .ruleset import Renderer, Ruleset, TableSpec, render_config
from .chains import KERNEL_CHAINS, TABLES, Chain

log = logging.getLogger(__name__)


class Dataplane:
    """The iptables and ipset state of one network namespace, and how to converge it."""

    def __init__(self, options: Options | None = None):
        self.options = options or Options()
        self.backend = kernel.detect_backend(self.options.backend)
        self.compiler = Compiler()  # this namespace's desired states, pass after pass
        self.renderer = Renderer()
        self._tables: dict[int, dict[str, kernel.TableState] | None] = {4: None, 6: None}
        self._sets: dict[str, kernel.SetState] | None = None
        self._last_full_read = -math.inf
        self._generation: int | None = None
        self._in_kernel: dict[int, int] = {}  # version -> the ruleset whose plan made self._tables[version]
        self._undestroyed: set[str] = set()  # sets still in use by rules of others
        # What the last pass wrote, for tests and the benchmark.
        self.last_restore: dict[int, str] = {}
        self.last_ipset_restore = ""
        self.reads = 0  # iptables-save runs
        self.writes = 0  # iptables-restore runs
        self.timings: dict[str, float] = {}  # seconds spent in the last pass, by step

    # --- what to program -------------------------------------------------------------

    def versions(self, model: PolicyModel) -> list[int]:
        choice = self.options.ipv6
        if choice == "off":
            return [4]
        if choice == "on":
            return [4, 6]
        if model.settings.ipv6_support and kernel.available(self.backend, 6) and os.path.exists("/proc/sys/net/ipv6"):
            return [4, 6]
        return [4]

    def render(self, model: PolicyModel) -> dict[int, Ruleset]:
        start = time.perf_counter()
        rulesets = self.renderer.render(model, render_config(model, self.options), tuple(self.versions(model)))
        self.timings["render"] = time.perf_counter() - start
        return rulesets

    # --- reading ---------------------------------------------------------------------

    def forget(self) -> None:
        """Read everything back on the next pass."""
        self._tables = {4: None, 6: None}
        self._sets = None
        self._in_kernel = {}

    def _read(self, versions: list[int]) -> bool:
        """Read back what may have changed behind our back; whether anything was read."""
        now = time.monotonic()
        full = (
            now - self._last_full_read >= self.options.refresh_seconds
            or self._sets is None
            or any(self._tables.get(v) is None for v in versions)
        )
        if full:
            self._sets = kernel.read_ipsets()
            self._last_full_read = now
        tables_stale = full
        if not tables_stale:
            generation = self._kernel_generation()
            tables_stale = generation is None or generation != self._generation
        if tables_stale:
            for v in versions:
                self._tables[v] = kernel.read_tables(self.backend, v)
                self.reads += 1
        return tables_stale

    def _kernel_generation(self):
        return kernel.nft_generation() if self.backend == "nft" else kernel.legacy_fingerprint()

    # --- one pass --------------------------------------------------------------------

    def apply(self, model: PolicyModel) -> list[str]:
        """Converge the kernel to ``model``; one line per change, empty when in sync."""
        self.timings = {}
        rulesets = self.render(model)
        try:
            return self._apply(rulesets)
        except BaseException:
            self.forget()
            raise

    def _apply(self, rulesets: dict[int, Ruleset]) -> list[str]:
        versions = sorted(rulesets)
        clock = time.perf_counter()

        def lap(step: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            self.timings[step] = self.timings.get(step, 0.0) + now - clock
            clock = now

        read = self._read(versions)
        lap("read")
        changes: list[str] = []
        self.last_restore = {}
        self.last_ipset_restore = ""

        # What we have is the previous pass's result, unless read back: then only what the
        # renderer touched since can differ.
        since = {}
        for v in versions:
            touched = rulesets[v].touched
            known = not read and touched is not None and touched.since == self._in_kernel.get(v)
            since[v] = touched if known else None
        set_names = None
        if all(since[v] is not None for v in versions):
            set_names = frozenset(self._undestroyed).union(*(since[v].sets for v in versions))

        want_sets = {}
        for v in versions:
            want_sets.update(rulesets[v].ipsets)
        set_plan = plan_sets(want_sets, self._sets or {}, set_names)
        lap("plan")
        if set_plan.lines:
            self.last_ipset_restore = "\n".join(set_plan.lines) + "\n"
            kernel.ipset_restore(self.last_ipset_restore)
        lap("ipset")
        self._sets = set_plan.result
        changes += set_plan.changes

        plans = {v: plan(rulesets[v], self._tables[v] or {}, since[v]) for v in versions}
        for v in versions:
            lines = [line for p in plans[v] for line in p.lines]
            if lines:
                self.last_restore[v] = "\n".join(lines) + "\n"
        lap("plan")
        self._restore(self.last_restore)
        lap("restore")
        for v in versions:
            self._tables[v] = {p.table: p.result for p in plans[v]}
            self._in_kernel[v] = rulesets[v].serial
            for p in plans[v]:
                changes += p.changes

        if set_plan.stale:
            changes += self._destroy_sets(set_plan.stale)
        lap("ipset")

        # After our own write (or read): the next pass reads back only if this moves.
        self._generation = self._kernel_generation()
        lap("read")
        return changes

    def _restore(self, texts: dict[int, str]) -> None:
        """One ``iptables-restore`` per IP version, the two at once: the tables are separate
        and each transaction's cost (the kernel checks the whole table) is its own."""
        if len(texts) < 2:
            for v, text in texts.items():
                kernel.restore(self.backend, v, text)
        else:
            # Threads started here are in this thread's network namespace, as their children.
            with ThreadPoolExecutor(max_workers=len(texts)) as pool:
                done = [pool.submit(kernel.restore, self.backend, v, text) for v, text in texts.items()]
            for future in done:
                future.result()
        self.writes += len(texts)

    def _destroy_sets(self, names: list[str]) -> list[str]:
        changes = []
        try:
            kernel.ipset_restore("".join(f"destroy {n}\n" for n in names))
            gone = names
        except kernel.KernelError:
            # Some set is still in use (a rule we do not own refers to it): one by one.
            gone = []
            for name in names:
                try:
                    kernel.ipset_destroy(name)
                    gone.append(name)
                except kernel.KernelError as exc:
                    log.warning("ipset %s not destroyed: %s", name, exc.detail or exc)
                    changes.append(f"ipset {name} kept: still in use")
                    self._undestroyed.add(name)
        assert self._sets is not None
        for name in gone:
            self._sets.pop(name, None)
            self._undestroyed.discard(name)
            changes.append(f"ipset {name} deleted")
        return changes

    # --- removing everything ---------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Remove every hook, chain and IP set of ours (both IP versions)."""
        empty = {
            t: TableSpec(
                {},
                {k: Chain(k, (), seed=f"{k} insert") for k in KERNEL_CHAINS[t]},
                {k: Chain(k, (), seed=f"{k} append") for k in KERNEL_CHAINS[t]},
            )
            for t in TABLES
        }
        versions = [v for v in (4, 6) if kernel.available(self.backend, v)]
        self.forget()
        self._last_full_read = -math.inf
        try:
            return self._apply({v: Ruleset(v, empty, {}) for v in versions})
        except BaseException:
            self.forget()
            raise
