"""Typha's one hold on the datastore: a snapshot, then the watch, fed to the cache.

A thread of its own runs the datastore plugin's blocking calls and posts what they
return to the event loop that owns the cache. Watch events that arrive while the loop
is busy are handed over together, as one crumb. When the datastore fails, the cache
says ``ResyncInProgress`` and the thread starts over with a fresh snapshot, which the
cache diffs against what it holds: connected agents see only what changed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from pycalico.core.datastore import Datastore, DatastoreError, Event, Snapshot, follow
from pycalico.core.typha.cache import SnapshotCache

log = logging.getLogger(__name__)


class Upstream:
    """Follows the datastore that ``connect()`` opens, until ``stop()``."""

    def __init__(self, connect: Callable[[], Datastore], cache: SnapshotCache, loop: asyncio.AbstractEventLoop):
        self._connect = connect
        self._cache = cache
        self._loop = loop
        self._stop = threading.Event()
        self._store: Datastore | None = None
        self._pending: list[Event] = []
        self._lock = threading.Lock()
        self.error: str | None = None  # why the datastore is not followed now
        self._thread = threading.Thread(target=self._run, name="typha-upstream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._store is not None:
            self._store.close()  # ends a watch blocked on the datastore
        self._thread.join(timeout=10)

    def _run(self) -> None:
        follow(self._connect, self._stop, connected=self._connected, snapshot=self._snapshot, event=self._queue,
               failed=self._failed)

    def _connected(self, store: Datastore) -> None:
        self._store = store

    def _snapshot(self, snapshot: Snapshot) -> None:
        self._post(self._cache.apply_snapshot, snapshot)
        self.error = None
        log.info("datastore snapshot at revision %s: %d resources", snapshot.revision, len(snapshot.resources))

    def _failed(self, exc: DatastoreError) -> None:
        self.error = str(exc)
        self._post(self._cache.resyncing)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _queue(self, event: Event) -> None:
        with self._lock:
            first = not self._pending
            self._pending.append(event)
        if first:
            self._post(self._flush)

    def _flush(self) -> None:
        with self._lock:
            events, self._pending = self._pending, []
        self._cache.apply_events(events)
