"""The reconcile loop: datastore changes and calico.toml edits in, converged kernel out.

Three threads feed one queue: the sync thread (a snapshot, then the watch), the
config watcher (watchfiles on calico.toml) and the resync timer implied by the queue
timeout. The loop thread drains a burst of messages, folds them into the cache and
runs one pass: compute the desired state, call the routing then the policy
reconciler, report. Reconcilers are level-based, so a pass is safe to run at any
time; the loop only decides *when*.

Around it: the status reporter's thread (``core/status.py``) and, for calico-node,
the ``[health]`` and ``[metrics]`` listeners, which read the loop's state
(``liveness``, ``readiness``, ``metrics``) from their own threads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from pycalico.core import calc, health, logs, metrics, registration, status
from pycalico.core import config as cfg
from pycalico.core.datastore import Datastore, Event, Snapshot, follow
from pycalico.core.listener import Listeners, Response
from pycalico.core.plugins import Plugins, Registry
from pycalico.core.report import PassReport, Reason

log = logging.getLogger(__name__)

RECONCILED_SLOTS = ("routing", "policy")
# Kinds no reconciler reads: they are cached for the status reporter, which the loop
# tells of each change; its own writes must not each cost the agent a pass.
UNREAD_KINDS = frozenset({"CalicoNodeStatus"})


@attrs.frozen
class _ConfigChanged:
    pass


@attrs.frozen
class _Unavailable:
    error: str


def _chosen_name(plugins: Plugins, group: str) -> str:
    return plugins.config.slot(group).type if group in cfg.SLOTS else "hook-only plugins"


class Loop:
    def __init__(self, config_path: str | Path, registry: Registry | None = None, watch_config: bool = True,
                 own_logging: bool = False, serve: bool = False):
        """``own_logging``: the process's logging is this loop's to set (calico-node), so a
        reload applies a changed ``[logging]`` table. ``serve``: run the ``[health]`` and
        ``[metrics]`` listeners while the loop runs (calico-node)."""
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
        self.last_state: calc.DesiredState | None = None
        self.last_config_error: str | None = None
        self.datastore_error: str | None = None  # why the sync fails now; None while it follows
        self._serve_http = serve
        self._listeners = Listeners()
        self._loop_thread: threading.Thread | None = None
        self._tick = time.monotonic()
        self._last_readiness: list[str] | None = None
        self.metrics = metrics.LoopMetrics()
        self.started = time.time()
        self._status: status.StatusReporter | None = None
        self._written = cfg.read(self.config_path)  # as in the file, before plugins bind it
        self.plugins = Plugins.load(self._written, str(self.config_path), self._registry)
        self._datastore: Datastore | None = None
        self._detect = registration.PolledDetect()
        self._writer: Datastore | None = None  # for the node step's writes; not the sync's

    @property
    def config(self) -> cfg.Config:
        return self.plugins.config

    # -- lifecycle ---------------------------------------------------------------

    def run(self, once: bool = False) -> None:
        """Run until ``stop()``; with ``once``, return after the first synced pass."""
        self._loop_thread = threading.current_thread()
        self._tick = time.monotonic()
        self._apply_listeners()
        self._start_sync()
        if not once:  # a one-shot run is no agent to report on
            self._start_status()
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
        connect: Callable[[], Any] = self.plugins.datastore
        if self.config.typha.addresses:
            # Read through Typha when calico.toml names it; the node step's writes
            # still go to the datastore slot.
            from pycalico.core.typha.client import TyphaClient

            typha, hostname = self.config.typha, self.config.hostname
            connect = lambda: TyphaClient(typha, hostname)  # noqa: E731 - the sync calls it once
        self._spawn("sync", self._sync, connect, self._sync_stop)

    def _start_status(self) -> None:
        self._status = status.StatusReporter(lambda: self.plugins, self.started,
                                             lambda: self.cache.of_kind("CalicoNodeStatus")).start()

    def _stop_status(self, down: bool = False) -> None:
        if self._status is not None:
            self._status.stop(down)
            self._status = None

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
        self._stop_status(down=True)
        self._stop_sync()
        self._close_writer()
        for thread in self._threads:
            thread.join(timeout=5)
        self.plugins.unconfigure()
        self._listeners.close()

    # -- health ------------------------------------------------------------------------

    def _apply_listeners(self) -> None:
        if not self._serve_http:
            return
        self._listeners.apply({
            "health": (self.config.health, health.routes(self.liveness, self.readiness, self.status_lines)),
            "metrics": (self.config.metrics, {"/metrics": self.scrape}),
        })

    def scrape(self) -> Response:
        """``/metrics``: the loop's samples, then the plugins'."""
        samples = self.metrics.samples(self.in_sync, ready=not self.readiness())
        return metrics.response(samples + self.plugins.metrics())

    def liveness(self) -> list[str]:
        """Why the agent is not live (empty: it is); safe from any thread."""
        thread = self._loop_thread
        running = thread is not None and thread.is_alive() and not self._stop.is_set()
        return health.liveness_reasons(running, time.monotonic() - self._tick)

    def status_lines(self) -> list[str]:
        """The plugins' status lines (``pycalico_node_status``) on the last pass's
        state, as ``component: text``; none before the first pass."""
        state = self.last_state
        return [] if state is None else [f"{c}: {t}" for c, t in self.plugins.node_status(state)]

    def readiness(self) -> list[str]:
        """Why the agent is not ready (empty: it is); safe from any thread. A change
        from the last answer is logged, as Felix logs its health changing."""
        reasons = health.readiness_reasons(
            self.in_sync, self.last_report, self.datastore_error, self.last_config_error,
            self.plugins.readiness(),
        )
        if reasons != self._last_readiness:
            # Not ready while starting is expected; losing readiness is worth a warning.
            was_ready = self._last_readiness == []
            self._last_readiness = reasons
            if reasons:
                log.log(logging.WARNING if was_ready else logging.INFO, "not ready: %s", "; ".join(reasons))
            else:
                log.info("ready")
        return reasons

    # -- producers -----------------------------------------------------------------

    def _sync(self, connect: Callable[[], Datastore], stop: threading.Event) -> None:
        """Snapshot, then watch, into the queue; an agent started while the datastore
        is down keeps trying (and says so on /readiness) instead of exiting."""

        def connected(store: Datastore) -> None:
            self._datastore = store

        follow(connect, stop, connected=connected, snapshot=self._queue.put, event=self._queue.put,
               failed=lambda exc: self._queue.put(_Unavailable(str(exc))))

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
            self._tick = time.monotonic()
            timeout = max(0.0, next_resync - self._tick)
            try:
                # Wake at least every tick, so liveness sees the loop turning.
                burst = [self._queue.get(timeout=min(timeout, health.TICK_SECONDS))]
            except queue.Empty:
                if time.monotonic() < next_resync:
                    continue
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
                self.metrics.resync_started()
                self.cache.replace(item)
                self.in_sync = True
                self.datastore_error = None
                reason = "sync"
                if self._status is not None:
                    self._status.node_status.changed()
            elif isinstance(item, Event):
                self.cache.apply(item)
                if calc.key_of(item.resource)[0] in UNREAD_KINDS:
                    if self._status is not None:
                        self._status.node_status.changed(item)
                    continue
                self.datastore_error = None
                reason = reason or "update"
            elif isinstance(item, _ConfigChanged):
                if self._reload_config():
                    reason = "config"
            elif isinstance(item, _Unavailable):
                # Keep the cache and the kernel as they are: forwarding and enforcement
                # go on with what we have until the datastore is back.
                self.datastore_error = item.error
                self.metrics.datastore_failed()
        return reason

    def _reload_config(self) -> bool:
        """Apply calico.toml as it is now on disk; whether anything changed.

        Only what changed restarts: a slot whose plugin or options changed has the new
        plugin configured, then the old one unconfigured (a plugin kept with new
        options, BIRD's, keeps its daemon running); the other slots' plugins and the
        sync go on untouched, unless the datastore (or Typha) changed. A file that cannot
        be used is refused whole, and the last good config keeps running."""
        try:
            written = cfg.read(self.config_path)
            if written == self._written:
                self.last_config_error = None  # the file in force is back on disk
                return False
            plugins = Plugins.load(written, str(self.config_path), self._registry, configure=False)
        except Exception as exc:  # a bad file or a broken plugin: keep what runs
            self.last_config_error = str(exc)
            self.metrics.reloaded(applied=False)
            log.error("config reload refused, keeping the last good config: %s", str(exc).replace("\n", "; "))
            return False
        old, self._written = self.plugins, written
        changed = old.changed(plugins)
        self.last_config_error = None
        self.metrics.reloaded(applied=True)
        if self._own_logging and plugins.config.logging != old.config.logging:
            logs.setup(plugins.config.logging)
        # What the sync reads through: the datastore slot, or the Typhas in front of it.
        resync = "datastore" in changed or plugins.config.typha != old.config.typha
        if resync:
            # Its stores close with its plugin: stop the sync, the writer and the
            # status reports first.
            self._stop_status()
            self._stop_sync()
            self._close_writer()
        plugins.configure(changed)
        old.unconfigure(changed)
        self.plugins = plugins
        if resync:
            # A new datastore's snapshot replaces the cache; until then no pass runs.
            self.in_sync = False
            self._start_sync()
            self._start_status()
        self._apply_listeners()
        restarted = ", ".join(f"{g} {_chosen_name(old, g)} -> {_chosen_name(plugins, g)}" for g in changed)
        log.info("config reloaded from %s%s", self.config_path, f"; restarted: {restarted}" if changed else "")
        return True

    def _reconcile_node(self, state: calc.DesiredState) -> list[str]:
        """This node's own datastore records: its Node (core), then what the plugins
        keep there (tunnel addresses); before routing, whose input they are."""
        if self._writer is None:
            self._writer = self.plugins.datastore()
        lines = registration.register(state, self.config, self._writer, self._detect)
        ipam = self.plugins.ipam(self._writer) if self.config.ipam.type != cfg.NONE else None
        return lines + list(self.plugins.reconcile_node(state, self._writer, ipam))

    def run_pass(self, reason: Reason) -> PassReport:
        started, clock = time.time(), time.perf_counter()
        state = calc.compute(self.cache, self.config.hostname)
        changes: dict[str, tuple[str, ...]] = {}
        errors: dict[str, str] = {}
        timings: dict[str, float] = {}
        steps = [("node", lambda: self._reconcile_node(state))]
        steps += [(slot, lambda slot=slot: self.plugins.reconcile(slot, state)) for slot in RECONCILED_SLOTS]
        for name, step in steps:
            began = time.perf_counter()
            try:
                changes[name] = tuple(step())
            except Exception as exc:  # a failed step must not stop the others or the loop
                log.exception("%s reconcile failed", name)
                errors[name] = f"{type(exc).__name__}: {exc}"
            timings[name] = time.perf_counter() - began
        self.passes += 1
        report = PassReport(
            number=self.passes,
            reason=reason,
            revision=state.revision,
            started=started,
            duration=time.perf_counter() - clock,
            changes=changes,
            errors=errors,
            timings=timings,
        )
        self.last_report, self.last_state = report, state
        self.metrics.passed(report, state)
        log.info("%s", report.summary())
        if log.isEnabledFor(logging.DEBUG):
            for step, lines in changes.items():
                for line in lines:
                    log.debug("%s: %s", step, line)
        self.plugins.pass_done(report)
        return report
