"""Watching Calico kinds through the Kubernetes API, through disconnects and 410 Gone.

One thread per source (see ``sources``) lists and watches it and puts what it reads
on one queue, in the order it read it; the consumer's generator takes from the
queue, converts, and yields. The generator keeps what its consumer holds of every
source (object key -> (resourceVersion, resource)), which makes it exact:

* an event is ``added`` or ``modified`` by whether the consumer holds the object; a
  pod that stops being a WorkloadEndpoint is ``deleted``; nothing is yielded twice;
* each source's watch resumes, after a disconnect or the server's timeout, from the
  last resourceVersion it read (bookmarks move it on while nothing changes);
* on 410 Gone (the position was compacted) the thread lists the source at the
  current resourceVersion R and the generator yields the differences from what the
  consumer holds: additions and modifications in resourceVersion order, then
  deletions; all but the last carry the old position, the last one R, so a consumer
  that stops in the middle and resumes from the revision of the last event it took
  relists again and gets the rest. The watch then goes on from R.

The state a watch starts from is the snapshot's (the store remembers its last few
snapshots and finished watches); for a revision it does not know, the thread first
lists each source at exactly that resourceVersion. A source the revision does not
name starts empty: all its objects arrive as ``added``.

If the API server stays unreachable for ``timeout_seconds`` the watch raises
DatastoreUnavailable. ``stop`` (or closing the store) ends it within ~0.1 s: the
threads' open responses are shut down under them.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any

from pycalico.core.datastore import DatastoreError, DatastoreUnavailable, Event

from . import convert
from .api import ApiError, WatchStream
from .sources import Revision, Source, sources_of

if TYPE_CHECKING:
    from .store import KubernetesDatastore

log = logging.getLogger(__name__)

POLL = 0.1  # how often the consumer looks at its stop event (seconds)
WATCH_SECONDS = 300  # the server ends a watch after this long; it is then reopened


def _rv_order(rv: str) -> tuple[int, str]:
    # resourceVersions are opaque; the ordering is only used to replay a relist's
    # differences in a sensible order, and falls back to text.
    return (int(rv), "") if rv.isdigit() else (0, rv)


class SourceWatch(threading.Thread):
    """Lists and watches one source, forever, onto ``out``."""

    def __init__(self, store: KubernetesDatastore, source: Source, position: str | None, mode: str,
                 out: queue.SimpleQueue, halt: threading.Event):
        super().__init__(name=f"kdd-watch:{source.id}", daemon=True)
        self.store, self.api, self.source = store, store.api, source
        self.position, self.mode = position, mode  # mode: "watch", "exact" or "fresh"
        self.out, self.halt = out, halt
        self.stream: WatchStream | None = None
        self.down_since: float | None = None
        self.failures = 0

    def shutdown(self) -> None:
        stream = self.stream
        if stream is not None:
            stream.shutdown()

    def run(self) -> None:
        try:
            if self.mode == "exact":
                self._baseline()
            elif self.mode == "fresh":
                self._relist(reason="no position for this source")
            while not self.halt.is_set():
                self._watch_once()
        except _Halt:
            pass
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            if not self.halt.is_set():
                self.out.put(("fatal", self.source, exc))

    # -- the parts --------------------------------------------------------------------

    def _baseline(self) -> None:
        """What the consumer held at the start position, listed at exactly it."""
        def read():
            return self.store.fetch(self.source, None, self.position)
        try:
            items, _ = self._retrying(read)
        except ApiError as exc:
            if exc.status != 410:
                raise
            log.warning("kdd: %s: resourceVersion %s is compacted and its contents unknown: deletions made "
                        "before now cannot be reported", self.source.id, self.position)
            self._relist(reason="start position compacted", lost=True)
            return
        self.out.put(("baseline", self.source, items))

    def _relist(self, reason: str, lost: bool = False) -> None:
        items, rv = self._retrying(lambda: self.store.fetch(self.source))
        log.info("kdd: %s relisted at resourceVersion %s (%s)", self.source.id, rv, reason)
        self.position = rv
        self.out.put(("relist", self.source, items, rv, lost))

    def _watch_once(self) -> None:
        query = {"resourceVersion": self.position, "allowWatchBookmarks": True,
                 "timeoutSeconds": WATCH_SECONDS + random.randint(0, 30)}
        try:
            self.stream = self.api.open_watch(self.source.path(), query, read_timeout=WATCH_SECONDS + 60)
        except DatastoreUnavailable as exc:
            self._down(exc)
            return
        except ApiError as exc:
            if exc.status == 410:
                self._relist(reason=f"410 Gone: {exc.message}")
                return
            if exc.route_missing:
                raise DatastoreError(f"{self.source.path()} is not served by the API server {self.api.where} "
                                     "(is its CRD installed?)") from None
            raise
        if self.halt.is_set():  # stopped while the watch was being opened
            self.stream.shutdown()
            raise _Halt
        self.down_since, self.failures = None, 0
        gone, error = False, None
        try:
            for event in self.stream.events():
                if self.halt.is_set():
                    return
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.position = obj.get("metadata", {}).get("resourceVersion") or self.position
                    self.out.put(("event", self.source, kind, obj))
                elif kind == "BOOKMARK":
                    self.position = obj.get("metadata", {}).get("resourceVersion") or self.position
                    self.out.put(("bookmark", self.source, self.position))
                elif kind == "ERROR":
                    if obj.get("code") == 410:
                        gone = True
                    else:
                        error = DatastoreUnavailable(f"watch {self.source.path()}: {obj.get('message') or obj}")
                    break
        except Exception as exc:  # noqa: BLE001 - a cut connection, a bad line
            error = exc
        finally:
            self.stream.shutdown()
        if self.halt.is_set():
            raise _Halt
        if gone:
            self._relist(reason="410 Gone: the watch position was compacted")
        elif error is not None:
            self._down(error)
        # else: the server ended the watch (timeoutSeconds): reopen from the position

    def _down(self, error: Exception) -> None:
        now = time.monotonic()
        self.down_since = self.down_since or now
        self.failures += 1
        if now - self.down_since >= self.api.timeout:
            raise DatastoreUnavailable(
                f"Kubernetes API server {self.api.where} unreachable for {self.api.timeout:g}s while watching "
                f"{self.source.path()} from resourceVersion {self.position}: {error}")
        log.info("kdd: watch of %s interrupted (%s); resuming from resourceVersion %s", self.source.id, error,
                 self.position)
        if self.halt.wait(min(0.05 * 2 ** min(self.failures, 4), 0.5)):
            raise _Halt

    def _retrying(self, fn):
        """``fn()``, retried while the server is unreachable (for up to the timeout)."""
        while True:
            if self.halt.is_set():
                raise _Halt
            try:
                result = fn()
            except DatastoreUnavailable as exc:
                self._down(exc)
                continue
            self.down_since, self.failures = None, 0
            return result


class _Halt(Exception):
    """The watch is over: unwind the thread."""


class Watcher:
    def __init__(self, store: KubernetesDatastore, revision: Revision | None, stop: threading.Event,
                 kinds: Collection[str] | None):
        self.store, self.stop = store, stop
        self.sources = sources_of(kinds)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.halt = threading.Event()
        self.positions: dict[str, str | None] = {}
        self.known: dict[str, dict[str, tuple[str, Any]]] = {}
        self.ready: set[str] = set()  # sources whose ``known`` is the consumer's whole state
        self.threads: list[SourceWatch] = []
        for source in self.sources:
            position = revision.get(source.id) if revision is not None else None
            self.positions[source.id] = position
            if position is None:
                mode = "fresh"
            else:
                state = store.recall(source.id, position)
                mode = "watch" if state is not None else "exact"
                if state is not None:
                    self.known[source.id] = state
                    self.ready.add(source.id)
            self.known.setdefault(source.id, {})
            self.threads.append(SourceWatch(store, source, position, mode, self.queue, self.halt))
        self.token = self._revision()

    def _revision(self) -> Revision:
        return Revision.of({k: v for k, v in self.positions.items() if v})

    def stopping(self) -> bool:
        return self.stop.is_set() or self.store.closed

    def events(self) -> Iterator[Event]:
        for thread in self.threads:
            thread.start()
        try:
            while not self.stopping():
                try:
                    item = self.queue.get(timeout=POLL)
                except queue.Empty:
                    continue
                what, source = item[0], item[1]
                if what == "fatal":
                    raise item[2]
                if what == "baseline":
                    self.known[source.id] = self.store.state_of(source, item[2])
                    self.ready.add(source.id)
                elif what == "bookmark":
                    self.positions[source.id] = item[2]
                elif what == "event":
                    event = self._apply(source, item[2], item[3])
                    if event is not None:
                        yield event
                elif what == "relist":
                    yield from self._diff(source, item[2], item[3], item[4])
        finally:
            self.halt.set()
            for thread in self.threads:
                thread.shutdown()
            deadline = time.monotonic() + 0.5
            for thread in self.threads:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
            for source in self.sources:
                position = self.token.get(source.id)
                if position and source.id in self.ready:
                    self.store.remember(source.id, position, self.known[source.id])

    def _emit(self, kind: str, resource: Any) -> Event:
        self.token = self._revision()
        return Event(kind, resource, self.token)

    def _apply(self, source: Source, kind: str, obj: dict) -> Event | None:
        key, rv = convert.object_key(obj), obj.get("metadata", {}).get("resourceVersion") or ""
        self.positions[source.id] = rv or self.positions[source.id]
        known = self.known[source.id]
        held = known.get(key)
        if kind == "DELETED":
            if held is None:
                return None
            del known[key]
            last = self.store.convert(source, obj) or held[1]
            return self._emit("deleted", last)
        res = self.store.convert(source, obj)
        if res is None:
            if held is None:
                return None
            del known[key]  # no longer a Calico resource (e.g. a pod that finished being one)
            return self._emit("deleted", held[1])
        known[key] = (rv, res)
        return self._emit("added" if held is None else "modified", res)

    def _diff(self, source: Source, items: list[dict], rv: str, lost: bool) -> Iterator[Event]:
        """Yield what changed between what the consumer holds and a fresh list at ``rv``."""
        known = self.known[source.id]
        fresh = self.store.state_of(source, items)
        changes = sorted(
            ((key, entry) for key, entry in fresh.items() if key not in known or known[key][0] != entry[0]),
            key=lambda c: _rv_order(c[1][0]),
        )
        gone = [key for key in known if key not in fresh]
        if lost:
            log.warning("kdd: %s: %d objects from a fresh list may include some the consumer already had",
                        source.id, len(changes))
        total, n = len(changes) + len(gone), 0
        before = self.positions[source.id]
        for key, entry in changes:
            if self.stopping():
                return
            n += 1
            held = known.get(key)
            known[key] = entry
            self.positions[source.id] = rv if n == total else before
            yield self._emit("added" if held is None else "modified", entry[1])
        for key in gone:
            if self.stopping():
                return
            n += 1
            held = known.pop(key)
            self.positions[source.id] = rv if n == total else before
            yield self._emit("deleted", held[1])
        self.positions[source.id] = rv
        self.ready.add(source.id)
