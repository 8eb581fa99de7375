"""CalicoNodeStatus: the status a user asks of one node, filled in by that node's
calico-node, as Calico's status reporter does (``node/pkg/status/``).

A controller (``core/controllers/runner.py``) driven by the agent's own sync and by the
reports that fall due: the requests come from the agent's cache (through Typha when it
is used), so they cost no watch and no list of their own, and the loop kicks the
controller when one for this node appears, changes or goes (``changed``). Each pass
takes the requests naming this node and reports on
those that are new, whose spec changed, or whose ``updatePeriodSeconds`` has come round
again (0: the first report only). A report reads the routing plugin's BGP daemon
(``pycalico_bgp_status``) for the classes the request names, replaces those parts of
the status and writes the resource, with compare-and-swap on the version just read,
only when that changed the status (``lastUpdated`` is stamped on writes alone). A
deleted request is simply absent from the next list: its reports stop.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable

import attrs

from pycalico.core.controllers.runner import Runner, Watch
from pycalico.core.datastore import Conflict, Datastore, Event, NotFound
from pycalico.core.plugins import Plugins
from pycalico.core.resources.nodestatus import (
    AGENT,
    BGP,
    NO_BGP_DAEMON,
    ROUTES,
    CalicoNodeStatus,
    CalicoNodeStatusSpec,
    CalicoNodeStatusStatus,
)
from pycalico.core.times import rfc3339

log = logging.getLogger(__name__)

KIND = CalicoNodeStatus.KIND
PARTS = {AGENT: "agent", BGP: "bgp", ROUTES: "routes"}  # class -> the part of the status it fills


def fill(current: CalicoNodeStatusStatus | None, read: CalicoNodeStatusStatus,
         classes: Collection[str]) -> CalicoNodeStatusStatus:
    """``current`` with the parts ``classes`` name taken from ``read``; as in Calico, a
    part no longer asked for keeps what it last said."""
    return attrs.evolve(current or CalicoNodeStatusStatus(),
                        **{PARTS[c]: getattr(read, PARTS[c]) for c in classes if c in PARTS})


@attrs.frozen
class _Schedule:
    spec: CalicoNodeStatusSpec  # the spec last reported on
    due: float | None  # time.monotonic() of the next report; None: no more


class NodeStatusController:
    """The reports of this node's CalicoNodeStatus requests (a ``Controller`` for
    ``Runner``: ``period`` is the time to the next report due)."""

    name = "node-status"

    def __init__(self, connect: Callable[[], Datastore], plugins: Callable[[], Plugins],
                 requests: Callable[[], Iterable[CalicoNodeStatus]]):
        """``connect``: a new store for the writes (connected at the first one);
        ``plugins``: the plugins in force (their config names this node; their routing
        plugin reads BGP); ``requests``: every CalicoNodeStatus the agent has synced."""
        self._connect = connect
        self._plugins = plugins
        self._requests = requests
        self._store: Datastore | None = None
        self._lock = threading.Lock()
        self._schedules: dict[str, _Schedule] = {}

    @property
    def period(self) -> float | None:
        dues = [s.due for s in self._schedules.values() if s.due is not None]
        return max(0.0, min(dues) - time.monotonic()) if dues else None

    def watches(self) -> list[Watch]:
        return []  # the loop kicks the runner: see ``wanted``

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()

    def _datastore(self) -> Datastore:
        with self._lock:
            if self._store is None:
                self._store = self._connect()
            return self._store

    def wanted(self, event: Event) -> bool:
        """A request for this node that appeared, changed its spec or went; not a write
        of the reporter's own."""
        request = event.resource
        known = self._schedules.get(request.name)
        if event.type == "deleted" or request.spec.node != self._plugins().config.hostname:
            return known is not None
        return known is None or known.spec != request.spec

    def reconcile(self) -> None:
        hostname = self._plugins().config.hostname
        mine = {r.name: r for r in self._requests() if r.spec.node == hostname}
        for name in set(self._schedules) - set(mine):
            log.info("CalicoNodeStatus %s: no longer for this node; its reports stop", name)
            del self._schedules[name]
        for name, request in mine.items():
            period = request.spec.update_period_seconds
            if period is None:  # refused by validation, but a store may hold anything
                log.warning("CalicoNodeStatus %s: no updatePeriodSeconds, not reported", name)
                continue
            known = self._schedules.get(name)
            same = known is not None and known.spec == request.spec
            now = time.monotonic()
            if same and (known.due is None or known.due > now):
                continue
            if not self._report(request):
                # Changed since the list: report at once on what it is now.
                self._schedules[name] = _Schedule(request.spec, now)
                continue
            if not period:
                due = None
            elif same and known.due is not None:
                # At a steady rate, as Calico's ticker; periods missed are not made up.
                due = known.due + period * (math.floor((now - known.due) / period) + 1)
            else:
                due = now + period
            self._schedules[name] = _Schedule(request.spec, due)

    def _report(self, request: CalicoNodeStatus) -> bool:
        """Read and, if the status changed, write; False on a write conflict."""
        classes = request.spec.classes or ()
        try:
            read = self._plugins().bgp_status(classes) or NO_BGP_DAEMON
        except Exception as exc:  # noqa: BLE001 - as Calico: this update is skipped, the next one tried
            log.warning("CalicoNodeStatus %s: BGP status not read: %s", request.name, exc)
            return True
        status = fill(request.status, read, classes)
        if request.status is not None and _unstamped(status) == _unstamped(request.status):
            return True
        status = attrs.evolve(status, last_updated=rfc3339())
        try:
            self._datastore().update(attrs.evolve(request, status=status))
        except NotFound:
            return True  # deleted since the list: the next pass forgets it
        except Conflict:
            return False
        log.debug("CalicoNodeStatus %s: status written", request.name)
        return True


def _unstamped(status: CalicoNodeStatusStatus) -> CalicoNodeStatusStatus:
    return attrs.evolve(status, last_updated=None)


class NodeStatusReporter:
    """The controller run until ``stop()``."""

    def __init__(self, connect: Callable[[], Datastore], plugins: Callable[[], Plugins],
                 requests: Callable[[], Iterable[CalicoNodeStatus]]):
        self.controller = NodeStatusController(connect, plugins, requests)
        self._stop = threading.Event()
        self._runner = Runner(self.controller, lambda: True, self._stop)

    def start(self) -> NodeStatusReporter:
        self._runner.start()
        return self

    def changed(self, event: Event | None = None) -> None:
        """A CalicoNodeStatus changed in the agent's cache (None: the whole cache was
        replaced by a snapshot): a pass, if it matters to this node."""
        if event is None or self.controller.wanted(event):
            self._runner.kick()

    def stop(self) -> None:
        self._stop.set()
        self._runner.join()
        self.controller.close()

