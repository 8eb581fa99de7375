"""What calico-node tells the datastore about itself, as Calico does.

* Felix's status report (``felix/daemon/daemon.go``): every
  ``intervals.reporting_seconds`` (0 turns it off), the first one 10 s after start so an
  agent in a tight restart loop never checks in, a ``StatusReport`` JSON
  ``{"time", "uptime", "first_update"}`` written to
  ``/calico/felix/v2/no-region/host/<host>/status`` with a TTL of
  ``intervals.reporting_ttl_seconds`` and to ``.../last_reported_status`` without one
  (``libcalico-go/lib/backend/model/statusreports.go``). Only etcd keeps it; the
  Kubernetes datastore refuses it, as Calico's does.
* The Kubernetes Node condition ``NetworkUnavailable``: ``False``/``CalicoIsUp`` once the
  agent runs, ``True``/``CalicoIsDown`` when it shuts down in order (calico-node's
  startup and shutdown). Only the Kubernetes datastore has Nodes of its own.

* The CalicoNodeStatus resources that name this node (``core/nodestatus.py``), with
  every datastore.

A datastore offers the first two through two optional methods (``report_agent_status``,
``set_network_available``); one without them, or raising ``OperationNotSupported``,
simply keeps no such status. The reporter runs in its own threads with its own stores,
so a slow datastore never holds up the reconcile loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from pycalico.core.config import Config
from pycalico.core.datastore import Datastore, DatastoreError, OperationNotSupported
from pycalico.core.nodestatus import NodeStatusReporter
from pycalico.core.times import rfc3339

if TYPE_CHECKING:
    from pycalico.core.plugins import Plugins

log = logging.getLogger(__name__)

FIRST_REPORT_DELAY = 10.0  # Felix's wait before its first status report
RETRY_SECONDS = 5.0


@attrs.frozen
class StatusReport:
    """Felix's ``model.StatusReport``."""

    time: str  # RFC 3339, UTC, whole seconds (Go's time.RFC3339)
    uptime: float  # seconds since the agent started
    first_update: bool

    def to_json(self) -> dict:
        return {"time": self.time, "uptime": self.uptime, "first_update": self.first_update}




class StatusReporter:
    """Reports for one configuration, CalicoNodeStatus ones included; ``stop()`` ends
    the threads (and, when ``down``, tells the datastore the node's network is going
    down)."""

    def __init__(self, plugins: Callable[[], Plugins], started: float,
                 requests: Callable[[], Iterable[Any]] = tuple):
        """``plugins``: the plugins in force (read at each report: their configuration,
        their datastore slot for the reporter's own stores, their BGP status);
        ``started``: the agent's start (``time.time()``), uptime counts from there;
        ``requests``: the CalicoNodeStatus resources the agent has synced."""
        self._plugins = plugins
        self._started = started
        self._stop = threading.Event()
        self._store: Datastore | None = None
        self._sent_first = False
        self._network_up = False
        self._unsupported: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)
        self.node_status = NodeStatusReporter(self._connect, plugins, requests)

    def _connect(self) -> Datastore:
        return self._plugins().datastore()

    def _config(self) -> Config:
        return self._plugins().config

    def start(self) -> StatusReporter:
        self._thread.start()
        self.node_status.start()
        return self

    def stop(self, down: bool = False) -> None:
        self._stop.set()
        self.node_status.stop()
        self._thread.join(timeout=10)
        if down and self._network_up:
            self._call("set_network_available", self._config().hostname, False)
        if self._store is not None:
            self._store.close()
            self._store = None

    def _run(self) -> None:
        due = time.monotonic() + FIRST_REPORT_DELAY
        while not self._stop.is_set():
            config = self._config()
            if not self._network_up:
                self._network_up = self._call("set_network_available", config.hostname, True)
            interval = config.intervals.reporting_seconds
            if interval > 0 and time.monotonic() >= due:
                report = StatusReport(rfc3339(), time.time() - self._started, not self._sent_first)
                sent = self._call("report_agent_status", config.hostname, report, config.intervals.reporting_ttl_seconds)
                self._sent_first = self._sent_first or sent
                due = time.monotonic() + (interval if sent else min(interval, RETRY_SECONDS))
            # Wake for the next report, or to retry the condition, or to see whether a
            # reload turned reports on.
            wakes = [due - time.monotonic()] if interval > 0 else []
            if not self._network_up and "set_network_available" not in self._unsupported:
                wakes.append(RETRY_SECONDS)
            self._stop.wait(max(0.0, min(wakes, default=RETRY_SECONDS)))

    def _call(self, method: str, *args: object) -> bool:
        """One status write; whether it was made. A datastore that keeps no such
        status is asked once."""
        if method in self._unsupported:
            return False
        try:
            if self._store is None:
                self._store = self._connect()
            write = getattr(self._store, method, None)
            if write is None:
                raise OperationNotSupported("status", method)
            write(*args)
            return True
        except OperationNotSupported:
            log.debug("datastore keeps no %s", method)
            self._unsupported.add(method)
        except DatastoreError as exc:
            log.warning("status report %s failed: %s", method, exc)
        return False
