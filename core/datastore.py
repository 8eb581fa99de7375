"""What the reconcile loop needs of a datastore: a snapshot, then every change.

The datastore slot's plugins (etcd, Kubernetes) implement this protocol; typed CRUD
for calicoctl and IPAM extends it in their own issue.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Literal, Protocol

import attrs


class DatastoreError(Exception):
    """Base of the datastore's typed errors."""


class DatastoreUnavailable(DatastoreError):
    """The datastore cannot be reached; the caller retries."""


@attrs.frozen
class Snapshot:
    """Every resource at one revision."""

    revision: int
    resources: tuple = ()


@attrs.frozen
class Event:
    """One change after a snapshot's revision. ``resource`` is the new value, or the
    last value for a delete."""

    type: Literal["added", "modified", "deleted"]
    resource: object
    revision: int


class Datastore(Protocol):
    def snapshot(self) -> Snapshot:
        """Every resource the agent syncs, at one consistent revision."""

    def watch(self, revision: int, stop: threading.Event) -> Iterator[Event]:
        """Every change after ``revision``, in order, until ``stop`` is set.

        A watch that cannot resume (compacted history) relists and yields the
        differences, so no change is lost or doubled. Raises DatastoreUnavailable
        when the datastore goes away.
        """

    def close(self) -> None:
        """Release connections."""
