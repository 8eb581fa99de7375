"""calico-ipam's pure parts: block arithmetic, cooldown, pool selection, the block walk."""

from __future__ import annotations

import ipaddress

import pytest

from pycalico.core.resources import load_resources
from pycalico.core.resources.ipam import IPAMBlock, IPAMConfig, IPAMConfigSpec
from pycalico.plugins.ipam.calico_ipam import AddressInUse, NoPool, StaleRelease
from pycalico.plugins.ipam.calico_ipam import pools as P
from pycalico.plugins.ipam.calico_ipam.allocator import block_limit
from pycalico.plugins.ipam.calico_ipam.blocks import Block, seconds, timestamp, view

T0 = 1_800_000_000.0  # a fixed "now"


def new(cidr="10.65.0.0/29", affinity="host:n1"):
    return Block.new(cidr, affinity, timestamp(T0), 1000)


def consistent(b: Block) -> None:
    assert b.problems() == []
    taken = {o for o, i in enumerate(b.allocations) if i is not None}
    assert taken.isdisjoint(b.unallocated)
    assert taken | set(b.unallocated) == set(range(b.size))
    used = {i for i in b.allocations if i is not None}
    assert used == set(range(len(b.attributes)))  # no dangling or unreferenced attribute


# --- assignment ---------------------------------------------------------------------------


def test_new_block_is_all_free_in_order():
    b = new()
    assert b.size == 8 and b.unallocated == list(range(8)) and b.empty()
    assert b.ip(3) == ipaddress.ip_address("10.65.0.3") and b.ordinal("10.65.0.7") == 7
    assert b.host == "n1"
    consistent(b)


def test_assign_takes_from_the_head_and_records_handle_attrs_and_sequence():
    b = new()
    got = b.assign_any(3, "h1", {"pod": "a", "namespace": "default"})
    assert got == [0, 1, 2]
    assert b.unallocated == [3, 4, 5, 6, 7]
    assert b.attributes[0].handle == "h1" and b.attributes[0].secondary == {"pod": "a", "namespace": "default"}
    assert b.allocations[:3] == [0, 0, 0]  # one shared attribute, as Calico does
    assert b.sequence_for == {"0": 1000, "1": 1000, "2": 1000}
    assert b.handle_counts() == {"h1": 3} and b.ordinals_of("h1") == [0, 1, 2]
    assert str(b.interface(2)) == "10.65.0.2/29"
    consistent(b)


def test_assign_skips_reserved_addresses_but_keeps_them_in_the_queue():
    b = new()
    reserved = P.Reservations(load_resources(
        "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r}\n"
        "spec: {reservedCIDRs: [10.65.0.0/31]}\n"))
    assert b.free_count(reserved) == 6
    assert b.assign_any(2, "h", None, reserved) == [2, 3]
    assert b.unallocated == [0, 1, 4, 5, 6, 7]
    consistent(b)


def test_full_block_gives_nothing():
    b = new()
    assert len(b.assign_any(8, "h", None)) == 8
    assert b.assign_any(1, "h2", None) == [] and b.free_count() == 0
    consistent(b)


def test_assign_one_address():
    b = new()
    b.assign(5, "h", {"pod": "x"})
    assert 5 not in b.unallocated and b.attribute(5).handle == "h"
    with pytest.raises(AddressInUse, match="already assigned"):
        b.assign(5, "other", None)
    consistent(b)


# --- release and cooldown ---------------------------------------------------------------


def test_release_starts_a_cooldown_and_collect_frees_after_it():
    b = new()
    b.assign_any(2, "h1", {"pod": "a"})
    b.assign_any(1, "h2", {"pod": "b"})
    skipped, counts = b.release([(0, None, None), (1, None, None)], T0)
    assert skipped == [] and counts == {"h1": 2}
    # Still taken, without a handle, with releasedAt: cooling down.
    assert b.cooling() == [0, 1] and b.in_use() == [2]
    assert b.attribute(0).handle is None and b.attribute(0).released_at == timestamp(T0)
    assert b.attribute(0).secondary == {"pod": "a"}
    assert 0 not in b.unallocated and not b.empty()
    consistent(b)
    assert b.collect(T0 + 59, 60) == 0
    assert b.collect(T0 + 60, 60) == 2
    assert b.unallocated[-2:] == [0, 1]  # back to the tail: reused last
    assert b.sequence_for == {"2": 1000}
    consistent(b)


def test_cooldown_zero_frees_at_the_next_collect():
    b = new()
    b.assign_any(1, "h", None)
    b.release([(0, None, None)], T0)
    assert b.collect(T0, 0) == 1 and b.empty()


def test_releasing_twice_or_a_free_address_is_not_an_error():
    b = new()
    b.assign_any(1, "h", None)
    assert b.release([(0, None, None)], T0) == ([], {"h": 1})
    assert b.release([(0, None, None), (4, None, None)], T0) == ([0, 4], {})
    consistent(b)


def test_release_with_a_stale_handle_or_sequence_releases_nothing():
    b = new()
    b.assign_any(2, "h", None)
    with pytest.raises(StaleRelease, match="handle"):
        b.release([(0, None, None), (1, "other", None)], T0)
    with pytest.raises(StaleRelease, match="sequence"):
        b.release([(0, "h", 999)], T0)
    assert b.in_use() == [0, 1]
    assert b.release([(0, "h", 1000)], T0) == ([], {"h": 1})


def test_release_by_handle_and_undo_without_cooldown():
    b = new()
    b.assign_any(2, "h1", None)
    b.assign_any(2, "h2", None)
    assert b.release_handle("h1", T0) == [0, 1]
    assert b.handle_counts() == {"h2": 2}
    assert b.release_handle("h2", T0, cooldown=False) == [2, 3]
    assert b.unallocated[-2:] == [2, 3] and b.cooling() == [0, 1]
    assert b.release_handle("h1", T0) == []
    consistent(b)


def test_timestamps_round_up_and_read_back():
    assert timestamp(T0 + 0.2) == timestamp(T0 + 1)
    assert seconds(timestamp(T0)) == T0
    assert seconds("2026-06-23T12:00:00Z") == seconds("2026-06-23T12:00:00+00:00")


def test_view_does_not_change_the_block():
    b = new()
    b.assign_any(1, "h", None)
    b.release([(0, None, None)], T0)
    seen = view(b, T0 + 100, 30)
    assert seen.cooling() == [] and b.cooling() == [0]


# --- records -------------------------------------------------------------------------


def test_round_trip_through_the_record_and_etcd_json():
    b = new()
    b.assign_any(2, "h1", {"pod": "a"})
    b.release([(1, None, None)], T0)
    res = b.to_resource()
    assert res.spec.cidr == "10.65.0.0/29" and res.metadata.name == "10-65-0-0-29"
    value = res.to_etcd()
    assert value["attributes"][1] == {"handle_id": None, "secondary": {"pod": "a"}, "releasedAt": timestamp(T0)}
    again = Block.from_resource(IPAMBlock.from_etcd(value))
    assert (again.allocations, again.unallocated, again.attributes, again.sequence_for) == (
        b.allocations, b.unallocated, b.attributes, b.sequence_for)


def test_problems_found_and_fixed():
    b = new()
    b.assign_any(2, "h", None)
    b.unallocated = [0, 3, 3, 9]  # 0 is taken, 3 doubled, 9 outside, 2/4..7 lost
    b.allocations[7] = 5  # points at a missing attribute
    found = " | ".join(b.problems())
    for text in ("attribute 5", "2 times", "outside", "both allocated", "missing from the free list"):
        assert text in found
    b.fix()
    consistent(b)
    assert b.unallocated[0] == 3 and b.in_use() == [0, 1]


# --- pools ----------------------------------------------------------------------------


POOLS = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: b-pool}
spec: {cidr: 10.66.0.0/24, nodeSelector: "zone == 'b'"}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: a-pool}
spec: {cidr: 10.65.0.0/24, blockSize: 28}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: off-pool}
spec: {cidr: 10.67.0.0/24, disabled: true}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: ns-pool}
spec: {cidr: 10.68.0.0/24, namespaceSelector: "team == 'x'"}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: lb}
spec: {cidr: 10.69.0.0/24, allowedUses: [LoadBalancer]}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v6}
spec: {cidr: "fd00:10::/64"}
"""


@pytest.fixture
def pools():
    return load_resources(POOLS)


def names(found):
    return [p.metadata.name for p in found]


def test_pool_selection_by_selectors_uses_and_state(pools):
    assert names(P.select(pools, 4, None, "n1", {}, None)) == ["a-pool"]
    assert names(P.select(pools, 4, None, "n1", {"zone": "b"}, {"team": "x"})) == ["a-pool", "b-pool", "ns-pool"]
    assert names(P.select(pools, 6, None, "n1", {}, None)) == ["v6"]


def test_requested_pools_ignore_selectors_but_must_exist_and_be_enabled(pools):
    assert names(P.select(pools, 4, ["b-pool"], "n1", {}, None)) == ["b-pool"]
    assert names(P.select(pools, 4, ["10.66.0.0/24", "v6"], "n1", {}, None)) == ["b-pool"]
    assert names(P.select(pools, 6, ["10.66.0.0/24"], "n1", {}, None)) == ["v6"]  # none of this family asked
    with pytest.raises(NoPool, match="does not exist"):
        P.select(pools, 4, ["nope"], "n1", {}, None)
    with pytest.raises(NoPool, match="disabled"):
        P.select(pools, 4, ["off-pool"], "n1", {}, None)
    with pytest.raises(NoPool, match="allows Workload"):
        P.select(pools, 4, ["lb"], "n1", {}, None)


def test_no_pool_selects_the_node(pools):
    only_b = [p for p in pools if p.metadata.name == "b-pool"]
    with pytest.raises(NoPool, match="selects node n1"):
        P.select(only_b, 4, None, "n1", {"zone": "a"}, None)


def test_block_for_and_containing(pools):
    a = next(p for p in pools if p.metadata.name == "a-pool")
    assert P.block_size(a) == 28 and P.block_count(a) == 16
    assert str(P.block_for(ipaddress.ip_address("10.65.0.77"), a)) == "10.65.0.64/28"
    assert P.containing(pools, ipaddress.ip_address("10.66.0.9")).metadata.name == "b-pool"
    assert P.containing(pools, ipaddress.ip_network("10.65.0.16/28")).metadata.name == "a-pool"
    assert P.containing(pools, ipaddress.ip_address("192.0.2.1")) is None


def test_fnv1_matches_go():
    # Go: fnv.New32(); h.Write([]byte("")) / ("a") / ("node-1")
    assert P.fnv1_32("") == 0x811C9DC5
    assert P.fnv1_32("a") == 0x050C5D7E
    assert P.fnv1_32("foobar") == 0x31F0B262


def test_walk_visits_every_block_once_from_a_per_node_start(pools):
    a = next(p for p in pools if p.metadata.name == "a-pool")
    one = list(P.walk(a, "node-1"))
    assert sorted(one) == [P.nth_block(a, i) for i in range(16)]
    assert one == list(P.walk(a, "node-1"))  # same node, same order
    starts = {next(P.walk(a, f"node-{i}")) for i in range(20)}
    assert len(starts) > 3  # different nodes start in different places
    key = P.walk_order(a, "node-1")
    assert sorted(one, key=key) == one


def test_reservations_count_and_cover():
    r = P.Reservations(load_resources(
        "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r}\n"
        "spec: {reservedCIDRs: [10.65.0.0/30, 10.65.0.2/32, 10.65.1.0/24]}\n"))
    net = ipaddress.ip_network
    assert r.count_in(net("10.65.0.0/24")) == 4
    assert r.count_in(net("10.65.0.0/16")) == 260
    assert r.covers(net("10.65.1.64/26")) and not r.covers(net("10.65.0.0/26"))
    assert r(ipaddress.ip_address("10.65.0.3")) and not r(ipaddress.ip_address("10.65.0.4"))


def test_block_limit_follows_calico():
    def cfg(n):
        return IPAMConfig(spec=IPAMConfigSpec(strict_affinity=True, auto_allocate_blocks=True, max_blocks_per_host=n))

    assert block_limit(IPAMConfig.default(), None) == 20
    assert block_limit(cfg(0), 5) == 5
    assert block_limit(cfg(3), 5) == 3
    assert block_limit(cfg(3), 2) == 2
    assert block_limit(cfg(3), None) == 3
