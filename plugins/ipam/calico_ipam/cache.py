"""What a long-running process remembers of its own node's blocks between calls.

The node agent serves every CNI ADD and DEL of its node, so it can keep the blocks
affine to its node as it last read or wrote them instead of reading one for each pod.
Nothing remembered is trusted on its own: a remembered block is only the starting point
of a change that is then written with compare-and-swap against the version remembered.
If someone else changed the block meanwhile, the write fails, the block is forgotten
and the caller reads it again, so a stale entry costs one retry and can never hand out
an address twice. An answer that leads to no write ("no free address here", "this
handle holds nothing here") is never taken from here.
"""

from __future__ import annotations

import threading

from .blocks import Block


class BlockCache:
    """The blocks affine to ``node`` (``host:<node>``), by CIDR, as last seen."""

    def __init__(self, node: str):
        self.affinity = f"host:{node}"
        self._lock = threading.Lock()
        self._blocks: dict[str, Block] = {}

    def seen(self, block: Block) -> None:
        """``block`` as just read or written: remembered if it is affine to this node
        (and not being deleted), forgotten otherwise."""
        if block.affinity == self.affinity and not block.deleted and block.resource is not None:
            kept = block.copy()
            with self._lock:
                self._blocks[block.cidr] = kept
        else:
            self.forget(block.cidr)

    def forget(self, cidr: str) -> None:
        with self._lock:
            self._blocks.pop(cidr, None)

    def get(self, cidr: str) -> Block | None:
        """A working copy of the remembered block, marked ``remembered``."""
        with self._lock:
            kept = self._blocks.get(cidr)
        return _marked(kept) if kept is not None else None

    def blocks(self, version: int) -> list[Block]:
        """Working copies of every remembered block of IP ``version``, in address order."""
        with self._lock:
            kept = [b for b in self._blocks.values() if b.network.version == version]
        return [_marked(b) for b in sorted(kept, key=lambda b: b.network)]


def _marked(block: Block) -> Block:
    out = block.copy()
    out.remembered = True
    return out
