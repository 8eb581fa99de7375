"""Consistency check and repair of the IPAM records (backing ``calicoctl ipam check``
and ``calicoctl ipam release``), and the usage figures of ``calicoctl ipam show``.

``check`` reads every block, affinity and handle at one datastore revision and reports
what does not add up; ``repair`` fixes what it can, reading each record again and
changing it only with compare-and-swap, so a record that moved on since the report is
left alone. A process killed between two IPAM writes leaves one of these, each of
which ``repair`` fixes:

==========================  ============================================  ===========================
left behind                 reported as                                   repaired by
==========================  ============================================  ===========================
handle counted, block not   ``handle-count`` (counts more than held)      setting the counts to what
written / release written,                                                the blocks hold
handle not lowered
affinity pending, no block  ``affinity-without-block``                    deleting the affinity
block created, affinity     ``unconfirmed-affinity``                      confirming it
still pending
affinity pendingDeletion    ``unconfirmed-affinity``                      finishing the release
                                                                          (empty) or confirming it
==========================  ============================================  ===========================

Other findings: ``block-bookkeeping`` (an ordinal lost, doubled, or both free and
taken), ``block-without-affinity``, ``stale-affinity`` (names a block held by another
node), ``handle-missing`` (addresses whose handle record is gone: rebuilt, not
released, since a live pod may hold them), ``block-of-missing-node`` and
``address-of-missing-node`` (when Node resources exist: the node is gone, so its
addresses are leaked, as Calico's GC decides), ``empty-unaffine-block``,
``block-outside-pools`` and ``overlapping-blocks`` / ``address-without-handle``
(reported only).

Run ``repair`` when no allocation is in flight, or on problems seen twice: a check that
lands between the two writes of a live allocation sees the same picture as a crash.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pycalico.core.datastore import AlreadyExists, Conflict, NotFound
from pycalico.core.resources.ipam import BlockAffinity, IPAMBlock, IPAMHandle

from . import handles, pools
from .allocator import RETRIES, backoff
from .blocks import Block, view
from .errors import IPAMError
from .pools import Reservations
from .release import ReleaseOptions
from .store import CONFIRMED, PENDING_DELETION

# The order repair works in: blocks' own bookkeeping first, handles (which count what
# the blocks hold) last.
ORDER = (
    "block-bookkeeping",
    "address-of-missing-node",
    "block-of-missing-node",
    "stale-affinity",
    "affinity-without-block",
    "unconfirmed-affinity",
    "block-without-affinity",
    "empty-unaffine-block",
    "block-outside-pools",
    "handle-missing",
    "handle-count",
    "overlapping-blocks",
    "address-without-handle",
)


@dataclass(frozen=True)
class Problem:
    kind: str
    subject: str
    detail: str
    fixable: bool = True
    data: tuple = ()

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}" + ("" if self.fixable else " (not repaired automatically)")


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocks: int = 0
    affinities: int = 0
    handles: int = 0
    in_use: int = 0
    cooling: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def lines(self) -> list[str]:
        head = (f"{self.blocks} blocks, {self.affinities} affinities, {self.handles} handles, "
                f"{self.in_use} addresses in use, {self.cooling} cooling down")
        body = [str(p) for p in self.problems] or ["no problems found"]
        return [head, *self.notes, *body]

    def __str__(self) -> str:
        return "\n".join(self.lines())


@dataclass
class BlockUsage:
    cidr: str
    node: str | None
    total: int
    in_use: int
    cooling: int
    free: int


@dataclass
class PoolUsage:
    name: str
    cidr: str
    total: int
    in_use: int
    cooling: int
    reserved: int
    blocks: list[BlockUsage] = field(default_factory=list)

    @property
    def free(self) -> int:
        return max(self.total - self.in_use - self.cooling - self.reserved, 0)

    def rows(self, show_blocks: bool = False) -> list[tuple]:
        """Rows of ``calicoctl ipam show``: (GROUPING, CIDR, IPS TOTAL, IPS IN USE,
        IPS FREE); addresses cooling down count as in use."""
        out = [("IP Pool", self.cidr, self.total, self.in_use + self.cooling, self.free)]
        if show_blocks:
            out += [("Block", b.cidr, b.total, b.in_use + b.cooling, b.free) for b in self.blocks]
        return out


ORPHANS = "orphaned allocation blocks"


class Checker:
    """Mixed into ``IPAM``."""

    def usage(self) -> list[PoolUsage]:
        """Per pool (disabled ones too) and per block; blocks in no pool are grouped
        last under "orphaned allocation blocks", as Calico's GetUtilization does."""
        now = self.clock()
        cooldown = self.store.config().spec.ip_cooldown_seconds or 0
        reserved = Reservations(self.store.reservations())
        all_pools = self.store.pools()
        out = [
            PoolUsage(p.metadata.name, str(pools.network(p)), pools.network(p).num_addresses, 0, 0,
                      reserved.count_in(pools.network(p)))
            for p in all_pools
        ]
        orphans = PoolUsage(ORPHANS, "", 0, 0, 0, 0)
        for raw in sorted(self.store.blocks(), key=lambda b: (b.network.version, b.network)):
            b = view(raw, now, cooldown)
            used, cooling = len(b.in_use()), len(b.cooling())
            usage = BlockUsage(b.cidr, b.host, b.size, used, cooling, len(b.unallocated))
            group = next((u for u, p in zip(out, all_pools) if b.network.version == pools.network(p).version
                          and b.network.subnet_of(pools.network(p))), None)
            if group is None:
                group = orphans
                group.total += b.size
            group.blocks.append(usage)
            group.in_use += used
            group.cooling += cooling
            if reserved and group is not orphans:
                # Reserved addresses someone holds anyway count once, as in use.
                group.reserved -= sum(1 for o in b.in_use() + b.cooling() if reserved(b.ip(o)))
        return out + ([orphans] if orphans.blocks else [])

    # -- check -------------------------------------------------------------------------

    def check(self, nodes=None) -> Report:
        """Find inconsistencies. ``nodes``: the names of the nodes that exist (default:
        the Node resources; if there are none, node checks are skipped)."""
        snap = self.store.ds.snapshot([IPAMBlock.KIND, BlockAffinity.KIND, IPAMHandle.KIND])
        raw_blocks = [r for r in snap.resources if r.kind == IPAMBlock.KIND and not r.spec.deleted]
        affinities = [r for r in snap.resources if r.kind == BlockAffinity.KIND and r.spec.deleted != "true"]
        handle_records = [r for r in snap.resources if r.kind == IPAMHandle.KIND and not r.spec.deleted]
        report = Report(blocks=len(raw_blocks), affinities=len(affinities), handles=len(handle_records))
        now = self.clock()
        cooldown = self.store.config().spec.ip_cooldown_seconds or 0
        all_pools = self.store.pools()
        if nodes is None:
            node_set = self.store.node_names()
            check_nodes = bool(node_set)
            if not check_nodes:
                report.notes.append("no Node resources: checks against existing nodes skipped")
        else:
            node_set, check_nodes = set(nodes), True
        add = report.problems.append

        blocks: dict[str, Block] = {}
        held: dict[tuple[str, str], int] = {}  # (handle, cidr) -> addresses held
        for res in raw_blocks:
            b = view(Block.from_resource(res), now, cooldown)
            blocks[b.cidr] = b
            broken = b.problems()
            for text in broken:
                add(Problem("block-bookkeeping", b.cidr, text))
            if broken:
                b.fix()  # judge the rest on what repair will make of it
            report.in_use += len(b.in_use())
            report.cooling += len(b.cooling())
            if pools.containing(all_pools, b.network) is None:
                add(Problem("block-outside-pools", b.cidr, "is in no IP pool",
                            fixable=b.empty() and b.affinity is None))
            elif b.affinity is None and b.empty():
                add(Problem("empty-unaffine-block", b.cidr, "holds no address and is affine to no node"))
            host = b.host
            if host is not None:
                if not any(a.spec.node == host and a.spec.cidr == b.cidr for a in affinities):
                    add(Problem("block-without-affinity", b.cidr, f"is affine to {host} but has no BlockAffinity",
                                data=(host, b.cidr)))
                if check_nodes and host not in node_set:
                    add(Problem("block-of-missing-node", b.cidr, f"is affine to node {host}, which does not exist",
                                data=(host, b.cidr)))
            for o in b.in_use():
                a = b.attribute(o)
                if a.handle is None:
                    add(Problem("address-without-handle", str(b.ip(o)), "is assigned without a handle", fixable=False))
                else:
                    held[(a.handle, b.cidr)] = held.get((a.handle, b.cidr), 0) + 1
                owner = (a.secondary or {}).get("node") or host
                if check_nodes and owner is not None and owner not in node_set:
                    add(Problem("address-of-missing-node", str(b.ip(o)),
                                f"belongs to node {owner}, which does not exist (handle {a.handle})",
                                data=(str(b.ip(o)), a.handle, b.sequence_for.get(str(o)))))

        ordered = sorted(blocks.values(), key=lambda b: (b.network.version, b.network))
        for first, second in zip(ordered, ordered[1:]):
            if first.network.version == second.network.version and first.network.overlaps(second.network):
                add(Problem("overlapping-blocks", f"{first.cidr} {second.cidr}", "overlap", fixable=False))

        for aff in affinities:
            node, cidr, state = aff.spec.node, str(ipaddress.ip_network(aff.spec.cidr)), aff.spec.state
            subject = f"{node} {cidr}"
            b = blocks.get(cidr)
            if b is None:
                add(Problem("affinity-without-block", subject, f"{state} affinity, but the block does not exist",
                            data=(node, cidr)))
            elif b.affinity != f"host:{node}":
                add(Problem("stale-affinity", subject, f"the block is affine to {b.affinity or 'no node'}",
                            data=(node, cidr)))
            elif state not in (CONFIRMED, "", None):
                add(Problem("unconfirmed-affinity", subject, f"is {state}", data=(node, cidr)))

        counted: dict[str, dict[str, int]] = {h.spec.handle_id or h.metadata.name: dict(h.spec.block or {})
                                              for h in handle_records}
        holders: dict[str, dict[str, int]] = {}
        for (handle_id, cidr), n in held.items():
            holders.setdefault(handle_id, {})[cidr] = n
        for handle_id in sorted(set(counted) | set(holders)):
            have = {c: n for c, n in holders.get(handle_id, {}).items() if n}
            if handle_id not in counted:
                add(Problem("handle-missing", handle_id,
                            f"holds {_counts(have)} but the handle record does not exist", data=(handle_id,)))
                continue
            says = {c: n for c, n in counted[handle_id].items() if n}
            if says != have:
                add(Problem("handle-count", handle_id,
                            f"counts {_counts(says) or 'nothing'}, the blocks hold {_counts(have) or 'nothing'}",
                            data=(handle_id,)))
        report.problems.sort(key=lambda p: (ORDER.index(p.kind), p.subject))
        return report

    # -- repair --------------------------------------------------------------------------

    def repair(self, report: Report) -> list[str]:
        """Fix the fixable problems of ``report``; returns one line per change."""
        done: list[str] = []
        self._held_cache = None
        for p in sorted(report.problems, key=lambda p: ORDER.index(p.kind)):
            if not p.fixable:
                continue
            try:
                line = getattr(self, "_fix_" + p.kind.replace("-", "_"))(p)
            except (IPAMError, Conflict, NotFound) as exc:
                line = f"{p.kind} {p.subject}: not repaired: {exc}"
            if line:
                done.append(line)
        self._held_cache = None
        return done

    def _fix_block_bookkeeping(self, p: Problem) -> str | None:
        for attempt in range(RETRIES):
            block = self.store.block(p.subject)
            if block is None or not block.problems():
                return None
            block.fix()
            try:
                self.store.update_block(block)
                return f"block {p.subject}: bookkeeping rebuilt"
            except (Conflict, NotFound):
                backoff(attempt)
        return None

    def _fix_address_of_missing_node(self, p: Problem) -> str | None:
        ip, handle_id, sequence = p.data
        left = self.release_ips([ReleaseOptions(ip, handle_id, sequence)])
        return None if left else f"released {ip} (its node is gone)"

    def _fix_block_of_missing_node(self, p: Problem) -> str | None:
        node, cidr = p.data
        if self.release_affinity(cidr, node, must_be_empty=False):
            return f"released block {cidr} from {node} (the node is gone)"
        return None

    def _fix_stale_affinity(self, p: Problem) -> str | None:
        node, cidr = p.data
        aff = self.store.affinity(node, cidr)
        block = self.store.block(cidr)
        if aff is None or block is None or block.affinity == f"host:{node}":
            return None
        self.store.delete_affinity(aff)
        return f"deleted {node}'s stale affinity for {cidr}"

    def _fix_affinity_without_block(self, p: Problem) -> str | None:
        node, cidr = p.data
        aff = self.store.affinity(node, cidr)
        if aff is None or self.store.block(cidr) is not None:
            return None
        self.store.delete_affinity(aff)
        return f"deleted {node}'s {aff.spec.state} affinity for {cidr}, which had no block"

    def _fix_unconfirmed_affinity(self, p: Problem) -> str | None:
        node, cidr = p.data
        aff = self.store.affinity(node, cidr)
        block = self.store.block(cidr)
        if aff is None or block is None or block.affinity != f"host:{node}" or aff.spec.state == CONFIRMED:
            return None
        if aff.spec.state == PENDING_DELETION and block.empty():
            self._release_affinity(cidr, node, require_empty=True)
            return f"finished releasing {cidr} from {node}"
        self.store.set_affinity_state(aff, CONFIRMED)
        return f"confirmed {node}'s affinity for {cidr}"

    def _fix_block_without_affinity(self, p: Problem) -> str | None:
        node, cidr = p.data
        block = self.store.block(cidr)
        if block is None or block.host != node or self.store.affinity(node, cidr) is not None:
            return None
        try:
            self.store.create_affinity(node, cidr, CONFIRMED)
        except AlreadyExists:
            return None
        return f"recorded {node}'s affinity for {cidr}"

    def _fix_empty_unaffine_block(self, p: Problem) -> str | None:
        req = self._request(ipaddress.ip_network(p.subject).version)
        block = self._load(p.subject, req)
        if block is None or block.affinity is not None or not block.empty():
            return None
        self.store.delete_block(block)
        return f"deleted empty block {p.subject}"

    _fix_block_outside_pools = _fix_empty_unaffine_block

    def _held(self) -> dict[str, dict[str, int]]:
        if self._held_cache is None:
            held: dict[str, dict[str, int]] = {}
            for b in self.store.blocks():
                for handle_id, n in b.handle_counts().items():
                    held.setdefault(handle_id, {})[b.cidr] = n
            self._held_cache = held
        return self._held_cache

    def _fix_handle_count(self, p: Problem) -> str | None:
        (handle_id,) = p.data
        have = self._held().get(handle_id, {})
        h = self.store.handle(handle_id)
        says = {c: n for c, n in (h.spec.block or {}).items() if n} if h is not None else {}
        if says == have:
            return None
        handles.set_counts(self.store, handle_id, have)
        return f"handle {handle_id}: counts set to {_counts(have) or 'nothing (deleted)'}"

    _fix_handle_missing = _fix_handle_count


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} in {c}" for c, n in sorted(counts.items()))
