"""The datastore interface: what core, calicoctl and IPAM ask of the datastore slot.

Two plugins implement it, etcd and Kubernetes (KDD). Everything is typed v3 resources
(``pycalico.core.resources``) in and out; where and how they are stored is the
plugin's business.

Revisions come in two kinds:

* ``metadata.resourceVersion`` of a resource (a string) is what compare-and-swap
  checks: ``update`` and ``delete`` given a resource version succeed only if the stored
  object still has it, else ``Conflict``. This is all IPAM needs for its atomic
  read-modify-write: read the block, change it, update with the version read; retry on
  Conflict.
* The ``revision`` of a snapshot or event is an opaque token meaning "the datastore
  as of here": hand a snapshot's revision to ``watch`` to get every later change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterator
from typing import Any, Literal, Protocol

import attrs

from pycalico.hooks import hookimpl

log = logging.getLogger(__name__)

RETRY_SECONDS = (0.5, 1, 2, 5, 10)  # waits before each new snapshot after a failure, the last repeated


class DatastoreError(Exception):
    """Base of the datastore's typed errors."""


class DatastoreUnavailable(DatastoreError):
    """The datastore cannot be reached (or timed out); the caller may retry."""


def _what(kind: str, name: str, namespace: str | None) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


class ResourceError(DatastoreError):
    """An error about one named resource."""

    def __init__(self, kind: str, name: str, namespace: str | None = None, detail: str = ""):
        self.kind, self.name, self.namespace = kind, name, namespace
        super().__init__(f"{_what(kind, name, namespace)}: {detail or self.reason}")

    reason = ""


class NotFound(ResourceError):
    reason = "resource does not exist"


class AlreadyExists(ResourceError):
    reason = "resource already exists"


class Conflict(ResourceError):
    """The resource changed since the given resourceVersion was read."""

    reason = "update conflict: the resource was modified since it was read"


class OperationNotSupported(ResourceError):
    """This datastore does not allow that operation on that kind (KDD: WorkloadEndpoints
    are Pods written by the CNI plugin, profiles are Namespaces, ...)."""

    reason = "operation not supported"


@attrs.frozen
class Snapshot:
    """Every synced resource at one revision."""

    revision: Any
    resources: tuple = ()


@attrs.frozen
class Event:
    """One change after a revision. ``resource`` is the new value, or the last value
    for a delete. ``revision`` is where a watch would resume after this event."""

    type: Literal["added", "modified", "deleted"]
    resource: Any
    revision: Any


@attrs.frozen
class Page:
    """One page of a list. ``continue_token`` is None on the last page."""

    items: tuple
    revision: Any
    continue_token: str | None = None


class Datastore(Protocol):
    # -- typed CRUD -------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        """The stored resource, with ``metadata.resourceVersion`` set; NotFound."""

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        selector: str | None = None,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> Page:
        """Resources of ``kind``, sorted by (namespace, name).

        ``namespace`` None means all namespaces; ``selector`` is a Calico selector on
        ``metadata.labels``; ``limit`` > 0 pages the result: pass the page's
        ``continue_token`` back for the next page, which is consistent with the first.
        """

    def create(self, resource: Any) -> Any:
        """Store a new resource; AlreadyExists if one has its name. Returns it as
        stored (resourceVersion, uid and creationTimestamp set)."""

    def update(self, resource: Any) -> Any:
        """Replace a stored resource. If ``metadata.resourceVersion`` is set, only if
        the stored one still has it (Conflict otherwise); NotFound if absent."""

    def delete(self, kind: str, name: str, namespace: str | None = None, resource_version: str | None = None) -> Any:
        """Remove a resource (only at ``resource_version`` if given: Conflict
        otherwise) and return its last value; NotFound if absent."""

    # -- sync ---------------------------------------------------------------------

    def snapshot(self, kinds: Collection[str] | None = None) -> Snapshot:
        """Every resource of ``kinds`` (None: every kind the plugin stores) at one
        consistent revision."""

    def watch(self, revision: Any, stop: threading.Event, kinds: Collection[str] | None = None) -> Iterator[Event]:
        """Every change after ``revision``, in order, until ``stop`` is set.

        Transient disconnects are retried inside, resuming after the last event
        delivered. When history is gone (compaction, 410 Gone) it relists and yields
        the differences, so no change is lost or doubled. Raises
        DatastoreUnavailable when the datastore stays unreachable.
        """

    def close(self) -> None:
        """Release connections; a running watch ends."""


def follow(connect: Callable[[], Datastore], stop: threading.Event, *, connected: Callable[[Datastore], None],
           snapshot: Callable[[Snapshot], None], event: Callable[[Event], None],
           failed: Callable[[DatastoreError], None]) -> None:
    """Follow the datastore until ``stop``: connect, take a snapshot, then watch from
    its revision. When the datastore fails (or the watch ends on its own), ``failed``
    hears why, and after a wait (``RETRY_SECONDS``) a new snapshot starts over on the
    same store; a datastore down at the start is tried again the same way. The agent's
    sync and Typha's upstream both follow this way.

    ``connected`` gets the store once it is open, so that the caller can close it to
    end a blocked watch; a store connected after ``stop`` was set is closed here.
    """
    failures = 0
    store: Datastore | None = None
    try:
        while not stop.is_set():
            try:
                if store is None:
                    store = connect()
                    connected(store)
                taken = store.snapshot()
                snapshot(taken)
                failures = 0
                for change in store.watch(taken.revision, stop):
                    event(change)
                if not stop.is_set():
                    raise DatastoreUnavailable("the watch ended")
            except DatastoreError as exc:
                failed(exc)
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("datastore: %s; resyncing in %.1fs", exc, delay)
                stop.wait(delay)
    finally:
        if store is not None and stop.is_set():
            store.close()


def check_identity(info: Any, resource: Any) -> None:
    """ValueError unless ``resource`` has a name, and a namespace exactly when its kind
    (``info``, a ``codec.KindInfo``) is namespaced: what every datastore checks before a
    write."""
    if not resource.metadata.name:
        raise ValueError(f"{info.kind}: metadata.name is required")
    if info.namespaced and not resource.metadata.namespace:
        raise ValueError(f"{info.kind} {resource.name}: metadata.namespace is required ({info.kind} is namespaced)")
    if not info.namespaced and resource.metadata.namespace:
        raise ValueError(f"{info.kind} {resource.name}: metadata.namespace must not be set")


class DatastorePlugin:
    """The hook implementations every datastore plugin has: it declares its options
    table, connects when its name fills the slot (checking the datastore answers), and
    closes what it opened when the process unconfigures.

    ``store_class(options)`` builds an unconnected store with a ``ping()`` and a
    ``close()``; a plugin module registers ``DatastorePlugin(NAME, Options, Store)``.
    """

    def __init__(self, name: str, options_class: type, store_class: type):
        self.name = name
        self.options_class = options_class
        self.store_class = store_class
        self._stores: list = []
        self._lock = threading.Lock()

    def connect(self, options: Any = None) -> Any:
        """A store on ``options`` (the defaults if None), checked to answer
        (DatastoreUnavailable if not)."""
        store = self.store_class(options or self.options_class())
        try:
            store.ping()
        except BaseException:
            store.close()
            raise
        return store

    @hookimpl
    def pycalico_config_schema(self, slot: str, name: str) -> type | None:
        return self.options_class if (slot, name) == ("datastore", self.name) else None

    @hookimpl
    def pycalico_datastore(self, config: Any) -> Any:
        if config.datastore.type != self.name:
            return None
        store = self.connect(config.datastore.options)
        with self._lock:
            self._stores.append(store)
        return store

    @hookimpl
    def pycalico_unconfigure(self, config: Any) -> None:
        with self._lock:
            stores, self._stores = self._stores, []
        for store in stores:
            store.close()
