"""Block arithmetic: what an allocation, a release or a cooldown does to one block.

Pure functions of a :class:`Block`, a mutable working copy of an ``IPAMBlock`` read from
the datastore. Nothing here touches the datastore; the allocator reads a block, changes
its copy here and writes it back with compare-and-swap.

The layout is Calico's (``libcalico-go/lib/backend/model/block.go``): ``allocations``
has one entry per ordinal, ``None`` when free, else an index into ``attributes``;
``unallocated`` is the FIFO of free ordinals (taken from the head, returned to the tail);
``sequence_for`` records the block's sequence number when each ordinal was allocated.

Release and cooldown follow Calico master (``design/ipam/ipam-core-library.md``, "IP
release and cooldown"): releasing an address does not free it. Its allocation stays,
pointing at an attribute without a handle and with ``releasedAt`` set; the address is
"cooling down". :meth:`Block.collect` frees addresses whose cooldown has passed: only
there do ordinals go back to ``unallocated``.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import attrs

from pycalico.core.resources.base import deferred_checks
from pycalico.core.resources.ipam import AllocationAttribute, IPAMBlock, IPAMBlockSpec, cidr_name
from pycalico.core.resources.meta import ObjectMeta
from pycalico.core.times import rfc3339

from .errors import AddressInUse, StaleRelease

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Reserved = Callable[[IPAddress], bool]


def _never(_ip: IPAddress) -> bool:
    return False


# --- time -------------------------------------------------------------------------------


def timestamp(now: float) -> str:
    """``releasedAt`` for a release at ``now`` (Unix seconds): RFC 3339, whole seconds,
    rounded up so that a cooldown is never cut short by the rounding."""
    return rfc3339(math.ceil(now))


def seconds(text: str) -> float:
    """Unix seconds of an RFC 3339 time as Calico writes it (``2026-06-23T12:00:00Z``)."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


# --- the working copy -------------------------------------------------------------------


@dataclass
class Attribute:
    """One entry of ``attributes``: who holds the allocations that point at it."""

    handle: str | None = None
    secondary: dict[str, str] | None = None
    alternate: dict[str, str] | None = None
    released_at: str | None = None

    @classmethod
    def from_record(cls, a: AllocationAttribute) -> Attribute:
        alternate = a.alternate_owner_attrs if a.alternate_owner_attrs is not None else a.alternate
        return cls(a.handle, dict(a.secondary) if a.secondary is not None else None,
                   dict(alternate) if alternate is not None else None, a.released_at)

    def to_record(self) -> AllocationAttribute:
        return AllocationAttribute(handle=self.handle, secondary=self.secondary,
                                   alternate_owner_attrs=self.alternate, released_at=self.released_at)


@dataclass
class Block:
    """A block being read or changed. ``resource`` is the record it was read from (None
    for a block not stored yet); its resourceVersion is what a write compares against.
    ``remembered``: taken from a ``BlockCache``, not read just now (good for a change
    written with compare-and-swap, not for concluding that nothing needs writing)."""

    network: IPNetwork
    affinity: str | None = None
    claim_time: str | None = None
    allocations: list[int | None] = field(default_factory=list)
    unallocated: list[int] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    sequence: int = 0
    sequence_for: dict[str, int] = field(default_factory=dict)
    deleted: bool = False
    resource: IPAMBlock | None = None
    remembered: bool = False

    # -- to and from records ---------------------------------------------------------

    @classmethod
    def new(cls, cidr: str | IPNetwork, affinity: str | None, claim_time: str | None, sequence: int) -> Block:
        """An empty block, every ordinal free in order, as Calico's newBlock makes one.
        ``sequence`` starts at the creation time in nanoseconds (Calico: UnixNano), so a
        block deleted and made again never repeats a sequence number."""
        net = ipaddress.ip_network(cidr)
        size = net.num_addresses
        return cls(network=net, affinity=affinity, claim_time=claim_time, allocations=[None] * size,
                   unallocated=list(range(size)), sequence=sequence)

    @classmethod
    def from_resource(cls, res: IPAMBlock) -> Block:
        s = res.spec
        net = ipaddress.ip_network(s.cidr or "")
        size = net.num_addresses
        allocations = list(s.allocations) if s.allocations is not None else [None] * size
        return cls(
            network=net,
            affinity=s.affinity,
            claim_time=s.affinity_claim_time,
            allocations=allocations,
            unallocated=list(s.unallocated or ()),
            attributes=[Attribute.from_record(a) for a in s.attributes or ()],
            sequence=s.sequence_number or 0,
            sequence_for=dict(s.sequence_number_for_allocation or {}),
            deleted=bool(s.deleted),
            resource=res,
        )

    def to_resource(self) -> IPAMBlock:
        """The record to write; it carries the metadata (and so the resourceVersion) of
        the record this block was read from."""
        spec = IPAMBlockSpec(
            cidr=str(self.network),
            affinity=self.affinity,
            affinity_claim_time=self.claim_time,
            allocations=tuple(self.allocations),
            unallocated=tuple(self.unallocated),
            attributes=tuple(a.to_record() for a in self.attributes),
            sequence_number=self.sequence,
            sequence_number_for_allocation=dict(self.sequence_for),
            deleted=self.deleted,
            strict_affinity=self.resource.spec.strict_affinity if self.resource is not None else None,
        )
        with deferred_checks():
            if self.resource is not None:
                return attrs.evolve(self.resource, spec=spec)
            return IPAMBlock(metadata=ObjectMeta(name=cidr_name(str(self.network))), spec=spec)

    def copy(self) -> Block:
        return Block(
            network=self.network, affinity=self.affinity, claim_time=self.claim_time,
            allocations=list(self.allocations), unallocated=list(self.unallocated),
            attributes=[Attribute(a.handle, dict(a.secondary) if a.secondary is not None else None,
                                  dict(a.alternate) if a.alternate is not None else None, a.released_at)
                        for a in self.attributes],
            sequence=self.sequence, sequence_for=dict(self.sequence_for), deleted=self.deleted,
            resource=self.resource,
        )

    # -- addresses -------------------------------------------------------------------

    @property
    def cidr(self) -> str:
        return str(self.network)

    @property
    def resource_version(self) -> str | None:
        return self.resource.metadata.resource_version if self.resource is not None else None

    @property
    def size(self) -> int:
        return self.network.num_addresses

    @property
    def host(self) -> str | None:
        a = self.affinity
        return a[len("host:"):] if a and a.startswith("host:") else None

    def ip(self, ordinal: int) -> IPAddress:
        return self.network.network_address + ordinal

    def ordinal(self, ip: str | IPAddress) -> int:
        addr = ipaddress.ip_address(ip)
        if addr not in self.network:
            raise ValueError(f"{addr} is not in block {self.network}")
        return int(addr) - int(self.network.network_address)

    def interface(self, ordinal: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """The address with the block's prefix length, as Calico's AutoAssign returns it."""
        return ipaddress.ip_interface(f"{self.ip(ordinal)}/{self.network.prefixlen}")

    # -- state of ordinals -------------------------------------------------------------

    def attribute(self, ordinal: int) -> Attribute | None:
        index = self.allocations[ordinal]
        if index is None or not 0 <= index < len(self.attributes):
            return None
        return self.attributes[index]

    def is_cooling(self, ordinal: int) -> bool:
        a = self.attribute(ordinal)
        return a is not None and a.released_at is not None

    def in_use(self) -> list[int]:
        """Ordinals assigned to someone (not free, not cooling down)."""
        return [o for o, index in enumerate(self.allocations) if index is not None and not self.is_cooling(o)]

    def cooling(self) -> list[int]:
        return [o for o, index in enumerate(self.allocations) if index is not None and self.is_cooling(o)]

    def empty(self) -> bool:
        """No allocation at all; an address cooling down still counts, so that deleting
        the block cannot end its cooldown early."""
        return all(index is None for index in self.allocations)

    def free_count(self, reserved: Reserved = _never) -> int:
        return sum(1 for o in self.unallocated if not reserved(self.ip(o)))

    def handle_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.in_use():
            handle = self.attributes[self.allocations[o]].handle  # type: ignore[index]
            if handle is not None:
                counts[handle] = counts.get(handle, 0) + 1
        return counts

    def ordinals_of(self, handle: str) -> list[int]:
        return [o for o in self.in_use() if self.attribute(o).handle == handle]  # type: ignore[union-attr]

    # -- changes -----------------------------------------------------------------------

    def collect(self, now: float, cooldown: float) -> int:
        """Free every address whose cooldown has passed: back to the tail of
        ``unallocated``, longest released first. Returns how many were freed."""
        due = []
        for o in self.cooling():
            released = self.attributes[self.allocations[o]].released_at  # type: ignore[index]
            try:
                when = seconds(released)  # type: ignore[arg-type]
            except ValueError:
                when = -math.inf  # unreadable: treat as long ago rather than keep it forever
            if cooldown <= 0 or now >= when + cooldown:
                due.append((when, o))
        for _, o in sorted(due):
            self.allocations[o] = None
            self.unallocated.append(o)
            self.sequence_for.pop(str(o), None)
        if due:
            self._compact()
        return len(due)

    def assign_any(self, num: int, handle: str | None, attrs: dict[str, str] | None,
                   reserved: Reserved = _never) -> list[int]:
        """Take up to ``num`` free ordinals from the head of ``unallocated``, skipping
        reserved addresses (they stay where they are in the queue)."""
        taken: list[int] = []
        kept: list[int] = []
        index: int | None = None
        for position, o in enumerate(self.unallocated):
            if len(taken) >= num:
                kept.extend(self.unallocated[position:])
                break
            if reserved(self.ip(o)):
                kept.append(o)
                continue
            if index is None:
                index = self._find_or_add(Attribute(handle, dict(attrs) if attrs is not None else None))
            self.allocations[o] = index
            self.sequence_for[str(o)] = self.sequence
            taken.append(o)
        self.unallocated = kept
        return taken

    def assign(self, ordinal: int, handle: str | None, attrs: dict[str, str] | None) -> None:
        """Assign one given ordinal (Calico's AssignIP)."""
        if self.allocations[ordinal] is not None:
            a = self.attribute(ordinal)
            if a is not None and a.released_at is not None:
                raise AddressInUse(f"{self.ip(ordinal)} was released at {a.released_at} and is still cooling down")
            raise AddressInUse(f"{self.ip(ordinal)} is already assigned (handle {a.handle if a else None})")
        self.allocations[ordinal] = self._find_or_add(Attribute(handle, dict(attrs) if attrs is not None else None))
        self.sequence_for[str(ordinal)] = self.sequence
        self.unallocated = [o for o in self.unallocated if o != ordinal]

    def release(self, requests: Iterable[tuple[int, str | None, int | None]], now: float,
                cooldown: bool = True) -> tuple[list[int], dict[str, int]]:
        """Release ordinals; each request is (ordinal, expected handle or None, expected
        sequence number or None).

        Returns the ordinals that were not assigned (free or already cooling down: not
        an error) and, per handle, how many addresses were released. If any request's
        handle or sequence number does not match, nothing is released (StaleRelease),
        as in Calico. With ``cooldown`` False the addresses are freed at once (used to
        undo an allocation nobody was given).
        """
        wanted: dict[int, tuple[str | None, int | None]] = {}
        for ordinal, handle, sequence in requests:
            wanted[ordinal] = (handle, sequence)
        not_assigned: list[int] = []
        releasing: list[int] = []
        for ordinal, (handle, sequence) in sorted(wanted.items()):
            a = self.attribute(ordinal)
            if a is None or a.released_at is not None:
                not_assigned.append(ordinal)
                continue
            if sequence is not None and self.sequence_for.get(str(ordinal)) != sequence:
                raise StaleRelease(
                    f"{self.ip(ordinal)}: sequence number {sequence} does not match the allocation's "
                    f"{self.sequence_for.get(str(ordinal))}"
                )
            if handle is not None and a.handle != handle:
                raise StaleRelease(
                    f"{self.ip(ordinal)}: handle {handle!r} does not match the allocation's {a.handle!r}"
                )
            releasing.append(ordinal)
        counts: dict[str, int] = {}
        for ordinal in releasing:
            a = self.attribute(ordinal)
            assert a is not None
            if a.handle is not None:
                counts[a.handle] = counts.get(a.handle, 0) + 1
            self._release_one(ordinal, a, now, cooldown)
        if releasing:
            self._compact()
        return not_assigned, counts

    def release_handle(self, handle: str, now: float, cooldown: bool = True) -> list[int]:
        """Release every address of ``handle`` in this block; returns their ordinals."""
        ordinals = self.ordinals_of(handle)
        for ordinal in ordinals:
            self._release_one(ordinal, self.attributes[self.allocations[ordinal]], now, cooldown)  # type: ignore[index]
        if ordinals:
            self._compact()
        return ordinals

    def _release_one(self, ordinal: int, a: Attribute, now: float, cooldown: bool) -> None:
        if cooldown:
            self.allocations[ordinal] = self._find_or_add(
                Attribute(None, a.secondary, a.alternate, timestamp(now))
            )
        else:
            self.allocations[ordinal] = None
            self.unallocated.append(ordinal)
            self.sequence_for.pop(str(ordinal), None)

    def _find_or_add(self, attribute: Attribute) -> int:
        for index, existing in enumerate(self.attributes):
            if existing == attribute:
                return index
        self.attributes.append(attribute)
        return len(self.attributes) - 1

    def _compact(self) -> None:
        """Drop attributes no allocation points at, renumbering the rest."""
        used = sorted({i for i in self.allocations if i is not None})
        if used == list(range(len(self.attributes))):
            return
        renumber = {old: new for new, old in enumerate(used)}
        self.attributes = [self.attributes[old] for old in used]
        self.allocations = [None if i is None else renumber[i] for i in self.allocations]

    # -- consistency -------------------------------------------------------------------

    def problems(self) -> list[str]:
        """What is wrong with this block's own bookkeeping (empty if nothing)."""
        found: list[str] = []
        size = self.size
        if len(self.allocations) != size:
            found.append(f"has {len(self.allocations)} allocation entries for {size} addresses")
        for o, index in enumerate(self.allocations):
            if index is not None and not 0 <= index < len(self.attributes):
                found.append(f"{self.ip(o)} points at attribute {index}, which does not exist")
        seen: dict[int, int] = {}
        for o in self.unallocated:
            seen[o] = seen.get(o, 0) + 1
        for o, n in sorted(seen.items()):
            if not 0 <= o < size:
                found.append(f"free list holds ordinal {o}, outside the block")
            elif n > 1:
                found.append(f"{self.ip(o)} is in the free list {n} times")
            elif o < len(self.allocations) and self.allocations[o] is not None:
                found.append(f"{self.ip(o)} is both allocated and in the free list")
        lost = [o for o in range(min(size, len(self.allocations))) if self.allocations[o] is None and o not in seen]
        if lost:
            shown = ", ".join(str(self.ip(o)) for o in lost[:5]) + (" ..." if len(lost) > 5 else "")
            found.append(f"{len(lost)} free address(es) missing from the free list: {shown}")
        return found

    def fix(self) -> None:
        """Make the bookkeeping consistent, keeping every allocation that points at a
        real attribute and the order of the free list where it was right."""
        size = self.size
        allocations = (list(self.allocations) + [None] * size)[:size]
        allocations = [i if i is not None and 0 <= i < len(self.attributes) else None for i in allocations]
        self.allocations = allocations
        free: list[int] = []
        seen: set[int] = set()
        for o in self.unallocated:
            if 0 <= o < size and allocations[o] is None and o not in seen:
                free.append(o)
                seen.add(o)
        free.extend(o for o in range(size) if allocations[o] is None and o not in seen)
        self.unallocated = free
        self.sequence_for = {k: v for k, v in self.sequence_for.items()
                             if k.isdigit() and int(k) < size and allocations[int(k)] is not None}
        self._compact()


def view(block: Block, now: float, cooldown: float) -> Block:
    """A copy with due cooldowns collected: what a reader should see (not written)."""
    seen = block.copy()
    seen.collect(now, cooldown)
    return seen

