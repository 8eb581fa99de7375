"""The reconcile loop: datastore changes and calico.toml edits in, converged kernel out.

Three threads feed one queue: the sync thread (a snapshot, then the watch), the
config watcher (watchfiles on calico.toml) and the resync timer implied by the queue
timeout. The loop thread drains a burst of messages, folds them into the cache and
runs one pass: compute the desired state, call the routing then the policy
reconciler, report. Reconcilers are level-based, so a pass is safe to run at any
time; the loop only decides *when*.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

import attrs

from pycalico.core import calc, logs, registration
from pycalico.core import config as cfg
from pycalico.core.datastore import Datastore, DatastoreError, Event, Snapshot
from pycalico.core.plugins import Plugins, Registry
from pycalico.core.report import PassReport, Reason

log = logging.getLogger(__name__)

RECONCILED_SLOTS = ("routing", "policy")
RETRY_SECONDS = (0.5, 1, 2, 5, 10)


@attrs.frozen
class _ConfigChanged:
    pass


@attrs.frozen
class _Unavailable:
    error: str


class Loop:
    def __init__(self, config_path: str | Path, registry: Registry | None = None, watch_config: bool = True,
                 own_logging: bool = False):
        """``own_logging``: the process's logging is this loop's to set (calico-node), so a
        reload applies a changed ``[logging]`` table."""
        self.config_path = Path(config_path)
        self._registry = registry or Registry()
        self._watch_config = watch_config
        self._own_logging = own_logging
        self._queue: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._sync_stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.cache = calc.Cache()
        self.in_sync = False
        self.passes = 0
        self.last_report: PassReport | None = None
        self.last_config_error: str | None = None
        self._written = cfg.read(self.config_path)  # as in the file, before plugins bind it
        self.plugins = Plugins.load(self._written, str(self.config_path), self._registry)
        self._datastore: Datastore | None = None
        self._writer: Datastore | None = None  # for the node step's writes; not the sync's

    @property
    def config(self) -> cfg.Config:
        return self.plugins.config

    # -- lifecycle ---------------------------------------------------------------

    def run(self, once: bool = False) -> None:
        """Run until ``stop()``; with ``once``, return after the first synced pass."""
        self._start_sync()
        if self._watch_config:
            self._spawn("config-watch", self._watch_config_file)
        try:
            self._serve(once)
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask the loop to finish; safe from a signal handler or another thread."""
        self._stop.set()
        self._queue.put(None)

    def _spawn(self, name: str, target: Any, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _start_sync(self) -> None:
        self._sync_stop = threading.Event()
        self._datastore = self.plugins.datastore()
        self._spawn("sync", self._sync, self._datastore, self._sync_stop)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _stop_sync(self) -> None:
        self._sync_stop.set()
        if self._datastore is not None:
            self._datastore.close()
            self._datastore = None

    def _shutdown(self) -> None:
        self._stop.set()
        self._stop_sync()
        self._close_writer()
        for thread in self._threads:
            thread.join(timeout=5)
        self.plugins.unconfigure()

    # -- producers -----------------------------------------------------------------

    def _sync(self, store: Datastore, stop: threading.Event) -> None:
        """Snapshot then watch; on failure wait and start over with a new snapshot."""
        failures = 0
        while not stop.is_set():
            try:
                snapshot = store.snapshot()
                self._queue.put(snapshot)
                failures = 0
                for event in store.watch(snapshot.revision, stop):
                    self._queue.put(event)
                return
            except DatastoreError as exc:
                self._queue.put(_Unavailable(str(exc)))
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("datastore: %s; resyncing in %.1fs", exc, delay)
                stop.wait(delay)

    def _watch_config_file(self) -> None:
        import watchfiles  # only the long-running agent needs it

        target = self.config_path.resolve()
        # Editors replace files by rename, so watch the directory, not the inode.
        for changes in watchfiles.watch(
            target.parent, stop_event=self._stop, debounce=200, rust_timeout=500, recursive=False
        ):
            if any(Path(path).resolve() == target for _, path in changes):
                self._queue.put(_ConfigChanged())

    # -- the loop --------------------------------------------------------------------

    def _serve(self, once: bool) -> None:
        next_resync = time.monotonic() + self.config.intervals.resync_seconds
        while not self._stop.is_set():
            timeout = max(0.0, next_resync - time.monotonic())
            try:
                burst = [self._queue.get(timeout=timeout)]
            except queue.Empty:
                burst = []
            burst += self._drain()
            if self._stop.is_set():
                return
            reason = self._fold(burst) if burst else "resync"
            if reason is None or not self.in_sync:
                continue
            self.run_pass(reason)
            next_resync = time.monotonic() + self.config.intervals.resync_seconds
            if once:
                return

    def _drain(self) -> list[Any]:
        """Everything that arrives within the coalescing window, so a burst of updates
        costs one pass."""
        items = []
        deadline = time.monotonic() + self.config.intervals.coalesce_seconds
        while True:
            try:
                items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return items

    def _fold(self, burst: list[Any]) -> Reason | None:
        """Apply a burst to the cache; the reason for a pass, or None if none is due."""
        reason: Reason | None = None
        for item in burst:
            if isinstance(item, Snapshot):
                self.cache.replace(item)
                self.in_sync = True
                reason = "sync"
            elif isinstance(item, Event):
                self.cache.apply(item)
                reason = reason or "update"
            elif isinstance(item, _ConfigChanged):
                if self._reload_config():
                    reason = "config"
            elif isinstance(item, _Unavailable):
                # Keep the cache and the kernel as they are: forwarding and enforcement
                # go on with what we have until the datastore is back.
                log.debug("datastore unavailable: %s", item.error)
        return reason

    def _reload_config(self) -> bool:
        try:
            written = cfg.read(self.config_path)
            if written == self._written:
                return False
            plugins = Plugins.load(written, str(self.config_path), self._registry)
        except Exception as exc:  # a bad file or a broken plugin: keep what runs
            self.last_config_error = str(exc)
            log.error("config reload refused, keeping the last good config: %s", str(exc).replace("\n", "; "))
            return False
        self.last_config_error = None
        self._written = written
        datastore_changed = plugins.config.datastore != self.config.datastore
        if self._own_logging and plugins.config.logging != self.config.logging:
            logs.setup(plugins.config.logging)
        self.plugins.unconfigure()
        self.plugins = plugins
        self._close_writer()
        # The old plugins' unconfigure closed the stores they opened, the sync's among
        # them: resync through the new ones. The cache stays, so nothing is removed
        # meanwhile unless the datastore itself changed.
        self._stop_sync()
        if datastore_changed:
            self.in_sync = False
        self._start_sync()
        log.info("config reloaded from %s", self.config_path)
        return True

    def _reconcile_node(self, state: calc.DesiredState) -> list[str]:
        """This node's own datastore records: its Node (core), then what the plugins
        keep there (tunnel addresses); before routing, whose input they are."""
        if self._writer is None:
            self._writer = self.plugins.datastore()
        lines = registration.register(state, self.config, self._writer)
        ipam = self.plugins.ipam(self._writer) if self.config.ipam.type != cfg.NONE else None
        return lines + list(self.plugins.reconcile_node(state, self._writer, ipam))

    def run_pass(self, reason: Reason) -> PassReport:
        started, clock = time.time(), time.perf_counter()
        state = calc.compute(self.cache, self.config.hostname)
        changes: dict[str, tuple[str, ...]] = {}
        errors: dict[str, str] = {}
        steps = [("node", lambda: self._reconcile_node(state))]
        steps += [(slot, lambda slot=slot: self.plugins.reconcile(slot, state)) for slot in RECONCILED_SLOTS]
        for name, step in steps:
            try:
                changes[name] = tuple(step())
            except Exception as exc:  # a failed step must not stop the others or the loop
                log.exception("%s reconcile failed", name)
                errors[name] = f"{type(exc).__name__}: {exc}"
        self.passes += 1
        report = PassReport(
            number=self.passes,
            reason=reason,
            revision=state.revision,
            started=started,
            duration=time.perf_counter() - clock,
            changes=changes,
            errors=errors,
        )
        self.last_report = report
        log.info("%s", report.summary())
        if log.isEnabledFor(logging.DEBUG):
            for step, lines in changes.items():
                for line in lines:
                    log.debug("%s: %s", step, line)
        self.plugins.pass_done(report)
        return report
