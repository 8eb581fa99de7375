"""Allocation: the compare-and-swap loops of AutoAssign and AssignIP
(``libcalico-go/lib/ipam/ipam.go``, ``ipam_block_reader_writer.go``).

Order of things for ``auto_assign``, as Calico does it:

1. Use the blocks affine to this node (any affinity state: a pending affinity whose
   block is missing is finished, an unconfirmed one is confirmed).
2. Else, if the node holds fewer than the block limit, claim a block: an unclaimed
   block CIDR of the pools (walked from a start point seeded by the node name), or one
   of ours with space, or an empty block claimed over a minute ago by another node.
   The claim is Calico's two steps: affinity ``pending`` -> block created with affinity
   ``host:<node>`` -> affinity ``confirmed``. A node at its limit whose blocks are full
   gets ``BlockLimitReached`` (Calico's ErrBlockLimit: it does not borrow).
3. Else, unless strictAffinity, borrow free addresses from any block of the pools.

Every write is compare-and-swap on the record's resourceVersion, retried up to 100 times
(Calico's datastoreRetries). Two processes can never hand out the same address: an
address is only given out by the write that marks it taken in its block, and that
write fails if the block changed since it was read.
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pycalico.core.datastore import AlreadyExists, Conflict, NotFound
from pycalico.core.resources.base import problems
from pycalico.core.resources.ipam import DEFAULT_MAX_BLOCKS_PER_HOST, IPAMBlock, IPAMConfig, cidr_name
from pycalico.core.resources.ippool import IPPool

from . import handles, pools
from .blocks import Block, IPNetwork, timestamp, view
from .errors import (
    AffinityConflict,
    BlockLimitReached,
    IPAMError,
    IPAMExhausted,
    NoPool,
    TooManyConflicts,
)
from .pools import Reservations
from .store import CONFIRMED, PENDING

RETRIES = 100  # Calico's datastoreRetries
RECLAIM_AGE = 60.0  # Calico's EmptyBlockMinReclaimAge: an empty block claimed this recently stays put


class NoFreeBlocks(Exception):
    """Internal: no block can be claimed (Calico's noFreeBlocksError)."""


def backoff(attempt: int) -> None:
    """A short random pause after repeated conflicts, so that writers racing for one
    block spread out instead of colliding in step."""
    if attempt >= 2:
        time.sleep(random.uniform(0, min(0.002 * attempt, 0.05)))


def block_limit(config: IPAMConfig, requested: int | None) -> int:
    """Calico: the request's limit, unless the global one is set and smaller; 0 for
    both means 20."""
    configured = config.spec.max_blocks_per_host or 0
    limit = requested or 0
    if configured > 0 and limit > 0 and limit > configured:
        limit = configured
    elif limit == 0:
        limit = configured
    return limit or DEFAULT_MAX_BLOCKS_PER_HOST


@dataclass
class Request:
    """What one family's assignment reads once and uses throughout."""

    version: int
    config: IPAMConfig
    reserved: Reservations
    pools: list[IPPool] = field(default_factory=list)
    all_pools: list[IPPool] = field(default_factory=list)
    new_handle: bool = False  # the next handle write must create it (HandleInUse if it exists)

    @property
    def cooldown(self) -> int:
        return self.config.spec.ip_cooldown_seconds or 0

    @property
    def strict(self) -> bool:
        return bool(self.config.spec.strict_affinity)


@dataclass
class AssignResult:
    """The addresses assigned, with their block's prefix length (as Calico returns them)."""

    v4: list[ipaddress.IPv4Interface] = field(default_factory=list)
    v6: list[ipaddress.IPv6Interface] = field(default_factory=list)

    @property
    def all(self) -> list:
        return [*self.v4, *self.v6]


class Allocator:
    """Mixed into ``IPAM``: uses ``self.store``, ``self.node``, ``self.clock``."""

    # -- shared helpers ------------------------------------------------------------------

    @property
    def affinity(self) -> str:
        return f"host:{self.node}"

    def _request(self, version: int, for_assignment: bool = False) -> Request:
        config = self.store.config()
        if for_assignment:
            found = problems(config.spec, "spec")
            if found:
                raise IPAMError("the IPAM configuration is invalid, refusing to assign: "
                                + "; ".join(f"{path}: {message}" for path, message in found))
        # Reservations only matter when handing addresses out.
        reserved = Reservations(self.store.reservations()) if for_assignment else Reservations()
        return Request(version=version, config=config, reserved=reserved)

    def _load(self, cidr: str | IPNetwork, req: Request, remembered: bool = False) -> Block | None:
        """The block as stored (with ``remembered``, as the cache remembers it, if it
        does), with cooldowns that are due collected (Calico folds that into the next
        write of the block)."""
        block = self.store.block(str(cidr), remembered)
        if block is not None:
            block.collect(self.clock(), req.cooldown)
        return block

    def _owner_attrs(self, attrs: dict[str, str] | None, use: str = pools.WORKLOAD) -> dict[str, str]:
        out = {k: str(v) for k, v in (attrs or {}).items()}
        out.setdefault("node", self.node)
        if use == pools.WORKLOAD:  # Calico stamps workload addresses only
            out.setdefault("timestamp", time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(self.clock())))
        return out

    # -- auto_assign -----------------------------------------------------------------------

    def auto_assign(
        self,
        handle_id: str,
        attrs: dict[str, str] | None = None,
        num_v4: int = 1,
        num_v6: int = 0,
        pools: Sequence[str] | None = None,
        namespace_labels: dict[str, str] | None = None,
        max_blocks_per_host: int | None = None,
        new_handle: bool = False,
        use: str = pools.WORKLOAD,
    ) -> AssignResult:
        """Assign ``num_v4`` IPv4 and ``num_v6`` IPv6 addresses to ``handle_id``.

        ``attrs`` are the owner's attributes (pod, namespace...); ``node`` and
        ``timestamp`` are added unless given. ``pools`` names pools (by name or CIDR) to
        use instead of those selecting this node; ``namespace_labels`` are matched
        against the pools' namespaceSelector. All or nothing: if not every address can
        be assigned, those already taken are given back and the error raised
        (IPAMExhausted, BlockLimitReached, NoPool). With ``new_handle``, the handle must
        not exist yet: HandleInUse, with no address assigned, if it does (for a caller
        that would otherwise read the handle first to tell a repeated request; a block
        claimed on the way stays this node's). ``use`` is Calico's intended use
        (``Workload``, ``Tunnel``): only pools whose allowedUses include it are used.
        """
        if not handle_id:
            raise ValueError("a handle ID is required")
        owner = self._owner_attrs(attrs, use)
        result = AssignResult()
        try:
            if num_v4:
                result.v4 = self._auto_assign(4, num_v4, handle_id, owner, pools, namespace_labels, max_blocks_per_host,
                                              new_handle, use)
            if num_v6:
                result.v6 = self._auto_assign(6, num_v6, handle_id, owner, pools, namespace_labels, max_blocks_per_host,
                                              new_handle and not result.v4, use)
        except BaseException:
            self._undo(handle_id, result.all)
            raise
        return result

    def _auto_assign(self, version, num, handle_id, attrs, requested, namespace_labels, max_blocks,
                     new_handle: bool = False, use: str = pools.WORKLOAD) -> list:
        req = self._request(version, for_assignment=True)
        req.new_handle = new_handle
        req.all_pools = self.store.pools()
        node_labels = self.store.node_labels(self.node)
        req.pools = pools.select(req.all_pools, version, requested, self.node, node_labels, namespace_labels, use)
        got: list = []
        try:
            got += self._assign_remembered(req, num, handle_id, attrs)
            if len(got) >= num:
                return got
            affine = self._affinities(req, node_labels)
            limit = block_limit(req.config, max_blocks)
            owned = len(affine)
            for _ in range(RETRIES * max(num, 1)):
                if len(got) >= num:
                    break
                try:
                    block, new = self._find_or_claim(req, affine, allow_new=owned < limit, owned=owned, limit=limit)
                except NoFreeBlocks:
                    break
                if new:
                    owned += 1
                got += self._assign_from(block.cidr, num - len(got), handle_id, attrs, req,
                                         check_affinity=req.strict, block=block)
            if len(got) < num and not req.strict:
                got += self._borrow(req, num - len(got), handle_id, attrs)
            if len(got) < num:
                raise self._exhausted(req, num, len(got))
        except BaseException:
            self._undo(handle_id, got)
            raise
        return got

    def _assign_remembered(self, req: Request, num: int, handle_id: str, attrs) -> list:
        """Addresses from a block the cache remembers (none without a cache): the first
        of this node's remembered blocks, in address order, in the request's pools and
        with room for all ``num``. Nothing is read first: the block's compare-and-swap
        write checks the remembered version (after a conflict the block is read again,
        and used only while it is still this node's). Anything short of that is left to
        the walk over the node's affinities, which reads everything afresh."""
        if self.store.cache is None:
            return []
        for block in self.store.cache.blocks(req.version):
            if pools.containing(req.pools, block.network) is None or req.reserved.covers(block.network):
                continue
            block.collect(self.clock(), req.cooldown)
            if block.free_count(req.reserved) >= num:
                return self._assign_from(block.cidr, num, handle_id, attrs, req, check_affinity=True, block=block)
        return []

    def _affinities(self, req: Request, node_labels: dict[str, str]) -> list:
        """This node's affinities for blocks in the pools this request may use, in
        address order. Empty blocks of pools that no longer select this node are given
        up on the way (Calico's prepareAffinityBlocksForHost)."""
        out = []
        for aff in self.store.affinities(self.node):
            try:
                net = ipaddress.ip_network(aff.spec.cidr or "")
            except ValueError:
                continue
            if net.version != req.version:
                continue
            if pools.containing(req.pools, net) is not None:
                out.append((net, aff))
                continue
            owner = pools.containing(req.all_pools, net)
            if owner is not None and not pools.selects(owner.spec.node_selector, node_labels):
                try:
                    self._release_affinity(str(net), self.node, require_empty=True)
                except (IPAMError, Conflict, NotFound):
                    pass
        return [aff for _, aff in sorted(out, key=lambda pair: pair[0])]

    def _find_or_claim(self, req: Request, remaining: list, allow_new: bool, owned: int, limit: int):
        """A block with at least one free address: one of ours (``remaining``: our
        affinities, as just listed) first, else a new claim. Returns (block, newly
        claimed)."""
        while remaining:
            aff = remaining.pop(0)
            cidr = aff.spec.cidr
            if req.reserved.covers(ipaddress.ip_network(cidr)):
                continue
            for attempt in range(RETRIES):
                if attempt:  # the listed affinity changed meanwhile: read it again
                    aff = self.store.affinity(self.node, cidr)
                if aff is None:
                    break
                try:
                    block = self._block_from_affinity(aff, req)
                except (Conflict, NotFound):
                    backoff(attempt)
                    continue
                except (AffinityConflict, AlreadyExists):
                    break
                if block.free_count(req.reserved) >= 1:
                    return block, False
                break
        if not allow_new:
            raise BlockLimitReached(
                f"node {self.node} has {owned} IPv{req.version} blocks, all full, and may not claim another "
                f"(block limit {limit}: maxBlocksPerHost)"
            )
        if not req.config.spec.auto_allocate_blocks:
            raise NoFreeBlocks()
        for _ in range(RETRIES):
            cidr = self._find_usable_block(req)
            for attempt in range(RETRIES):
                try:
                    aff = self._pending_affinity(cidr)
                    block = self._block_from_affinity(aff, req)
                except (Conflict, NotFound):
                    backoff(attempt)
                    continue
                except AffinityConflict:
                    break  # taken by another node meanwhile: look for another
                if block.free_count(req.reserved) >= 1:
                    return block, True
                break
        raise TooManyConflicts(f"node {self.node}: could not claim a block after {RETRIES} attempts")

    def _block_from_affinity(self, aff, req: Request) -> Block:
        """The block an affinity of ours names: created if it is missing (a claim that
        stopped half way), confirmed if the affinity is not, and the affinity deleted
        if the block belongs to someone else (AffinityConflict)."""
        cidr = aff.spec.cidr
        block = self._load(cidr, req)
        if block is None:
            aff = self.store.set_affinity_state(aff, PENDING)
            return self._claim(aff, req)
        if block.affinity != self.affinity:
            try:
                self.store.delete_affinity(aff)
            except (Conflict, NotFound):
                pass
            raise AffinityConflict(f"block {cidr} is affine to {block.affinity}, not {self.affinity}")
        if aff.spec.state not in (CONFIRMED, "", None):
            aff = self.store.set_affinity_state(aff, PENDING)
            block = self.store.update_block(block)  # a new revision: whoever is releasing it must start again
            self.store.set_affinity_state(aff, CONFIRMED)
        return block

    def _pending_affinity(self, cidr: str):
        """Our affinity for ``cidr``: created ``pending``, or the existing one (marked
        pending again unless confirmed)."""
        try:
            return self.store.create_affinity(self.node, cidr, PENDING)
        except AlreadyExists:
            aff = self.store.affinity(self.node, cidr)
            if aff is None:
                raise Conflict("BlockAffinity", cidr, detail="deleted while being claimed") from None
            if aff.spec.state != CONFIRMED:
                return self.store.set_affinity_state(aff, PENDING)
            return aff

    def _claim(self, aff, req: Request) -> Block:
        """Create the block of a pending affinity, then confirm the affinity (Calico's
        claimAffineBlock)."""
        cidr = aff.spec.cidr
        self.store.checkpoint("affinity-pending")
        block = Block.new(cidr, self.affinity, timestamp(self.clock()), time.time_ns())
        try:
            block = self.store.create_block(block)
        except AlreadyExists:
            existing = self._load(cidr, req)
            if existing is None:
                raise Conflict(IPAMBlock.KIND, cidr_name(cidr), detail="deleted while being claimed") from None
            if existing.affinity == self.affinity:
                self._confirm(aff)
                return existing
            try:
                self.store.delete_affinity(aff)
            except (Conflict, NotFound):
                pass
            raise AffinityConflict(f"block {cidr} was claimed by {existing.affinity}") from None
        self.store.checkpoint("block-created")
        self._confirm(aff)
        return block

    def _confirm(self, aff):
        try:
            return self.store.set_affinity_state(aff, CONFIRMED)
        except (Conflict, NotFound):
            current = self.store.affinity(self.node, aff.spec.cidr)
            if current is not None and current.spec.state == CONFIRMED:
                return current
            raise

    def _find_usable_block(self, req: Request) -> str:
        """A block CIDR to claim: one nobody has, one of ours with space, or (last) an
        empty block claimed long enough ago, whose affinity is released first (Calico's
        findUsableBlock)."""
        now = self.clock()
        existing = {
            b.cidr: view(b, now, req.cooldown) for b in self.store.blocks() if b.network.version == req.version
        }
        empties: list[Block] = []
        for pool in req.pools:
            for net in pools.walk(pool, self.node):
                if req.reserved.covers(net):
                    continue
                b = existing.get(str(net))
                if b is None:
                    return str(net)
                if b.affinity == self.affinity and b.free_count(req.reserved):
                    return b.cidr
                if b.empty() and b.free_count(req.reserved):
                    empties.append(b)
        for b in empties:
            try:
                if b.affinity is None:
                    self.store.delete_block(b)  # an empty block nobody holds: just remove it
                    return b.cidr
                claimed = _seconds_or_zero(b.claim_time)
                if now - claimed < RECLAIM_AGE or b.host is None:
                    continue
                self._release_affinity(b.cidr, b.host, require_empty=True, required_sequence=b.sequence)
                return b.cidr
            except (IPAMError, Conflict, NotFound):
                continue
        raise NoFreeBlocks()

    # -- assignment in one block ---------------------------------------------------------

    def _assign_from(self, cidr: str, num: int, handle_id: str, attrs, req: Request,
                     check_affinity: bool, block: Block | None = None) -> list:
        """Take up to ``num`` free addresses of one block: handle counted first, then the
        block written with compare-and-swap; on conflict the count is taken back and the
        block read again."""
        for attempt in range(RETRIES):
            if block is None:
                block = self._load(cidr, req)
                if block is None:
                    return []
            else:
                block.collect(self.clock(), req.cooldown)
            if check_affinity and block.affinity != self.affinity:
                return []
            ordinals = block.assign_any(num, handle_id, attrs, req.reserved)
            if not ordinals:
                return []
            handles.add(self.store, handle_id, block.cidr, len(ordinals), new=req.new_handle)
            req.new_handle = False
            self.store.checkpoint("handle-counted")
            try:
                self.store.update_block(block)
            except (Conflict, NotFound):
                handles.subtract(self.store, handle_id, block.cidr, len(ordinals))
                block = None
                backoff(attempt)
                continue
            return [block.interface(o) for o in ordinals]
        raise TooManyConflicts(f"block {cidr}: gave up after {RETRIES} conflicting updates")

    def _borrow(self, req: Request, num: int, handle_id: str, attrs) -> list:
        """Free addresses from any block of the pools, ours or not, each pool's blocks in
        this node's walking order (only blocks that exist are read)."""
        got: list = []
        blocks = [b for b in self.store.blocks() if b.network.version == req.version]
        for pool in req.pools:
            net = pools.network(pool)
            order = pools.walk_order(pool, self.node)
            inside = sorted((b for b in blocks if b.network.subnet_of(net)), key=lambda b: order(b.network))
            for b in inside:
                if len(got) >= num:
                    return got
                if req.reserved.covers(b.network):
                    continue
                got += self._assign_from(b.cidr, num - len(got), handle_id, attrs, req, check_affinity=False, block=b)
        return got

    def _exhausted(self, req: Request, num: int, got: int) -> IPAMExhausted:
        now = self.clock()
        blocks = [view(b, now, req.cooldown) for b in self.store.blocks() if b.network.version == req.version]
        parts = []
        short = False
        for pool in req.pools:
            net = pools.network(pool)
            inside = [b for b in blocks if b.network.subnet_of(net)]
            used = sum(len(b.in_use()) for b in inside)
            cooling = sum(len(b.cooling()) for b in inside)
            reserved = req.reserved.count_in(net)
            text = f"{pool.metadata.name} ({net}: {used + cooling} of {net.num_addresses} in use"
            if cooling:
                text += f", {cooling} cooling down"
            if reserved:
                text += f", {reserved} reserved"
            parts.append(text + ")")
            short = short or used + cooling + reserved < net.num_addresses
        noun = "pool" if len(parts) == 1 else "pools"
        message = f"no free addresses in IP {noun} {', '.join(parts)}"
        if short and req.strict:
            message += "; the free ones are in blocks affine to other nodes and strictAffinity forbids borrowing"
        elif short and not req.config.spec.auto_allocate_blocks:
            message += "; autoAllocateBlocks is false"
        if num > 1:
            message = f"node {self.node} needs {num} IPv{req.version} addresses, found {got}: {message}"
        return IPAMExhausted(message)

    def _undo(self, handle_id: str, interfaces: list) -> None:
        """Give back addresses assigned by a call that then failed: freed at once (no
        cooldown: nobody was ever given them)."""
        if not interfaces:
            return
        by_block: dict[str, list] = {}
        for iface in interfaces:
            by_block.setdefault(str(iface.network), []).append((iface.ip, handle_id, None))
        for cidr, requests in by_block.items():
            try:
                self._release_in_block(cidr, requests, self._request(ipaddress.ip_network(cidr).version),
                                       cooldown=False)
            except Exception:  # best effort: check() reports what is left over
                pass

    # -- assign_ip -------------------------------------------------------------------------

    def assign_ip(self, ip, handle_id: str, attrs: dict[str, str] | None = None):
        """Assign one given address (Calico's AssignIP). Its block is claimed for this
        node if nobody has it. AddressInUse if it is taken (or cooling down);
        AffinityConflict if strictAffinity and the block is another node's."""
        if not handle_id:
            raise ValueError("a handle ID is required")
        addr = ipaddress.ip_address(str(ip).split("/")[0])
        req = self._request(addr.version, for_assignment=True)
        enabled = [p for p in self.store.pools() if pools.enabled(p)]
        pool = pools.containing(enabled, addr)
        if pool is None:
            raise NoPool(f"{addr} is not in any enabled IP pool")
        cidr = str(pools.block_for(addr, pool))
        owner = self._owner_attrs(attrs)
        for attempt in range(RETRIES):
            block = self._load(cidr, req)
            if block is None:
                try:
                    block = self._claim(self._pending_affinity(cidr), req)
                except (Conflict, NotFound, AffinityConflict):
                    backoff(attempt)
                    continue
            if req.strict and block.affinity != self.affinity:
                raise AffinityConflict(
                    f"{addr} is in block {cidr}, affine to {block.affinity or 'no node'}, and strictAffinity is true"
                )
            ordinal = block.ordinal(addr)
            block.assign(ordinal, handle_id, owner)
            handles.add(self.store, handle_id, cidr, 1)
            self.store.checkpoint("handle-counted")
            try:
                self.store.update_block(block)
            except (Conflict, NotFound):
                handles.subtract(self.store, handle_id, cidr, 1)
                backoff(attempt)
                continue
            return block.interface(ordinal)
        raise TooManyConflicts(f"block {cidr}: gave up after {RETRIES} conflicting updates")


def _seconds_or_zero(text: str | None) -> float:
    from .blocks import seconds

    try:
        return seconds(text) if text else 0.0
    except ValueError:
        return 0.0


__all__ = ["AssignResult", "Allocator", "block_limit"]
