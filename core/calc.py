"""From the synced resources to this node's desired state.

The cache holds every resource the datastore sent, keyed by kind, namespace and name.
``compute`` freezes it into a ``DesiredState``: an immutable snapshot that every
reconciler of a pass sees alike, however the cache moves on meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from pycalico.core.datastore import Event, Snapshot

Key = tuple[str, str, str]  # kind, namespace ("" when cluster-wide), name


def key_of(resource: Any) -> Key:
    # The class's KIND, not the manifest's spelling (IPAMConfig / IPAMConfiguration).
    meta = resource.metadata
    return type(resource).KIND, meta.namespace or "", meta.name


class Cache:
    """The last known value of every synced resource."""

    def __init__(self) -> None:
        self._items: dict[Key, Any] = {}
        self.revision: Any = None

    def __len__(self) -> int:
        return len(self._items)

    def replace(self, snapshot: Snapshot) -> None:
        self._items = {key_of(r): r for r in snapshot.resources}
        self.revision = snapshot.revision

    def apply(self, event: Event) -> None:
        key = key_of(event.resource)
        if event.type == "deleted":
            self._items.pop(key, None)
        else:
            self._items[key] = event.resource
        self.revision = event.revision

    def of_kind(self, kind: str) -> tuple[Any, ...]:
        """The resources of one kind (safe from another thread: reads a reference)."""
        return tuple(r for key, r in list(self._items.items()) if key[0] == kind)

    def by_kind(self) -> dict[str, tuple[Any, ...]]:
        kinds: dict[str, list[tuple[Key, Any]]] = {}
        for key, resource in self._items.items():
            kinds.setdefault(key[0], []).append((key, resource))
        return {kind: tuple(r for _, r in sorted(items, key=lambda kr: kr[0])) for kind, items in kinds.items()}


@attrs.frozen
class DesiredState:
    """Everything a reconciler needs for one pass, for one node."""

    node_name: str
    revision: Any
    resources: Mapping[str, tuple[Any, ...]] = attrs.field(converter=MappingProxyType)

    def of_kind(self, kind: str) -> tuple[Any, ...]:
        return self.resources.get(kind, ())

    @property
    def node(self) -> Any | None:
        return next((n for n in self.of_kind("Node") if n.metadata.name == self.node_name), None)

    def local(self, kind: str) -> tuple[Any, ...]:
        """Resources of ``kind`` whose ``spec.node`` is this node (endpoints)."""
        return tuple(r for r in self.of_kind(kind) if getattr(r.spec, "node", None) == self.node_name)


def compute(cache: Cache, node_name: str) -> DesiredState:
    return DesiredState(node_name=node_name, revision=cache.revision, resources=cache.by_kind())
