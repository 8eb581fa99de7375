"""Running a controller: a reconcile pass when something it watches changed (a burst of
changes makes one pass) and every period, only while this replica leads.

Every controller is level-based: a pass reads the whole desired and actual state and
writes only the difference, so a missed, doubled or reordered trigger costs nothing but
a pass. A failed pass is retried with backoff; the periodic pass repairs the rest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs

from .leader import NotLeader

log = logging.getLogger(__name__)

COALESCE = 0.2  # seconds a pass waits after its first trigger, for the rest of a burst
MAX_BACKOFF = 30.0


def backoff(failures: int) -> float:
    return min(0.5 * 2 ** failures, MAX_BACKOFF)


@attrs.frozen
class Watch:
    """A trigger: ``events(stop)`` yields changes (raising when its datastore fails);
    ``wanted(event)`` filters them."""

    name: str
    events: Callable[[threading.Event], Iterator[Any]]
    wanted: Callable[[Any], bool] = lambda event: True


class Controller(Protocol):
    name: str
    period: float

    def reconcile(self) -> None:
        """One pass."""

    def watches(self) -> list[Watch]:
        """What triggers a pass besides the period."""


class Runner:
    """A controller's pass thread and its watch threads, until ``stop``."""

    def __init__(self, controller: Controller, acting: Callable[[], bool], stop: threading.Event):
        self.controller, self.acting, self.stop = controller, acting, stop
        self._kicked = threading.Event()
        self.passes = 0
        self.threads = [threading.Thread(target=self._run, name=f"controller:{controller.name}", daemon=True)]
        self.threads += [threading.Thread(target=follow, args=(w, stop, self._kicked.set, controller.name),
                                          name=f"watch:{controller.name}:{w.name}", daemon=True)
                         for w in controller.watches()]

    def start(self) -> Runner:
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the threads to end once ``stop`` is set."""
        self._kicked.set()  # wakes the pass thread from its period
        for t in self.threads:
            t.join(timeout)

    def kick(self) -> None:
        self._kicked.set()

    def _run(self) -> None:
        failures = 0
        self._kicked.set()  # a first pass at once
        while not self.stop.is_set():
            self._kicked.wait(self.controller.period)
            if self.stop.wait(COALESCE):
                return
            self._kicked.clear()
            if not self.acting():
                continue
            try:
                self.controller.reconcile()
                self.passes += 1
                failures = 0
            except NotLeader:
                continue
            except Exception as exc:
                failures += 1
                wait = backoff(failures)
                log.warning("%s controller: pass failed (retrying in %.1fs): %s", self.controller.name, wait, exc,
                            exc_info=log.isEnabledFor(logging.DEBUG))
                if self.stop.wait(wait):
                    return
                self._kicked.set()


def follow(watch: Watch, stop: threading.Event, kick: Callable[[], None], owner: str) -> None:
    """Call ``kick`` for every wanted event of ``watch`` until ``stop``; a watch that
    fails starts over after a growing pause, with a kick (whatever changed while it was
    down is caught by the pass that follows)."""
    failures = 0
    while not stop.is_set():
        try:
            for event in watch.events(stop):
                failures = 0
                if watch.wanted(event):
                    kick()
            wait = COALESCE
        except Exception as exc:  # noqa: BLE001 - the watch starts over after a pause
            failures += 1
            wait = backoff(failures)
            log.info("%s: watch %s ended (%s); again in %.1fs", owner, watch.name, exc, wait)
            kick()
        if stop.wait(wait):
            return
