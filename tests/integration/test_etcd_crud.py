"""CRUD with compare-and-swap, and paged lists, on a real etcd."""

from __future__ import annotations

import threading

import attrs
import pytest
from etcd_fixtures import gns, relabel, wep

from pycalico.core.datastore import AlreadyExists, Conflict, DatastoreError, NotFound


def test_crud_round_trip_and_typed_errors(etcd_datastore):
    store = etcd_datastore
    created = store.create(gns("a", v="1"))
    with pytest.raises(AlreadyExists, match="GlobalNetworkSet a"):
        store.create(gns("a"))
    got = store.get("GlobalNetworkSet", "a")
    assert got == created
    updated = store.update(relabel(got, v="2"))
    assert int(updated.metadata.resource_version) > int(got.metadata.resource_version)
    assert updated.metadata.uid == got.metadata.uid
    assert updated.metadata.creation_timestamp == got.metadata.creation_timestamp
    with pytest.raises(Conflict, match="GlobalNetworkSet a"):
        store.update(relabel(got, v="3"))  # stale resourceVersion
    with pytest.raises(Conflict):
        store.delete("GlobalNetworkSet", "a", resource_version=got.metadata.resource_version)
    last = store.delete("GlobalNetworkSet", "a", resource_version=updated.metadata.resource_version)
    assert last.metadata.labels == {"v": "2"}
    for call in (
        lambda: store.get("GlobalNetworkSet", "a"),
        lambda: store.update(updated),
        lambda: store.update(gns("a")),
        lambda: store.delete("GlobalNetworkSet", "a"),
        lambda: store.delete("GlobalNetworkSet", "a", resource_version=updated.metadata.resource_version),
    ):
        with pytest.raises(NotFound, match="GlobalNetworkSet a"):
            call()


def test_namespaced_resources_are_named_with_their_namespace(etcd_datastore):
    store = etcd_datastore
    store.create(wep("web-0", "prod"))
    store.create(wep("web-0", "dev"))
    assert store.get("WorkloadEndpoint", "web-0", "dev").metadata.namespace == "dev"
    with pytest.raises(NotFound, match="WorkloadEndpoint test/web-0"):
        store.get("WorkloadEndpoint", "web-0", "test")
    with pytest.raises(ValueError, match="namespace"):
        store.create(attrs.evolve(wep("x", "prod"), metadata=attrs.evolve(wep("x", "prod").metadata, namespace=None)))
    assert [r.namespace for r in store.list("WorkloadEndpoint").items] == ["dev", "prod"]
    assert [r.namespace for r in store.list("WorkloadEndpoint", namespace="prod").items] == ["prod"]


def test_update_without_version_keeps_identity(etcd_datastore):
    store = etcd_datastore
    created = store.create(gns("b"))
    blind = store.update(gns("b", x="1"))  # as from a manifest: no uid, no resourceVersion
    assert blind.metadata.uid == created.metadata.uid
    assert blind.metadata.creation_timestamp == created.metadata.creation_timestamp
    assert store.get("GlobalNetworkSet", "b").metadata.labels == {"x": "1"}


def test_two_writers_race_and_exactly_one_wins(etcd_datastore):
    store = etcd_datastore
    base = store.create(gns("race", owner="none"))
    for round_ in range(10):
        current = store.get("GlobalNetworkSet", "race")
        barrier = threading.Barrier(2)
        results: dict[str, object] = {}

        def write(who: str) -> None:
            barrier.wait()
            try:
                results[who] = store.update(relabel(current, owner=who))
            except Conflict as exc:
                results[who] = exc

        threads = [threading.Thread(target=write, args=(w,)) for w in ("left", "right")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        winners = [w for w, r in results.items() if not isinstance(r, Conflict)]
        losers = [w for w, r in results.items() if isinstance(r, Conflict)]
        assert len(winners) == 1 and len(losers) == 1, (round_, results)
        assert store.get("GlobalNetworkSet", "race").metadata.labels["owner"] == winners[0]
    assert base.metadata.uid == store.get("GlobalNetworkSet", "race").metadata.uid


def test_pages_are_consistent_with_the_first_page(etcd_datastore):
    store = etcd_datastore
    for ns in ("a", "a-b", "b"):
        for i in range(7):
            store.create(wep(f"w{i}", ns, even=str(i % 2 == 0).lower()))
    everything = store.list("WorkloadEndpoint")
    keys = [(r.namespace, r.name) for r in everything.items]
    # etcd's key order: "a-b/..." sorts before "a/..." as in Kubernetes.
    assert keys == [(ns, f"w{i}") for ns in ("a-b", "a", "b") for i in range(7)]

    first = store.list("WorkloadEndpoint", limit=5)
    store.create(wep("w9", "b"))  # after the first page: not part of this list
    store.delete("WorkloadEndpoint", "w6", "b")  # still part of it
    store.update(relabel(store.get("WorkloadEndpoint", "w3", "b"), changed="yes"))
    pages, page = [first], first
    while page.continue_token:
        page = store.list("WorkloadEndpoint", limit=5, continue_token=page.continue_token)
        pages.append(page)
    assert [len(p.items) for p in pages] == [5, 5, 5, 5, 1]
    assert {p.revision for p in pages} == {first.revision}
    paged = [r for p in pages for r in p.items]
    assert paged == list(everything.items)
    assert "changed" not in (paged[-4].metadata.labels or {})  # b/w3 as of the first page

    now = store.list("WorkloadEndpoint", namespace="b")
    assert [r.name for r in now.items] == ["w0", "w1", "w2", "w3", "w4", "w5", "w9"]


def test_selector_filters_every_page(etcd_datastore):
    store = etcd_datastore
    for i in range(40):
        store.create(gns(f"s{i:02d}", tier="gold" if i % 4 == 0 else "silver"))
    gold = store.list("GlobalNetworkSet", selector="tier == 'gold'")
    assert [r.name for r in gold.items] == [f"s{i:02d}" for i in range(0, 40, 4)]
    names, token = [], None
    while True:
        page = store.list("GlobalNetworkSet", selector="tier == 'gold'", limit=3, continue_token=token)
        assert len(page.items) <= 3
        names += [r.name for r in page.items]
        token = page.continue_token
        if not token:
            break
    assert names == [r.name for r in gold.items]
    assert store.list("GlobalNetworkSet", selector="has(nope)").items == ()


def test_continue_token_checks(etcd_server, etcd_datastore):
    store = etcd_datastore
    for i in range(4):
        store.create(gns(f"t{i}"))
    page = store.list("GlobalNetworkSet", limit=2)
    with pytest.raises(ValueError, match="continue token"):
        store.list("IPPool", limit=2, continue_token=page.continue_token)
    with pytest.raises(ValueError, match="invalid continue token"):
        store.list("GlobalNetworkSet", limit=2, continue_token="garbage!")
    for i in range(3):
        store.update(relabel(store.get("GlobalNetworkSet", "t0"), n=str(i)))
    etcd_server.compact()
    with pytest.raises(DatastoreError, match="continue token expired"):
        store.list("GlobalNetworkSet", limit=2, continue_token=page.continue_token)
