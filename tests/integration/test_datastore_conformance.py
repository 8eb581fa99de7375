"""One conformance suite for every datastore plugin: the same tests, parametrised over
etcd (a real etcd) and Kubernetes (the API stand-in in tests/kubeapi, the one stand-in
this project allows, since a kube-apiserver cannot be installed here)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import pytest

from pycalico.core.datastore import (
    AlreadyExists,
    Conflict,
    DatastoreUnavailable,
    NotFound,
    OperationNotSupported,
)
from pycalico.core.resources.codec import load_resources, to_dict
from pycalico.core.resources.policy import GlobalNetworkSet
from waiting import wait_for

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"

# What each backend keeps read-only, as Calico does: in KDD, WorkloadEndpoints are Pods
# (written by the CNI plugin through pod annotations), Profiles are Namespaces and
# ServiceAccounts, and Nodes are Kubernetes Nodes (Calico only updates them).
NOT_CREATABLE = {"etcd": set(), "kubernetes": {"Profile", "Node"}}
# On Kubernetes an endpoint is its Pod: create patches the pod, so it needs one
# (test_kdd_native covers that path).
NEEDS_POD = {"etcd": set(), "kubernetes": {"WorkloadEndpoint"}}
# In Calico's etcd layout the IPAM records are bare values under /calico/ipam/v2/, with
# no metadata: no labels, uid or creation time (their encoding is tested in test_etcd_layout).
BARE_VALUES = {"etcd": {"IPAMBlock", "BlockAffinity", "IPAMHandle", "IPAMConfiguration"}, "kubernetes": set()}


@attrs.define
class Backend:
    name: str
    store: object
    down: object
    up: object


@pytest.fixture(params=["etcd", "kubernetes"])
def backend(request):
    if request.param == "etcd":
        server = request.getfixturevalue("etcd_server")
        return Backend("etcd", request.getfixturevalue("etcd_datastore"), server.stop, server.start)
    api = request.getfixturevalue("kube_apiserver")
    return Backend(
        "kubernetes", request.getfixturevalue("kdd_datastore"), lambda: api.fail(True), lambda: api.fail(False)
    )


def gns(name: str, **labels: str) -> GlobalNetworkSet:
    (resource,) = load_resources(
        f"""
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {{name: {name}}}
spec: {{nets: [198.51.100.0/28]}}
"""
    )
    return attrs.evolve(resource, metadata=attrs.evolve(resource.metadata, labels=labels or None))


def relabel(resource, **labels):
    return attrs.evolve(resource, metadata=attrs.evolve(resource.metadata, labels={**(resource.metadata.labels or {}), **labels}))


def samples() -> list:
    """One resource of every kind, from the manifests copied from Calico's docs."""
    seen = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for resource in load_resources(path.read_text(), str(path)):
            seen.setdefault(type(resource).KIND, resource)
    return list(seen.values())


def same_content(a, b) -> bool:
    """Equal as the user wrote them: spec and labels, not server-set metadata."""
    da, db = to_dict(a), to_dict(b)
    return da.get("spec") == db.get("spec") and (da["metadata"].get("labels") or {}) == (db["metadata"].get("labels") or {})


# -- CRUD ------------------------------------------------------------------------------


def test_crud_on_every_kind(backend):
    store = backend.store
    kinds = samples()
    assert len(kinds) >= 18
    for resource in kinds:
        kind, name, ns = type(resource).KIND, resource.metadata.name, resource.metadata.namespace
        if kind in NOT_CREATABLE[backend.name]:
            with pytest.raises(OperationNotSupported):
                store.create(resource)
            continue
        if kind in NEEDS_POD[backend.name]:
            with pytest.raises(NotFound):
                store.create(resource)
            continue
        bare = kind in BARE_VALUES[backend.name]
        created = store.create(resource)
        assert created.metadata.resource_version, kind
        got = store.get(kind, name, ns)
        assert got.metadata.resource_version == created.metadata.resource_version
        assert name in [r.metadata.name for r in store.list(kind, ns).items], kind
        if not bare:
            assert created.metadata.creation_timestamp and created.metadata.uid, kind
            assert same_content(got, resource), kind
        updated = store.update(got if bare else relabel(got, touched="yes"))
        assert updated.metadata.resource_version != got.metadata.resource_version, kind
        last = store.delete(kind, name, ns)
        assert bare or last.metadata.labels["touched"] == "yes"
        with pytest.raises(NotFound):
            store.get(kind, name, ns)


def test_typed_errors_name_the_resource(backend):
    store = backend.store
    first = store.create(gns("alpha"))
    with pytest.raises(AlreadyExists, match="GlobalNetworkSet alpha"):
        store.create(gns("alpha"))
    store.update(relabel(first, x="1"))
    with pytest.raises(Conflict, match="GlobalNetworkSet alpha"):
        store.update(relabel(first, x="2"))  # stale resourceVersion
    with pytest.raises(Conflict):
        store.delete("GlobalNetworkSet", "alpha", resource_version=first.metadata.resource_version)
    with pytest.raises(NotFound, match="GlobalNetworkSet nope"):
        store.get("GlobalNetworkSet", "nope")
    with pytest.raises(NotFound):
        store.delete("GlobalNetworkSet", "nope")
    with pytest.raises(NotFound):
        store.update(gns("nope"))


def test_update_without_resource_version_is_unconditional(backend):
    store = backend.store
    store.create(gns("beta"))
    store.update(relabel(store.get("GlobalNetworkSet", "beta"), x="1"))
    blind = attrs.evolve(gns("beta", x="2"))
    assert store.update(blind).metadata.labels == {"x": "2"}


def test_concurrent_read_modify_write_loses_nothing(backend):
    """Many writers increment one counter with compare-and-swap: no update is lost,
    which is what IPAM relies on for never handing out an address twice."""
    store = backend.store
    store.create(gns("counter", n="0"))
    writers, rounds = 8, 15
    conflicts = []

    def bump():
        for _ in range(rounds):
            while True:
                current = store.get("GlobalNetworkSet", "counter")
                try:
                    store.update(relabel(current, n=str(int(current.metadata.labels["n"]) + 1)))
                    break
                except Conflict:
                    conflicts.append(1)

    with ThreadPoolExecutor(writers) as pool:
        for f in [pool.submit(bump) for _ in range(writers)]:
            f.result()
    assert store.get("GlobalNetworkSet", "counter").metadata.labels["n"] == str(writers * rounds)
    assert conflicts, "concurrent writers never conflicted: the test did not exercise CAS"


def test_list_filters_by_selector_and_namespace(backend):
    store = backend.store
    for i in range(6):
        store.create(gns(f"s{i}", tier="gold" if i % 2 else "silver"))
    gold = store.list("GlobalNetworkSet", selector="tier == 'gold'").items
    assert [r.metadata.name for r in gold] == ["s1", "s3", "s5"]
    assert store.list("GlobalNetworkSet", selector="!has(tier)").items == ()


def test_list_ten_thousand_with_paging(backend):
    store = backend.store
    count = 10_000
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.create(gns(f"n{i:05d}")), range(count)))
    names, token, pages = [], None, 0
    first = store.list("GlobalNetworkSet", limit=1000)
    store.create(gns("zz-after-first-page"))  # not in a list that began before it
    page = first
    while True:
        names += [r.metadata.name for r in page.items]
        pages += 1
        if page.continue_token is None:
            break
        token = page.continue_token
        page = store.list("GlobalNetworkSet", limit=1000, continue_token=token)
    assert names == [f"n{i:05d}" for i in range(count)]
    assert pages == 10


# -- watch -----------------------------------------------------------------------------


def collect(store, revision, stop, out, kinds=("GlobalNetworkSet",)):
    try:
        for event in store.watch(revision, stop, kinds=kinds):
            out.append(event)
    except DatastoreUnavailable as exc:
        out.append(exc)


def test_watch_delivers_every_change_in_order(backend):
    store = backend.store
    start = store.snapshot(kinds=("GlobalNetworkSet",))
    stop, events = threading.Event(), []
    watcher = threading.Thread(target=collect, args=(store, start.revision, stop, events), daemon=True)
    watcher.start()
    expected = []
    for i in range(30):
        store.create(gns(f"w{i}", v="0"))
        expected.append(("added", f"w{i}", "0"))
        if i % 3 == 0:
            current = store.get("GlobalNetworkSet", f"w{i}")
            store.update(relabel(current, v="1"))
            expected.append(("modified", f"w{i}", "1"))
        if i % 5 == 0:
            store.delete("GlobalNetworkSet", f"w{i}")
            expected.append(("deleted", f"w{i}", "1" if i % 3 == 0 else "0"))
    try:
        wait_for(lambda: len(events) >= len(expected))
        time.sleep(0.3)
    finally:
        stop.set()
        watcher.join(timeout=5)
    got = [(e.type, e.resource.metadata.name, e.resource.metadata.labels["v"]) for e in events]
    assert got == expected


def test_watch_resumes_from_a_revision(backend):
    """A watch started late from an earlier snapshot's revision sees what happened since."""
    store = backend.store
    store.create(gns("before"))
    snap = store.snapshot(kinds=("GlobalNetworkSet",))
    assert [r.metadata.name for r in snap.resources] == ["before"]
    store.create(gns("after1"))
    store.delete("GlobalNetworkSet", "before")
    stop, events = threading.Event(), []
    watcher = threading.Thread(target=collect, args=(store, snap.revision, stop, events), daemon=True)
    watcher.start()
    try:
        wait_for(lambda: len(events) >= 2)
        store.create(gns("after2"))
        wait_for(lambda: len(events) >= 3)
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert [(e.type, e.resource.metadata.name) for e in events] == [
        ("added", "after1"),
        ("deleted", "before"),
        ("added", "after2"),
    ]


def test_stop_ends_a_quiet_watch_promptly(backend):
    store = backend.store
    snap = store.snapshot(kinds=("GlobalNetworkSet",))
    stop, events = threading.Event(), []
    watcher = threading.Thread(target=collect, args=(store, snap.revision, stop, events), daemon=True)
    watcher.start()
    time.sleep(0.3)
    began = time.monotonic()
    stop.set()
    watcher.join(timeout=5)
    assert not watcher.is_alive() and time.monotonic() - began < 2.0
    assert events == []


# -- outages ---------------------------------------------------------------------------


def test_unavailable_is_typed_and_recovers(backend):
    store = backend.store
    store.create(gns("steady"))
    snap = store.snapshot(kinds=("GlobalNetworkSet",))
    stop, events = threading.Event(), []
    watcher = threading.Thread(target=collect, args=(store, snap.revision, stop, events), daemon=True)
    watcher.start()
    try:
        backend.down()
        with pytest.raises(DatastoreUnavailable):
            store.get("GlobalNetworkSet", "steady")
        backend.up()
        wait_for(lambda: _answers(store), timeout=30)
        store.create(gns("after-outage"))
        wait_for(lambda: any(getattr(e, "resource", None) is not None for e in events), timeout=30)
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert [(e.type, e.resource.metadata.name) for e in events] == [("added", "after-outage")]


def _answers(store) -> bool:
    try:
        store.get("GlobalNetworkSet", "steady")
        return True
    except DatastoreUnavailable:
        return False
