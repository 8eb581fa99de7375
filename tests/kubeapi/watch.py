"""One watch stream, as the apiserver's watch cache (cacher) produces it: the
backlog after the requested resourceVersion (or a synthetic ADDED per current
object), then live changes, filtered by label/field selectors with the cacher's
transition rules, plus periodic BOOKMARKs. Errors found once the watch has
started (a compacted resourceVersion) are sent as an ERROR event, not as an HTTP
status, because that is how the real server reports them."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator

from .errors import ApiError, expired, too_large_resource_version
from .resources import ResourceType
from .selectors import FieldSelector, LabelSelector, field_set
from .store import CLOSED, Change, Store, Subscription, storage_key

INITIAL_EVENTS_END = "k8s.io/initial-events-end"


class WatchSession:
    def __init__(
        self,
        store: Store,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        present: Callable[[dict], dict],
        bookmarks: bool,
        bookmark_interval: float,
    ):
        self.store, self.rt, self.version, self.namespace = store, rt, version, namespace
        self.labels, self.fields, self.present = labels, fields, present
        self.bookmarks, self.bookmark_interval = bookmarks, bookmark_interval
        self._initial: list[dict] = []
        self._sub: Subscription | None = None

    # -- setup ---------------------------------------------------------------

    def start(self, resource_version: int | None, send_initial: bool | None, rv_wait: float) -> None:
        """``resource_version`` None means unset or "0". Must run before events()."""
        if resource_version and not self.store.wait_for(resource_version, rv_wait):
            self._fail(too_large_resource_version(resource_version, self.store.revision))
            return
        with self.store.lock:
            if send_initial or (send_initial is None and resource_version is None):
                # "Get state and start at most recent": synthetic ADDED events.
                prefix = storage_key(self.namespace, "") if self.namespace else ""
                for _, obj in self.store.items(self.rt.id, prefix):
                    if self._matches(obj):
                        self._initial.append(self._event("ADDED", obj))
                if send_initial:
                    self._initial.append(self._bookmark_event(self.store.revision, initial_end=True))
            elif resource_version is not None:
                if resource_version < self.store.compacted:
                    # watch_cache.go: errors.NewResourceExpired("too old resource version: %d (%d)")
                    self._fail(expired(f"too old resource version: {resource_version} ({self.store.compacted})"))
                    return
                for change in self.store.changes_since(self.rt.id, resource_version):
                    if self.namespace is None or change.namespace == self.namespace:
                        event = self._convert(change)
                        if event:
                            self._initial.append(event)
            self._sub = self.store.subscribe(self.rt.id, self.namespace)

    def _fail(self, error: ApiError) -> None:
        self._initial = [{"type": "ERROR", "object": error.status()}]

    # -- streaming -----------------------------------------------------------

    def events(self, poll: float = 0.1) -> Iterator[dict | None]:
        """Events as dicts; None on each idle ``poll`` so the caller can check its
        deadline and whether the client is still there."""
        try:
            yield from self._initial
            if self._sub is None:
                return
            next_bookmark = time.monotonic() + self.bookmark_interval
            while True:
                try:
                    item = self._sub.queue.get(timeout=poll)
                except queue.Empty:
                    item = None
                if item is CLOSED:
                    return
                if item is not None:
                    event = self._convert(item)
                    if event:
                        yield event
                    continue
                if self.bookmarks and time.monotonic() >= next_bookmark:
                    event = self._bookmark()
                    if event:
                        next_bookmark = time.monotonic() + self.bookmark_interval
                        yield event
                        continue
                yield None
        finally:
            self.close()

    def close(self) -> None:
        if self._sub is not None:
            self.store.unsubscribe(self._sub)
            self._sub = None

    # -- helpers -------------------------------------------------------------

    def _matches(self, obj: dict) -> bool:
        return self.labels.matches(obj["metadata"].get("labels")) and self.fields.matches(
            field_set(obj, self.rt.fields)
        )

    def _convert(self, change: Change) -> dict | None:
        # cacheWatcher.convertToWatchEvent: an object entering the selection is
        # ADDED, one leaving it is DELETED (its previous state at the new revision).
        # The change's objects are the stored ones, shared by every watcher and
        # only read (as are those of the initial ADDED events): present() builds
        # the event's own top level and the server encodes it at once.
        cur = not change.deleted and self._matches(change.obj)
        old = change.prev is not None and self._matches(change.prev)
        if cur:
            return self._event("MODIFIED" if old else "ADDED", change.obj)
        if not old:
            return None
        if change.deleted:
            return self._event("DELETED", change.obj)
        gone = dict(change.prev, metadata={**change.prev["metadata"], "resourceVersion": str(change.revision)})
        return self._event("DELETED", gone)

    def _event(self, type_: str, obj: dict) -> dict:
        return {"type": type_, "object": self.present(obj)}

    def _bookmark(self) -> dict | None:
        # Only when nothing is queued: every change up to the current revision has
        # then been sent (or filtered out), so the bookmark's promise holds.
        with self.store.lock:
            if self._sub is None or not self._sub.queue.empty():
                return None
            return self._bookmark_event(self.store.revision)

    def _bookmark_event(self, revision: int, initial_end: bool = False) -> dict:
        meta: dict = {"resourceVersion": str(revision)}
        if initial_end:
            meta["annotations"] = {INITIAL_EVENTS_END: "true"}
        obj = {"kind": self.rt.kind, "apiVersion": self.rt.api_version(self.version), "metadata": meta}
        return {"type": "BOOKMARK", "object": obj}
