"""One network namespace's table: render, compare with the kernel, write the difference.

Per pass (``Dataplane.apply``):

1. render the model (only what its changes list, see :mod:`.table`);
2. know the kernel's table: the state this object last wrote is the kernel's as long as
   the ruleset generation is the one that write produced; if the generation moved (anyone
   committed anything), or ``refresh_seconds`` passed, read the table back
   (``nft -j list table inet calico``);
3. plan the difference (:mod:`.transaction`) and apply it as one ``nft -f`` transaction;
   when the table was not read back, it is the previous pass's result, and only what
   the renderer touched since is compared;
4. remember the written state and the generation it produced (only if that is exactly the
   generation before plus one: otherwise someone else committed in between, and the next
   pass reads back).

A failed transaction forgets the kernel state; the pass retries after reading the table
back, and a second failure writes the whole table (``delete table`` + create, still one
transaction). A third failure raises, and the loop retries on its next pass.
"""

from __future__ import annotations

import threading
import time

from pycalico.core.policy import Compiler
from pycalico.core.policy.model import PolicyModel

from .kernel import Nft, NftError, generation
from .render import Effective
from .state import TableState
from .table import Renderer
from .transaction import plan


class Dataplane:
    def __init__(self, nft: Nft | None = None):
        self.nft = nft or Nft()
        self.compiler = Compiler()  # this namespace's desired states, pass after pass
        self.renderer = Renderer()
        self.lock = threading.Lock()
        self.actual: TableState | None = None  # the kernel's table at self.generation (None: no table)
        self.generation: int | None = None  # None: self.actual is not known to be the kernel's
        self.read_at = 0.0
        self.written: TableState | None = None  # what the last successful pass left in place
        self.written_serial = 0  # the rendered table that is (self.written)
        self.last_transaction = ""  # the last script applied
        self.last_timings: dict[str, float] = {}
        self.reads = 0

    def forget(self) -> None:
        """Read the table back on the next pass."""
        self.generation = None

    def _read(self) -> None:
        for _ in range(5):
            before = generation()
            table = self.nft.read()
            after = generation()
            if before == after:
                break
        self.actual, self.generation, self.read_at = table, after, time.monotonic()
        self.reads += 1

    def apply(self, model: PolicyModel, eff: Effective, refresh_seconds: float = 180.0) -> list[str]:
        with self.lock:
            return self._apply(model, eff, refresh_seconds)

    def _apply(self, model: PolicyModel, eff: Effective, refresh_seconds: float) -> list[str]:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        desired = self.renderer.render(model, eff)
        wanted = desired.state
        timings["render"] = time.perf_counter() - start
        rebuild = ""
        error: NftError | None = None
        for attempt in range(3):
            t = time.perf_counter()
            current = generation()
            due = time.monotonic() - self.read_at >= refresh_seconds
            if self.generation is None or current != self.generation or due:
                self._read()
            timings["read"] = timings.get("read", 0.0) + time.perf_counter() - t
            t = time.perf_counter()
            known = (
                self.actual is not None
                and self.actual is self.written
                and desired.touched is not None
                and desired.touched.since == self.written_serial
            )
            script = plan(desired, self.actual, self.written, rebuild=rebuild, only_touched=known)
            timings["plan"] = time.perf_counter() - t
            if script.empty:
                # The kernel holds the desired table: next time, compare with that.
                self.actual = self.written = wanted
                self.written_serial = desired.serial
                self.last_timings = timings
                return []
            t = time.perf_counter()
            try:
                self.nft.apply(script.text)
            except NftError as exc:
                error = exc
                self.generation = None
                if attempt == 1:
                    rebuild = f"an incremental update failed: {str(exc).splitlines()[0][:200]}"
                continue
            finally:
                timings["nft"] = timings.get("nft", 0.0) + time.perf_counter() - t
            before = self.generation
            after = generation()
            self.actual = wanted
            self.generation = after if before is not None and after == before + 1 else None
            self.written, self.written_serial = wanted, desired.serial
            self.last_transaction = script.text
            self.last_timings = timings
            return list(script.lines)
        assert error is not None
        raise error
