"""Typha's snapshot cache: a snapshot plus the crumbs after it always add up to the
state, changes are encoded once, duplicates are skipped and a resync sends only the
differences."""

import asyncio

import attrs

from etcd_fixtures import gns, relabel, wep
from pycalico.core.datastore import Event, Snapshot
from pycalico.core.resources.codec import to_dict
from pycalico.core.typha import proto
from pycalico.core.typha.cache import SnapshotCache, resource_key


def versioned(resource, rv):
    return attrs.evolve(resource, metadata=attrs.evolve(resource.metadata, resource_version=str(rv)))


def replay(*frames: bytes) -> tuple[dict, list]:
    """What a client holds after reading ``frames``: key -> value with its
    resourceVersion, and the messages other than KVs."""
    state, others = {}, []
    for message in proto.Decoder().feed(b"".join(frames)):
        if not isinstance(message, proto.KVs):
            others.append(message)
            continue
        for update in message.kvs:
            if update.update_type == "KVDeleted":
                state.pop(update.key, None)
            else:
                state[update.key] = (update.value, update.v3_resource_version)
    return state, others


def expected(*resources) -> dict:
    out = {}
    for r in resources:
        value = to_dict(r)
        rv = value["metadata"].pop("resourceVersion")
        out[resource_key(r)] = (value, rv)
    return out


def kv_types(frames: bytes) -> list[tuple[str, str]]:
    return [(u.update_type, u.key.rsplit("/", 1)[1]) for m in proto.Decoder().feed(frames)
            if isinstance(m, proto.KVs) for u in m.kvs]


def test_keys_are_calicos_v3_paths():
    assert resource_key(gns("a")) == "/calico/resources/v3/projectcalico.org/globalnetworksets/a"
    assert resource_key(wep("p", "ns1")) == "/calico/resources/v3/projectcalico.org/workloadendpoints/ns1/p"


def test_snapshot_then_crumbs_add_up_to_the_state():
    cache = SnapshotCache(max_batch=2)
    a, b, c = versioned(gns("a"), 2), versioned(gns("b"), 3), versioned(wep("p", "ns1"), 4)
    start, frames = cache.snapshot()
    assert replay(frames) == ({}, [proto.SyncStatus(proto.WAIT_FOR_DATASTORE, None)])
    cache.apply_snapshot(Snapshot(5, (a, b, c)))
    at_sync, snap = cache.snapshot()
    state, others = replay(snap)
    assert state == expected(a, b, c) and others == [proto.SyncStatus(proto.IN_SYNC, 5)]
    assert len([m for m in proto.Decoder().feed(snap) if isinstance(m, proto.KVs)]) == 2  # batches of 2

    a2 = versioned(relabel(a, x="1"), 6)
    d = versioned(gns("d"), 7)
    cache.apply_events([Event("modified", a2, 6), Event("deleted", b, 7), Event("added", d, 8)])
    assert kv_types(cache.latest.frames) == [("KVUpdated", "a"), ("KVDeleted", "b"), ("KVNew", "d")]
    assert cache.revision == 8 and cache.latest.size == 3

    # A client from the start, one from the sync and one from now all reach the same state.
    trail = []
    crumb = start
    while crumb.next is not None:
        crumb = crumb.next
        trail.append(crumb.frames)
    assert replay(frames, *trail)[0] == expected(a2, c, d)
    assert replay(snap, cache.latest.frames)[0] == expected(a2, c, d)
    assert replay(cache.snapshot()[1])[0] == expected(a2, c, d)
    assert at_sync.next is cache.latest


def test_unchanged_values_are_skipped_and_a_resync_sends_only_differences():
    cache = SnapshotCache()
    a, b, c = versioned(gns("a"), 2), versioned(gns("b"), 3), versioned(gns("c"), 4)
    cache.apply_snapshot(Snapshot(4, (a, b, c)))
    seq = cache.latest.seq
    cache.apply_events([Event("modified", a, 5), Event("deleted", gns("never-seen"), 6)])
    assert cache.latest.seq == seq and cache.stats.updates_skipped == 2  # no crumb for nothing
    assert cache.revision == 6

    cache.resyncing()
    assert cache.status == proto.RESYNC_IN_PROGRESS
    assert replay(cache.latest.frames)[1] == [proto.SyncStatus(proto.RESYNC_IN_PROGRESS, 6)]
    b2, e = versioned(relabel(b, y="2"), 9), versioned(gns("e"), 10)
    cache.apply_snapshot(Snapshot(11, (a, b2, e)))  # c was deleted while the datastore was away
    assert sorted(kv_types(cache.latest.frames)) == [("KVDeleted", "c"), ("KVNew", "e"), ("KVUpdated", "b")]
    assert replay(cache.latest.frames)[1] == [proto.SyncStatus(proto.IN_SYNC, 11)]
    assert replay(cache.snapshot()[1])[0] == expected(a, b2, e)


def test_a_resourceversion_change_alone_is_sent():
    cache = SnapshotCache()
    a = versioned(gns("a"), 2)
    cache.apply_snapshot(Snapshot(2, (a,)))
    cache.apply_events([Event("modified", versioned(a, 3), 3)])  # agents compare-and-swap with it
    assert replay(cache.latest.frames)[0] == expected(versioned(a, 3))


def test_a_snapshot_is_built_once_per_crumb():
    cache = SnapshotCache()
    cache.apply_snapshot(Snapshot(2, (versioned(gns("a"), 2),)))
    first = cache.snapshot()
    assert cache.snapshot() == first and cache.stats.snapshots_reused == 1
    cache.apply_events([Event("added", versioned(gns("b"), 3), 3)])
    assert cache.snapshot()[0] is cache.latest and cache.stats.snapshots_generated == 2


def test_followers_wait_for_the_next_crumb():
    async def scenario():
        cache = SnapshotCache()
        crumb = cache.latest
        waiter = asyncio.create_task(cache.after(crumb))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        cache.apply_snapshot(Snapshot(2, (versioned(gns("a"), 2),)))
        nxt = await asyncio.wait_for(waiter, 1)
        assert nxt is cache.latest and await cache.after(crumb) is nxt
        assert (cache.stats.block, cache.stats.non_block) == (1, 1)

    asyncio.run(scenario())
