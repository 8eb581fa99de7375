"""Release: by address, by handle, and of block affinities (``ipam.go`` ReleaseIPs,
ReleaseByHandle, ReleaseAffinity; ``ipam_block_reader_writer.go`` releaseBlockAffinity).

Releasing is idempotent: an address that is free, cooling down or in no block is simply
reported as not assigned. A released address cools down for ``ipCooldownSeconds``
before it can be handed out again (see ``blocks``). The block is written first, the
handle count lowered after. A block left without any allocation and without affinity
is deleted; a node's own empty blocks keep their affinity (Calico releases those only
when the pool stops selecting the node, or through the kube-controllers GC).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from pycalico.core.datastore import Conflict, NotFound

from . import handles, pools
from .allocator import RETRIES, Request, backoff
from .blocks import Block, IPAddress
from .errors import AffinityConflict, IPAMError, StaleRelease, TooManyConflicts
from .store import PENDING_DELETION


class BlockNotEmpty(IPAMError):
    """A release of affinity that required the block to be empty found it was not."""


@dataclass(frozen=True)
class ReleaseOptions:
    """One address to release, optionally only if it still has this handle and
    allocation sequence number (Calico's ReleaseOptions: a stale release must not free
    an address handed out again since)."""

    address: str | IPAddress
    handle: str | None = None
    sequence_number: int | None = None

    @property
    def ip(self) -> IPAddress:
        return ipaddress.ip_address(str(self.address).split("/")[0])


@dataclass(frozen=True)
class Assignment:
    """Who holds an address (Calico's GetAssignmentAttributes)."""

    ip: IPAddress
    handle_id: str | None
    attrs: dict
    block: str
    sequence_number: int | None


@dataclass(frozen=True)
class _Released:
    """What a release in one block did: its result for the caller, and what to take off
    which handles once the block is written (handle id -> count, None for all it holds
    in the block); ``handles`` None: nothing changed, nothing to write."""

    result: list
    handles: dict[str, int | None] | None = None


class Releaser:
    """Mixed into ``IPAM``."""

    def release_ips(self, ips: Iterable) -> list[IPAddress]:
        """Release addresses (strings, ip objects or ReleaseOptions). Returns those that
        were not assigned. Raises StaleRelease (after doing every other block) if a
        handle or sequence number given did not match."""
        wanted = [x if isinstance(x, ReleaseOptions) else ReleaseOptions(x) for x in ips]
        all_pools = self.store.pools()  # disabled ones too: their addresses can be released
        by_block: dict[str, list] = {}
        not_assigned: list[IPAddress] = []
        scanned: list[Block] | None = None
        for opt in wanted:
            ip = opt.ip
            pool = pools.containing(all_pools, ip)
            if pool is not None:
                cidr = str(pools.block_for(ip, pool))
            else:
                if scanned is None:
                    scanned = self.store.blocks()
                found = next((b for b in scanned if ip.version == b.network.version and ip in b.network), None)
                if found is None:
                    not_assigned.append(ip)
                    continue
                cidr = found.cidr
            by_block.setdefault(cidr, []).append((ip, opt.handle, opt.sequence_number))
        errors: list[Exception] = []
        for cidr, requests in by_block.items():
            req = self._request(ipaddress.ip_network(cidr).version)
            req.all_pools = all_pools
            try:
                not_assigned += self._release_in_block(cidr, requests, req)
            except StaleRelease as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return not_assigned

    def _release_in_block(self, cidr: str, requests: list, req: Request, cooldown: bool = True) -> list[IPAddress]:
        def release(block: Block | None) -> _Released:
            if block is None:
                return _Released([ip for ip, _, _ in requests])
            asked = [(block.ordinal(ip), handle, seq) for ip, handle, seq in requests]
            skipped, counts = block.release(asked, self.clock(), cooldown=cooldown)
            result = [block.ip(o) for o in skipped]
            return _Released(result, None if len(skipped) == len(asked) else counts)

        return self._release_with_retries(cidr, req, release)

    def _write_after_release(self, block: Block) -> None:
        if block.empty() and block.affinity is None:
            self.store.delete_block(block)
        else:
            self.store.update_block(block)

    def release_by_handle(self, handle_id: str) -> list[IPAddress]:
        """Release every address of ``handle_id``; returns them. A handle that does not
        exist has nothing to release. The handle record is deleted (or corrected, if it
        counted addresses its blocks do not hold, as a process that died between its
        two writes leaves it). Not meant to race an ``auto_assign`` of the same handle
        (the CNI never runs ADD and DEL of one container at once)."""
        h = self.store.handle(handle_id)
        if h is None:
            return []
        released: list[IPAddress] = []
        for cidr in sorted(h.spec.block or {}):
            released += self._release_handle_in_block(cidr, handle_id)
        return released

    def _release_handle_in_block(self, cidr: str, handle_id: str) -> list[IPAddress]:
        def release(block: Block | None) -> _Released | None:
            if block is not None:
                ordinals = block.release_handle(handle_id, self.clock())
                if ordinals:
                    return _Released([block.ip(o) for o in ordinals], {handle_id: None})
                if block.remembered:
                    return None  # "nothing here" is only believed from a fresh read
            # Gone, or it never held them: the handle counted what was not there.
            handles.subtract(self.store, handle_id, cidr, None)
            return _Released([])

        req = self._request(ipaddress.ip_network(cidr).version)
        return self._release_with_retries(cidr, req, release, remembered_first=True)

    def _release_with_retries(self, cidr: str, req: Request, release, remembered_first: bool = False):
        """Load ``cidr``'s block, let ``release(block)`` free addresses in it and write it
        back, compare-and-swap, retried on a conflict; then take what was freed off the
        handles. ``release`` returns a ``_Released`` (nothing to write when its
        ``handles`` is None) or None to read the block afresh."""
        for attempt in range(RETRIES):
            block = self._load(cidr, req, remembered=remembered_first and attempt == 0)
            released = release(block)
            if released is None:
                continue
            if released.handles is None:
                return released.result
            block.collect(self.clock(), req.cooldown)  # a cooldown of 0 frees them now
            try:
                self._write_after_release(block)
            except (Conflict, NotFound):
                backoff(attempt)
                continue
            self.store.checkpoint("block-released")
            for handle_id, n in released.handles.items():
                handles.subtract(self.store, handle_id, cidr, n)
            self._ensure_consistent_affinity(block, req)
            return released.result
        raise TooManyConflicts(f"block {cidr}: gave up after {RETRIES} conflicting updates")

    def _ensure_consistent_affinity(self, block: Block, req: Request) -> None:
        """An emptied block whose pool no longer selects its (existing) node loses its
        affinity (Calico's ensureConsistentAffinity)."""
        host = block.host
        if host is None or not block.empty():
            return
        try:
            node = self.store.ds.get("Node", host)
        except NotFound:
            return
        pool = pools.containing(req.all_pools or self.store.pools(), block.network)
        if pool is None or pools.selects(pool.spec.node_selector, node.metadata.labels or {}):
            return
        try:
            self._release_affinity(block.cidr, host, require_empty=True)
        except (IPAMError, Conflict, NotFound):
            pass

    # -- affinities ------------------------------------------------------------------------

    def release_affinity(self, cidr: str, node: str | None = None, must_be_empty: bool = True) -> bool:
        """Give up ``node``'s (default: this node's) affinity for block ``cidr``. An
        empty block is deleted; a block still holding addresses stays, affine to nobody
        (only with ``must_be_empty`` False). Returns False if there was nothing to do or
        the block was not empty."""
        for attempt in range(RETRIES):
            try:
                self._release_affinity(str(ipaddress.ip_network(cidr)), node or self.node, require_empty=must_be_empty)
                return True
            except (NotFound, AffinityConflict, BlockNotEmpty):
                return False
            except Conflict:
                backoff(attempt)
                continue
        raise TooManyConflicts(f"block {cidr}: gave up after {RETRIES} conflicting updates")

    def release_host_affinities(self, node: str | None = None, must_be_empty: bool = True) -> list[str]:
        """Release every affinity of ``node`` (Calico's ReleaseHostAffinities); returns
        the CIDRs released."""
        node = node or self.node
        cidrs = [a.spec.cidr for a in self.store.affinities(node)]
        return [c for c in cidrs if self.release_affinity(c, node, must_be_empty)]

    def _release_affinity(self, cidr: str, node: str, require_empty: bool,
                          required_sequence: int | None = None) -> None:
        """One attempt of Calico's releaseBlockAffinity: affinity -> pendingDeletion,
        block deleted (empty) or made affine to nobody, affinity deleted. Raises
        NotFound, Conflict, AffinityConflict or BlockNotEmpty."""
        aff = self.store.affinity(node, cidr)
        if aff is None:
            raise NotFound("BlockAffinity", f"{node}/{cidr}")
        req = self._request(ipaddress.ip_network(cidr).version)
        block = self._load(cidr, req)
        if block is None:
            raise NotFound("IPAMBlock", cidr)
        if required_sequence is not None and block.sequence != required_sequence:
            raise Conflict("IPAMBlock", cidr, detail="changed since it was read")
        if block.affinity is not None and block.affinity != f"host:{node}":
            try:
                self.store.delete_affinity(aff)
            except (Conflict, NotFound):
                pass
            raise AffinityConflict(f"block {cidr} is affine to {block.affinity}, not host:{node}")
        if require_empty and not block.empty():
            raise BlockNotEmpty(f"block {cidr} still holds addresses")
        aff = self.store.set_affinity_state(aff, PENDING_DELETION)
        self.store.checkpoint("affinity-pending-deletion")
        if block.empty():
            try:
                self.store.delete_block(block)
            except NotFound:
                pass
        else:
            block.affinity = None
            block.claim_time = None
            self.store.update_block(block)
        self.store.checkpoint("block-released-from-affinity")
        try:
            self.store.delete_affinity(aff)
        except NotFound:
            pass

    # -- queries -----------------------------------------------------------------------------

    def _find_block(self, ip: IPAddress) -> Block | None:
        all_pools = self.store.pools()
        pool = pools.containing(all_pools, ip)
        if pool is not None:
            return self.store.block(str(pools.block_for(ip, pool)))
        return next((b for b in self.store.blocks() if ip.version == b.network.version and ip in b.network), None)

    def get_assignment_attributes(self, ip) -> Assignment:
        """Who holds ``ip``: handle, attributes, block, sequence number. NotAssigned if
        nobody does (free, cooling down, or in no block)."""
        from .blocks import view
        from .errors import NotAssigned

        addr = ipaddress.ip_address(str(ip).split("/")[0])
        block = self._find_block(addr)
        if block is None:
            raise NotAssigned(f"{addr} is not in any IPAM block")
        req = self._request(addr.version)
        seen = view(block, self.clock(), req.cooldown)
        a = seen.attribute(seen.ordinal(addr))
        if a is None:
            raise NotAssigned(f"{addr} is not assigned")
        if a.released_at is not None:
            raise NotAssigned(f"{addr} was released at {a.released_at} and is cooling down")
        ordinal = seen.ordinal(addr)
        return Assignment(addr, a.handle, dict(a.secondary or {}), seen.cidr, seen.sequence_for.get(str(ordinal)))

    def ips_by_handle(self, handle_id: str) -> list[IPAddress]:
        """The addresses ``handle_id`` holds (none if the handle does not exist)."""
        h = self.store.handle(handle_id)
        if h is None:
            return []
        out: list[IPAddress] = []
        for cidr in sorted(h.spec.block or {}):
            block = self.store.block(cidr)
            if block is not None:
                out += [block.ip(o) for o in block.ordinals_of(handle_id)]
        return sorted(out, key=lambda ip: (ip.version, ip))
