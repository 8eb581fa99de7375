"""Watching ``/calico/`` for changes after a revision, through disconnects and compaction.

The watcher keeps what its consumer holds: ``key -> (mod_revision, resource)``, seeded
from the snapshot the watch starts at (the store remembers its last few snapshots) and
updated with every event it yields. That state makes it exact:

* an event is ``added`` or ``modified`` by whether the consumer holds the key, a delete
  carries the last value the consumer saw, and nothing is yielded twice;
* after a disconnect it resumes at the revision after the last one it saw, on the next
  endpoint;
* when etcd has compacted the revision it needs (the watch is canceled with
  ``compact_revision``), it reads everything at the current revision R and yields the
  differences from the state: additions and modifications in mod_revision order, then
  deletions, then carries on from R + 1. Every difference but the last carries the
  (compacted) revision the watch was at, the last one R, so a consumer that stops in
  the middle and resumes from the revision of the last event it took relists again
  and gets the rest.

A watch from a revision whose state the store does not know (another process's
snapshot) still yields every change; if that revision is compacted, it yields what
changed since it, but deletions in between cannot be recovered and are logged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pycalico.core.datastore import DatastoreUnavailable, Event

from . import keys
from .client import EtcdError, Transient, WatchStream
from .store import KV, b64, prefix_end, unb64

if TYPE_CHECKING:
    from .store import EtcdDatastore

log = logging.getLogger(__name__)

POLL = 0.1  # how often a waiting watch looks at its stop event (seconds)


class Watcher:
    """One watch: ``events()`` is the generator that ``EtcdDatastore.watch`` returns."""

    def __init__(self, store: EtcdDatastore, revision: int, stop: threading.Event, kinds: frozenset | None):
        self.store = store
        self.conn = store.conn
        self.stop = stop
        self.kinds = kinds
        known = store.recall(revision, kinds)
        self.baseline = known is not None  # the state is the consumer's whole state
        self.state: dict[str, tuple[int, Any]] = known or {}
        self.position = revision  # every change up to here has been seen
        self.token = revision  # the revision of the last event yielded
        self.stream: WatchStream | None = None

    def stopping(self) -> bool:
        return self.stop.is_set() or self.conn.closed

    # -- the event loop -------------------------------------------------------------

    def events(self) -> Iterator[Event]:
        index = self.conn._current
        down_since: float | None = None
        try:
            while not self.stopping():
                self.stream = self.conn.open_watch(self._create_request(), index)
                error: Exception | None = None
                relisted = False
                while error is None and not relisted:
                    item = self._next()
                    if item is None:
                        return  # stopped
                    what, body = item
                    if what == "end":
                        error = body
                        break
                    if "error" in body:
                        error = _stream_error(body["error"], self.conn)
                        break
                    result = body.get("result", {})
                    if result.get("created"):
                        down_since = None
                        log.debug("etcd: watching from revision %d at %s", self.position + 1, self.stream.url)
                    if result.get("canceled"):
                        compacted = int(result.get("compact_revision") or 0)
                        if compacted:
                            self.stream.close()
                            yield from self._relist(compacted)
                            relisted, down_since = True, None
                        else:
                            error = Transient(result.get("cancel_reason") or "watch canceled by etcd", sent=False)
                        break
                    events = result.get("events")
                    if not events:
                        if not result.get("created"):  # a progress notification
                            self.position = max(self.position, int(result.get("header", {}).get("revision", 0)))
                        continue
                    for raw in events:
                        event = self._convert(raw)
                        self.position = max(self.position, int(raw["kv"].get("mod_revision", 0)))
                        if event is not None:
                            self.token = event.revision
                            yield event
                            if self.stopping():
                                return
                self.stream.close()
                if isinstance(error, EtcdError):
                    raise error
                if relisted:
                    if self.stopping():
                        return
                    continue  # watch on from the relist's revision
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since >= self.conn.timeout:
                    raise DatastoreUnavailable(
                        f"etcd unreachable at {self.conn.where} for {self.conn.timeout:g}s while watching "
                        f"from revision {self.position + 1}: {error}"
                    )
                log.info("etcd: watch on %s ended (%s); resuming from revision %d",
                         self.stream.url, error, self.position + 1)
                index = (index + 1) % len(self.conn.urls)
                self._pause(min(0.05 + (now - down_since) / 4, 0.5))
        finally:
            if self.stream is not None:
                self.stream.close()
            if self.baseline:
                self.store.remember(self.token, self.kinds, self.state)

    def _create_request(self) -> dict:
        request: dict[str, Any] = {
            "key": b64(keys.ROOT),
            "range_end": b64(prefix_end(keys.ROOT)),
            "start_revision": self.position + 1,
            "progress_notify": True,
        }
        if not self.baseline:
            request["prev_kv"] = True  # deletes of keys this watch has not seen need their value
        return request

    def _next(self) -> tuple[str, Any] | None:
        """The stream's next item, or None once the watch is to stop.

        A stream that stays quiet for the connection's timeout is checked with a status
        request to its endpoint: an etcd that is hung (stopped, not dead) keeps its
        connections open and would otherwise leave the watch waiting for ever while the
        agent believes it is in sync."""
        assert self.stream is not None
        quiet_since = time.monotonic()
        while not self.stopping():
            try:
                return self.stream.messages.get(timeout=POLL)
            except queue.Empty:
                if time.monotonic() - quiet_since < self.conn.timeout:
                    continue
                client = self.conn._clients[self.stream.index]
                try:
                    self.conn._post(client, "/maintenance/status", {})
                except (Transient, EtcdError) as exc:
                    raise DatastoreUnavailable(
                        f"etcd at {self.stream.url} does not answer ({exc}) while watching from revision "
                        f"{self.position + 1}") from None
                quiet_since = time.monotonic()
        return None

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping() and time.monotonic() < deadline:
            time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))

    # -- events ---------------------------------------------------------------------

    def _convert(self, raw: dict) -> Event | None:
        kv = raw["kv"]
        key = unb64(kv["key"]).decode(errors="replace")
        rev = int(kv.get("mod_revision", 0))
        found = keys.parse(key)
        if found is None or (self.kinds is not None and found[0] not in self.kinds):
            return None
        held = self.state.get(key)
        if raw.get("type") == "DELETE":
            if held is not None:
                del self.state[key]
                return Event("deleted", held[1], rev)
            prev = raw.get("prev_kv")
            if self.baseline or not prev:
                return None
            last = self.store._read(prev).resource
            return Event("deleted", last, rev) if last is not None else None
        if held is not None and held[0] >= rev:
            return None  # already yielded (a replay after failover)
        entry = self.store._read(kv)
        if entry.resource is None:  # logged by _read; the consumer's copy is gone too
            if held is not None:
                del self.state[key]
                return Event("deleted", held[1], rev)
            return None
        if held is None and not self.baseline:
            kind = "added" if entry.create_revision == rev else "modified"
        else:
            kind = "added" if held is None else "modified"
        self.state[key] = (rev, entry.resource)
        return Event(kind, entry.resource, rev)

    def _relist(self, compact_revision: int) -> Iterator[Event]:
        """Read everything now and yield what differs from what the consumer holds."""
        log.warning(
            "etcd: revision %d has been compacted (compacted up to %d): relisting and yielding the differences",
            self.position + 1, compact_revision,
        )
        revision, entries = self.store.read_all(self.kinds)
        since = self.position
        changes: list[tuple[str, str, KV]] = []
        for key, entry in entries.items():
            held = self.state.get(key)
            if held is None:
                if self.baseline or entry.mod_revision > since:
                    kind = "added" if self.baseline or entry.create_revision > since else "modified"
                    changes.append((kind, key, entry))
                else:  # unchanged since the start revision: the consumer has it
                    self.state[key] = (entry.mod_revision, entry.resource)
            elif held[0] != entry.mod_revision:
                changes.append(("modified", key, entry))
        changes.sort(key=lambda c: c[2].mod_revision)
        gone = [key for key in self.state if key not in entries]
        if not self.baseline:
            log.warning(
                "etcd: watch started at revision %d without its snapshot's contents: resources deleted "
                "before the compaction at %d cannot be reported", since, compact_revision,
            )
        total = len(changes) + len(gone)
        n = 0
        for kind, key, entry in changes:
            n += 1
            self.state[key] = (entry.mod_revision, entry.resource)
            self.token = revision if n == total else since
            yield Event(kind, entry.resource, self.token)
        for key in gone:
            n += 1
            held = self.state.pop(key)
            self.token = revision if n == total else since
            yield Event("deleted", held[1], self.token)
        self.baseline = True
        self.position = revision


def _stream_error(error: Any, conn: Any) -> Exception:
    """An ``{"error": ...}`` line of the watch stream as an exception."""
    if isinstance(error, dict):
        message = str(error.get("message") or error)
        code = error.get("grpc_code", error.get("code"))
    else:
        message, code = str(error), None
    if "invalid auth token" in message:
        conn.token_expired(conn._token)
        return Transient(message, sent=False)
    if code in (7, 16) or "permission denied" in message or "authentication failed" in message:
        return EtcdError(f"etcd watch: {message}")
    return Transient(message, sent=False)

