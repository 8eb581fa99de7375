"""Typha's snapshot cache: the datastore's current state, and the trail of changes
that led to it (Calico's ``typha/pkg/snapcache``).

The state is one entry per key, each encoded once as it will be sent. Every change
to it appends a ``Crumb``: the frames that take a client from the previous crumb to
this one (a ``MsgKVs`` with the changed keys, a ``MsgSyncStatus`` if the status
changed). A client starts from the latest crumb with the snapshot of the state at
that crumb, then follows the trail; crumbs nobody follows any more are garbage.

Only the event loop's thread touches a cache (``upstream`` posts to it), so a
snapshot and the crumb it belongs to are always consistent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import attrs

from pycalico.core.datastore import Event, Snapshot
from pycalico.core.resources.codec import to_dict
from pycalico.core.typha import proto

RESOURCES = "/calico/resources/v3/projectcalico.org/"


def resource_key(resource: Any) -> str:
    """The Key of a resource on the wire: its path in Calico's v3 layout."""
    cls, meta = type(resource), resource.metadata
    where = f"{meta.namespace}/" if cls.NAMESPACED else ""
    return f"{RESOURCES}{cls.PLURAL}/{where}{meta.name}"


def wire_revision(revision: Any) -> Any:
    """A datastore revision as JSON carries it (the Kubernetes datastore's is an object
    whose text form parses back)."""
    return revision if revision is None or isinstance(revision, (int, str)) else str(revision)


@attrs.frozen
class _Entry:
    value: dict  # the resource's JSON, without its resourceVersion
    resource_version: str
    revision: Any
    text: str  # its snapshot form: the KVNew update, encoded


@attrs.define(eq=False)
class Crumb:
    """One step of the cache's history."""

    seq: int
    created: float  # time.monotonic() when it was appended
    status: str
    revision: Any
    frames: bytes  # from the previous crumb to this one
    size: int  # keys changed
    next: Crumb | None = None


@attrs.define
class CacheStats:
    updates_total: int = 0
    updates_skipped: int = 0
    block: int = 0
    non_block: int = 0
    snapshots_generated: int = 0
    snapshots_reused: int = 0
    snapshot_bytes: int = 0


class SnapshotCache:
    """The state and its crumbs; ``max_batch`` keys per ``MsgKVs`` (Calico's
    ``SnapshotCacheMaxBatchSize`` / ``ServerMaxMessageSize``, 100)."""

    def __init__(self, max_batch: int = 100):
        self.max_batch = max_batch
        self._entries: dict[str, _Entry] = {}
        self.status = proto.WAIT_FOR_DATASTORE
        self.revision: Any = None
        self.latest = Crumb(0, time.monotonic(), self.status, None, b"", 0)
        self._changed = asyncio.Event()
        self._snapshot: tuple[int, bytes] | None = None
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    # -- input (from the upstream, on the loop's thread) ---------------------------

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the state with a full datastore snapshot and go InSync: clients get
        only the differences, so a datastore outage costs them no resync."""
        fresh = {}
        for resource in snapshot.resources:
            key = resource_key(resource)
            fresh[key] = self._entry(resource, snapshot.revision)
        updates = []
        for key, entry in fresh.items():
            old = self._entries.get(key)
            if old is None:
                updates.append(entry.text)
            elif _same(old, entry):
                fresh[key] = old
                self.stats.updates_skipped += 1
            else:
                updates.append(self._modified(key, entry))
        updates += [self._deletion(key, snapshot.revision) for key in self._entries.keys() - fresh.keys()]
        self.stats.updates_total += len(fresh)
        self._entries = fresh
        self._append(updates, proto.IN_SYNC, snapshot.revision)

    def apply_events(self, events: Iterable[Event]) -> None:
        """Fold a batch of watch events into the state as one crumb."""
        updates = []
        revision = self.revision
        for event in events:
            revision = event.revision
            self.stats.updates_total += 1
            key = resource_key(event.resource)
            old = self._entries.get(key)
            if event.type == "deleted":
                if old is None:
                    self.stats.updates_skipped += 1
                    continue
                del self._entries[key]
                updates.append(self._deletion(key, event.revision))
                continue
            entry = self._entry(event.resource, event.revision)
            if old is not None and _same(old, entry):
                self.stats.updates_skipped += 1
                continue
            self._entries[key] = entry
            updates.append(entry.text if old is None else self._modified(key, entry))
        self._append(updates, self.status, revision)

    def resyncing(self) -> None:
        """The datastore was lost: a full snapshot is on its way (until then, clients
        keep what they have)."""
        if self.status == proto.IN_SYNC:
            self._append([], proto.RESYNC_IN_PROGRESS, self.revision)

    # -- output (to the connections) -------------------------------------------------

    def snapshot(self) -> tuple[Crumb, bytes]:
        """The latest crumb and the frames of the whole state at it: the ``MsgKVs``
        batches, then the ``MsgSyncStatus``. Built once per crumb, however many
        clients connect at it."""
        crumb = self.latest
        if self._snapshot is not None and self._snapshot[0] == crumb.seq:
            self.stats.snapshots_reused += 1
            return crumb, self._snapshot[1]
        texts = [entry.text for entry in self._entries.values()]
        frames = self._frames(texts, proto.SyncStatus(crumb.status, wire_revision(crumb.revision)))
        self._snapshot = (crumb.seq, frames)
        self.stats.snapshots_generated += 1
        self.stats.snapshot_bytes = len(frames)
        return crumb, frames

    async def after(self, crumb: Crumb) -> Crumb:
        """The crumb after ``crumb``, waiting for it if there is none yet."""
        if crumb.next is not None:
            self.stats.non_block += 1
            return crumb.next
        self.stats.block += 1
        while crumb.next is None:
            await self._changed.wait()
        return crumb.next

    # -- internals ---------------------------------------------------------------------

    def _entry(self, resource: Any, revision: Any) -> _Entry:
        value = to_dict(resource)
        rv = value.get("metadata", {}).pop("resourceVersion", "") or ""
        update = proto.SerializedUpdate(resource_key(resource), value, wire_revision(revision),
                                        proto.UPDATE_TYPES["added"], rv)
        return _Entry(value, rv, revision, proto.update_json(update))

    def _modified(self, key: str, entry: _Entry) -> str:
        return proto.update_json(proto.SerializedUpdate(key, entry.value, wire_revision(entry.revision),
                                                        proto.UPDATE_TYPES["modified"], entry.resource_version))

    def _deletion(self, key: str, revision: Any) -> str:
        return proto.update_json(proto.SerializedUpdate(key, None, wire_revision(revision),
                                                        proto.UPDATE_TYPES["deleted"]))

    def _frames(self, updates: list[str], status: proto.SyncStatus | None) -> bytes:
        step = self.max_batch
        frames = [proto.kvs_frame(updates[i:i + step]) for i in range(0, len(updates), step)]
        if status is not None:
            frames.append(proto.encode(status))
        return b"".join(frames)

    def _append(self, updates: list[str], status: str, revision: Any) -> None:
        changed = status != self.status
        self.revision = revision
        if not updates and not changed:
            return
        self.status = status
        status_message = proto.SyncStatus(status, wire_revision(revision)) if changed else None
        crumb = Crumb(self.latest.seq + 1, time.monotonic(), status, revision,
                      self._frames(updates, status_message), len(updates))
        self.latest.next = crumb
        self.latest = crumb
        woken, self._changed = self._changed, asyncio.Event()
        woken.set()


def _same(old: _Entry, new: _Entry) -> bool:
    return old.resource_version == new.resource_version and old.value == new.value
