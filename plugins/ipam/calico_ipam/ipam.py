"""The IP address manager of one node: ``IPAM(datastore, node)``."""

from __future__ import annotations

import time
from collections.abc import Callable

from .allocator import Allocator
from .cache import BlockCache
from .check import Checker
from .release import Releaser
from .store import Store


class IPAM(Allocator, Releaser, Checker):
    """Calico's block-affinity IPAM for ``node``, on ``datastore``.

    Allocation: ``auto_assign``, ``assign_ip``. Release: ``release_ips``,
    ``release_by_handle``, ``release_affinity``, ``release_host_affinities``. Queries:
    ``get_assignment_attributes``, ``ips_by_handle``, ``usage``. Upkeep: ``check``,
    ``repair``.

    ``clock`` (Unix seconds) times cooldowns and block claims; tests inject one.
    ``checkpoint(name)`` is called between two writes of one operation, a test seam for
    ending a process half way: ``affinity-pending`` (claim: affinity written, block
    not), ``block-created`` (block written, affinity not confirmed), ``handle-counted``
    (handle written, block not), ``block-released`` (block written, handle not
    lowered), ``affinity-pending-deletion`` and ``block-released-from-affinity``
    (giving a block up).

    ``remember_blocks``: keep this node's blocks as last read or written between
    calls (``BlockCache``), for a long-running process that serves many requests (the
    CNI agent): an assignment then starts from a remembered block instead of reading
    the node's affinities and blocks, and a release of a handle from the remembered
    block it is in. Every such use ends in the block's compare-and-swap write; a block
    someone else changed fails it, is forgotten and read again.

    One instance may be shared by threads; beyond the datastore it was given it keeps
    only that cache between calls (and ``repair``'s view while it runs).
    """

    def __init__(self, datastore, node: str, clock: Callable[[], float] = time.time,
                 checkpoint: Callable[[str], None] | None = None, remember_blocks: bool = False):
        if not node:
            raise ValueError("a node name is required")
        self.node = node
        self.clock = clock
        self.store = Store(datastore, checkpoint, BlockCache(node) if remember_blocks else None)
        self._held_cache = None

    @property
    def datastore(self):
        return self.store.ds

    def __repr__(self) -> str:
        return f"IPAM(node={self.node!r}, datastore={self.store.ds!r})"
