"""Test doubles for the reconcile loop: an in-memory datastore and a recording
reconciler. The etcd and Kubernetes datastores are tested against the real etcd and
the API stand-in; these exist so the loop's own logic can be driven step by step."""

from __future__ import annotations

import queue
import threading

import attrs

from pycalico.core.datastore import AlreadyExists, DatastoreUnavailable, Event, NotFound, Snapshot
from pycalico.hooks import hookimpl


class MemoryDatastore:
    """Resources in a dict; ``put``/``delete`` emit watch events; ``fail`` makes the
    next snapshot or the running watch raise DatastoreUnavailable."""

    def __init__(self, resources=()):
        self._lock = threading.Lock()
        self._items = {self._key(r): r for r in resources}
        self.revision = 1
        self._events: queue.Queue = queue.Queue()
        self.snapshots = 0
        self.down = threading.Event()
        self.closed = False

    @staticmethod
    def _key(resource):
        return resource.kind, resource.metadata.namespace or "", resource.metadata.name

    def put(self, resource):
        with self._lock:
            self.revision += 1
            kind = "modified" if self._key(resource) in self._items else "added"
            self._items[self._key(resource)] = resource
            self._events.put(Event(kind, resource, self.revision))

    def create(self, resource):
        if self._key(resource) in self._items:
            raise AlreadyExists(f"{resource.kind} {resource.metadata.name} already exists")
        self.put(resource)
        return resource

    def update(self, resource):
        if self._key(resource) not in self._items:
            raise NotFound(f"{resource.kind} {resource.metadata.name} not found")
        self.put(resource)
        return resource

    def delete(self, resource):
        with self._lock:
            self.revision += 1
            self._items.pop(self._key(resource), None)
            self._events.put(Event("deleted", resource, self.revision))

    def fail(self):
        self.down.set()
        self._events.put(None)

    def recover(self):
        self.down.clear()

    def snapshot(self):
        if self.down.is_set():
            raise DatastoreUnavailable("memory datastore is down")
        with self._lock:
            self.snapshots += 1
            # Events queued before this snapshot are part of it.
            while not self._events.empty():
                self._events.get_nowait()
            return Snapshot(self.revision, tuple(self._items.values()))

    def watch(self, revision, stop):
        while not stop.is_set():
            try:
                event = self._events.get(timeout=0.05)
            except queue.Empty:
                continue
            if self.down.is_set():
                raise DatastoreUnavailable("memory datastore went away")
            if event is not None and event.revision > revision:
                yield event

    def close(self):
        self.closed = True


@attrs.define
class MemoryPlugin:
    store: MemoryDatastore

    @hookimpl
    def pycalico_datastore(self, config):
        return self.store


@attrs.define
class Recorder:
    """Fills the routing or policy slot; records every state it is handed and
    converges a fake 'kernel' (a set of endpoint names), reporting real changes only."""

    slot: str
    states: list = attrs.Factory(list)
    kernel: set = attrs.Factory(set)
    fail_next: bool = False
    configured: int = 0
    unconfigured: int = 0

    def _reconcile(self, state):
        self.states.append(state)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("injected failure")
        wanted = {ep.metadata.name for ep in state.local("WorkloadEndpoint")}
        lines = [f"+{name}" for name in sorted(wanted - self.kernel)]
        lines += [f"-{name}" for name in sorted(self.kernel - wanted)]
        self.kernel = wanted
        return lines

    @hookimpl
    def pycalico_reconcile_routing(self, state, config):
        if self.slot == "routing":
            return self._reconcile(state)

    @hookimpl
    def pycalico_reconcile_policy(self, state, config):
        if self.slot == "policy":
            return self._reconcile(state)

    @hookimpl
    def pycalico_configure(self, config):
        self.configured += 1

    @hookimpl
    def pycalico_unconfigure(self, config):
        self.unconfigured += 1


class LoopThread:
    """A reconcile Loop run in a thread for the length of a ``with`` block: started on
    entry; on exit stopped, joined, and checked to be gone."""

    def __init__(self, loop, join_timeout: float = 20.0):
        self.loop = loop
        self.join_timeout = join_timeout
        self.thread = threading.Thread(target=loop.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.loop.stop()
        self.thread.join(timeout=self.join_timeout)
        assert not self.thread.is_alive(), "the loop did not stop"
