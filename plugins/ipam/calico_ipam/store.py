"""The IPAM records in the datastore: read, create, compare-and-swap, delete.

A thin typed layer over the Datastore interface; no retries here (the callers' loops
decide what a conflict means). Records marked ``deleted`` (the first half of a KDD
soft delete) read as absent, as Calico's readers filter them.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from pycalico.core.datastore import NotFound
from pycalico.core.resources.base import deferred_checks
from pycalico.core.resources.ipam import (
    BlockAffinity,
    BlockAffinitySpec,
    IPAMBlock,
    IPAMConfig,
    IPAMHandle,
    IPAMHandleSpec,
)
from pycalico.core.resources.ippool import IPPool, IPReservation
from pycalico.core.resources.meta import ObjectMeta

from .blocks import Block
from .cache import BlockCache

CONFIRMED, PENDING, PENDING_DELETION = "confirmed", "pending", "pendingDeletion"


def _with_rv(res, rv: str | None):
    with deferred_checks():
        return attrs.evolve(res, metadata=attrs.evolve(res.metadata, resource_version=rv))


class Store:
    """Typed IPAM reads and writes on one Datastore.

    ``checkpoint`` is called with a name after each write that leaves the records
    half-changed (a test seam: the crash tests end the process there). With a
    ``cache``, every block read or written here is shown to it, and a block whose write
    failed (or whose outcome is unknown) is forgotten.
    """

    def __init__(self, datastore, checkpoint: Callable[[str], None] | None = None, cache: BlockCache | None = None):
        self.ds = datastore
        self.checkpoint = checkpoint or (lambda name: None)
        self.cache = cache

    # -- settings and inputs ---------------------------------------------------------

    def config(self) -> IPAMConfig:
        try:
            return self.ds.get(IPAMConfig.KIND, "default")
        except NotFound:
            return IPAMConfig.default()

    def pools(self) -> list[IPPool]:
        out = []
        for pool in self._all(IPPool.KIND):
            with deferred_checks():
                out.append(attrs.evolve(pool, spec=pool.spec.with_defaults()))
        return sorted(out, key=lambda p: p.metadata.name or "")

    def reservations(self) -> list[IPReservation]:
        return self._all(IPReservation.KIND)

    def node_labels(self, node: str) -> dict[str, str]:
        """The Node's labels; a node that is not stored has none."""
        try:
            return dict(self.ds.get("Node", node).metadata.labels or {})
        except NotFound:
            return {}

    def node_names(self) -> set[str]:
        return {n.metadata.name for n in self._all("Node")}

    def _all(self, kind: str) -> list:
        items: list = []
        token = None
        while True:
            page = self.ds.list(kind, limit=500, continue_token=token) if token else self.ds.list(kind, limit=500)
            items.extend(page.items)
            token = page.continue_token
            if not token:
                return items

    # -- blocks ------------------------------------------------------------------------

    def block(self, cidr: str, remembered: bool = False) -> Block | None:
        """The block ``cidr`` as stored (None if there is none); with ``remembered``,
        the cache's copy if it has one (see ``BlockCache``)."""
        from pycalico.core.resources.ipam import cidr_name

        if remembered and self.cache is not None:
            kept = self.cache.get(str(cidr))
            if kept is not None:
                return kept
        try:
            res = self.ds.get(IPAMBlock.KIND, cidr_name(cidr))
        except NotFound:
            self._forget(str(cidr))
            return None
        if res.spec.deleted:
            self._forget(str(cidr))
            return None
        return self._seen(Block.from_resource(res))

    def blocks(self) -> list[Block]:
        return [Block.from_resource(r) for r in self._all(IPAMBlock.KIND) if not r.spec.deleted]

    def create_block(self, block: Block) -> Block:
        """Store a new block (AlreadyExists if its CIDR has one)."""
        try:
            res = self.ds.create(_with_rv(block.to_resource(), None))
        except BaseException:
            self._forget(block.cidr)
            raise
        block.resource = res
        return self._seen(block)

    def update_block(self, block: Block) -> Block:
        """Compare-and-swap the block against the version it was read at, bumping its
        sequence number as every block write does (Conflict, NotFound)."""
        block.sequence += 1
        try:
            res = self.ds.update(block.to_resource())
        except BaseException:
            self._forget(block.cidr)
            raise
        block.resource = res
        return self._seen(block)

    def delete_block(self, block: Block) -> None:
        self._forget(block.cidr)
        self.ds.delete(IPAMBlock.KIND, block.resource.metadata.name, resource_version=block.resource_version)

    def _seen(self, block: Block) -> Block:
        block.remembered = False
        if self.cache is not None:
            self.cache.seen(block)
        return block

    def _forget(self, cidr: str) -> None:
        if self.cache is not None:
            self.cache.forget(cidr)

    # -- affinities --------------------------------------------------------------------

    def affinity(self, node: str, cidr: str) -> BlockAffinity | None:
        try:
            aff = self.ds.get(BlockAffinity.KIND, BlockAffinity.name_for(node, cidr))
        except NotFound:
            return None
        if aff.spec.deleted == "true" or aff.spec.node != node:
            return None
        return aff

    def affinities(self, node: str | None = None) -> list[BlockAffinity]:
        found = [a for a in self._all(BlockAffinity.KIND) if a.spec.deleted != "true"]
        if node is not None:
            found = [a for a in found if a.spec.node == node and (a.spec.type or "host") == "host"]
        return found

    def create_affinity(self, node: str, cidr: str, state: str) -> BlockAffinity:
        aff = BlockAffinity(
            metadata=ObjectMeta(name=BlockAffinity.name_for(node, cidr)),
            spec=BlockAffinitySpec(state=state, node=node, type="host", cidr=cidr, deleted="false"),
        )
        return self.ds.create(aff)

    def set_affinity_state(self, aff: BlockAffinity, state: str) -> BlockAffinity:
        with deferred_checks():
            changed = attrs.evolve(aff, spec=attrs.evolve(aff.spec, state=state))
        return self.ds.update(changed)

    def delete_affinity(self, aff: BlockAffinity) -> None:
        self.ds.delete(BlockAffinity.KIND, aff.metadata.name, resource_version=aff.metadata.resource_version)

    # -- handles -----------------------------------------------------------------------

    def handle(self, handle_id: str) -> IPAMHandle | None:
        try:
            h = self.ds.get(IPAMHandle.KIND, handle_id)
        except NotFound:
            return None
        return None if h.spec.deleted else h

    def handles(self) -> list[IPAMHandle]:
        return [h for h in self._all(IPAMHandle.KIND) if not h.spec.deleted]

    def create_handle(self, handle_id: str, counts: dict[str, int]) -> IPAMHandle:
        h = IPAMHandle(
            metadata=ObjectMeta(name=handle_id),
            spec=IPAMHandleSpec(handle_id=handle_id, block=dict(counts), deleted=False),
        )
        return self.ds.create(h)

    def update_handle(self, handle: IPAMHandle, counts: dict[str, int]) -> IPAMHandle:
        with deferred_checks():
            changed = attrs.evolve(handle, spec=attrs.evolve(handle.spec, block=dict(counts)))
        return self.ds.update(changed)

    def delete_handle(self, handle: IPAMHandle) -> None:
        self.ds.delete(IPAMHandle.KIND, handle.metadata.name, resource_version=handle.metadata.resource_version)
