"""Which pools a request may use, which block an address falls in, and the order in
which a node walks a pool's blocks (``libcalico-go/lib/ipam/ipam.go`` determinePools,
``pools.go``, ``ipam_block_reader_writer.go`` randomBlockGenerator)."""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from pycalico.core import selector as selectors
from pycalico.core.resources.ippool import BLOCK_SIZES, IPPool, IPReservation

from .blocks import IPAddress, IPNetwork
from .errors import NoPool

WORKLOAD = "Workload"
TUNNEL = "Tunnel"


def network(pool: IPPool) -> IPNetwork:
    return ipaddress.ip_network(pool.spec.cidr or "", strict=False)


def block_size(pool: IPPool) -> int:
    return pool.spec.block_size or BLOCK_SIZES[network(pool).version][2]


def enabled(pool: IPPool) -> bool:
    return not pool.spec.disabled


def allows(pool: IPPool, use: str) -> bool:
    uses = pool.spec.allowed_uses or (WORKLOAD, TUNNEL)
    return use in uses


def selects(selector: str | None, labels: dict[str, str] | None) -> bool:
    """An empty selector selects everything (Calico's SelectsNode / SelectsNamespace)."""
    if not selector:
        return True
    return selectors.parse(selector).evaluate(labels or {})


def select(
    pools: Sequence[IPPool],
    version: int,
    requested: Sequence[str] | None,
    node: str,
    node_labels: dict[str, str] | None,
    namespace_labels: dict[str, str] | None,
    use: str = WORKLOAD,
) -> list[IPPool]:
    """The pools a request for IPv``version`` addresses may use, in name order.

    ``requested`` names pools by name or CIDR; those of this family are used as asked,
    whatever their selectors (as Calico does), but must exist and be enabled. Without
    any for this family: every enabled pool in Automatic assignment mode whose
    nodeSelector matches the node's labels and namespaceSelector the namespace's.
    Either way only pools whose allowedUses include ``use``.
    """
    family = [p for p in pools if network(p).version == version]
    by_name = {p.metadata.name: p for p in pools}
    by_cidr = {str(network(p)): p for p in pools}
    chosen: list[IPPool] = []
    for wanted in requested or ():
        pool = by_name.get(wanted)
        if pool is None:
            try:
                pool = by_cidr.get(str(ipaddress.ip_network(wanted, strict=False)))
            except ValueError:
                pool = None
        if pool is None:
            raise NoPool(f"the requested IP pool {wanted} does not exist")
        if network(pool).version != version:
            continue
        if not enabled(pool):
            raise NoPool(f"the requested IP pool {pool.metadata.name} ({pool.spec.cidr}) is disabled")
        if pool not in chosen:
            chosen.append(pool)
    if not chosen:
        candidates = [p for p in family if enabled(p) and (p.spec.assignment_mode or "Automatic") == "Automatic"]
        if not candidates:
            raise NoPool(f"no enabled IPv{version} pool")
        chosen = [
            p for p in candidates
            if selects(p.spec.node_selector, node_labels) and selects(p.spec.namespace_selector, namespace_labels)
        ]
        if not chosen:
            names = ", ".join(p.metadata.name for p in candidates)
            raise NoPool(f"no enabled IPv{version} pool selects node {node}"
                         + (" and its namespace" if namespace_labels is not None else "") + f" (pools: {names})")
    usable = [p for p in chosen if allows(p, use)]
    if not usable:
        names = ", ".join(p.metadata.name for p in chosen)
        raise NoPool(f"no IPv{version} pool for node {node} allows {use} addresses (pools: {names})")
    return sorted(usable, key=lambda p: p.metadata.name)


def containing(pools: Iterable[IPPool], ip: IPAddress | IPNetwork) -> IPPool | None:
    for pool in pools:
        net = network(pool)
        if isinstance(ip, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            if ip.version == net.version and ip.subnet_of(net):  # type: ignore[arg-type]
                return pool
        elif ip.version == net.version and ip in net:
            return pool
    return None


def block_for(ip: IPAddress, pool: IPPool) -> IPNetwork:
    """The block of ``pool`` that holds ``ip`` (Calico's getBlockCIDRForAddress)."""
    return ipaddress.ip_network(f"{ip}/{block_size(pool)}", strict=False)


# --- walking a pool's blocks ------------------------------------------------------------


def fnv1_32(text: str) -> int:
    """FNV-1 (32 bit) of ``text``: the hash Go's ``hash/fnv.New32`` computes, which
    Calico seeds a node's block order with."""
    h = 0x811C9DC5
    for byte in text.encode():
        h = (h * 0x01000193) & 0xFFFFFFFF
        h ^= byte
    return h


def start_index(pool: IPPool, host: str) -> int:
    """Where ``host`` starts walking ``pool``'s blocks: random, but the same every time
    for the same host (so retries meet the same blocks in the same order and two nodes
    diverge). Single-address blocks use the clock, as Calico's determineSeed does."""
    count = block_count(pool)
    bits = network(pool).max_prefixlen
    seed = time.time_ns() if block_size(pool) == bits else fnv1_32(host)
    return random.Random(seed).randrange(count)


def block_count(pool: IPPool) -> int:
    return 2 ** (block_size(pool) - network(pool).prefixlen)


def nth_block(pool: IPPool, index: int) -> IPNetwork:
    net = network(pool)
    step = 2 ** (net.max_prefixlen - block_size(pool))
    return ipaddress.ip_network(f"{net.network_address + index * step}/{block_size(pool)}")


def walk(pool: IPPool, host: str) -> Iterator[IPNetwork]:
    """Every block CIDR of ``pool``, from this host's start index round to just before it."""
    count = block_count(pool)
    start = start_index(pool, host)
    for i in range(count):
        yield nth_block(pool, (start + i) % count)


def walk_order(pool: IPPool, host: str) -> Callable[[IPNetwork], int]:
    """A sort key putting existing block CIDRs of ``pool`` in the order :func:`walk`
    meets them (for walking only the blocks that exist, in a huge pool)."""
    count = block_count(pool)
    start = start_index(pool, host)
    net = network(pool)
    step = 2 ** (net.max_prefixlen - block_size(pool))

    def key(cidr: IPNetwork) -> int:
        index = (int(cidr.network_address) - int(net.network_address)) // step
        return (index - start) % count

    return key


# --- reservations -----------------------------------------------------------------------


class Reservations:
    """The CIDRs of every IPReservation: never handed out by auto-assignment."""

    def __init__(self, reservations: Iterable[IPReservation] = ()):
        nets = []
        for r in reservations:
            for cidr in r.spec.reserved_cidrs or ():
                try:
                    nets.append(ipaddress.ip_network(cidr, strict=False))
                except ValueError:
                    continue
        self.networks: list[IPNetwork] = nets

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __call__(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)

    def covers(self, cidr: IPNetwork) -> bool:
        """The whole of ``cidr`` is reserved."""
        return any(cidr.version == n.version and cidr.subnet_of(n) for n in self.networks)  # type: ignore[arg-type]

    def count_in(self, cidr: IPNetwork) -> int:
        """How many addresses of ``cidr`` are reserved."""
        parts = []
        for n in self.networks:
            if n.version != cidr.version or not n.overlaps(cidr):
                continue
            parts.append(n if n.subnet_of(cidr) else cidr)  # type: ignore[arg-type]
        return sum(n.num_addresses for n in ipaddress.collapse_addresses(parts)) if parts else 0
