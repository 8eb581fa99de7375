"""KDD: snapshot and watch through the stand-in's bookmarks, disconnects, outages and
410 Gone after compaction."""

from __future__ import annotations

import json
import threading
import time

import attrs
import pytest
from kdd_fixtures import open_kdd
from kubeapi.registry import Target

from pycalico.core.datastore import DatastoreUnavailable
from pycalico.core.resources.codec import load_resources
from pycalico.plugins.datastore.kubernetes import Revision
from pycalico.plugins.datastore.kubernetes.convert import to_cr

GNS = "globalnetworksets.crd.projectcalico.org"


def gns(name: str, **labels: str):
    (resource,) = load_resources(f"""
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {{name: {name}}}
spec: {{nets: [198.51.100.0/28]}}
""")
    return attrs.evolve(resource, metadata=attrs.evolve(resource.metadata, labels=labels or None))


class Collector:
    """Runs a watch in a thread and keeps what it yields (or the error it raised)."""

    def __init__(self, store, revision, kinds=("GlobalNetworkSet",), stop_after: int | None = None):
        self.events: list = []
        self.error: Exception | None = None
        self.stop = threading.Event()
        self.stop_after = stop_after
        self.thread = threading.Thread(target=self._run, args=(store, revision, kinds), daemon=True)
        self.thread.start()

    def _run(self, store, revision, kinds):
        try:
            for event in store.watch(revision, self.stop, kinds=kinds):
                self.events.append(event)
                if self.stop_after is not None and len(self.events) >= self.stop_after:
                    self.stop.set()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc

    def wait(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and self.error is None:
            assert time.monotonic() < deadline, f"only {len(self.events)} events of {count}: {self.seen()}"
            time.sleep(0.02)
        assert self.error is None, self.error

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()

    def seen(self) -> list[tuple[str, str]]:
        return [(e.type, e.resource.name) for e in self.events]


class Direct:
    """Writes that bypass HTTP (the server is "down" for clients meanwhile)."""

    def __init__(self, server):
        self.server = server
        self.rt = server.types.get(GNS)

    def create(self, resource) -> None:
        self.server.registry.create(Target(self.rt, "v1"), json.dumps(to_cr(resource)).encode(), {})

    def update(self, resource) -> None:
        body = json.dumps(to_cr(resource)).encode()
        self.server.registry.update(Target(self.rt, "v1", None, resource.name), body, {})

    def delete(self, name: str) -> None:
        self.server.registry.delete(Target(self.rt, "v1", None, name), b"", {})


def relabel(resource, **labels):
    return attrs.evolve(resource, metadata=attrs.evolve(resource.metadata, labels=labels))


def lists_of_gns(server) -> int:
    return server.requests[("list", GNS)]


def test_410_after_compaction_relists_and_yields_exactly_the_missed_changes(kube_apiserver, kdd_datastore):
    store = kdd_datastore
    for name in ("a", "b", "c"):
        store.create(gns(name, v="1"))
    snap = store.snapshot(kinds=["GlobalNetworkSet"])
    watch = Collector(store, snap.revision)
    try:
        store.create(gns("d", v="1"))
        watch.wait(1)
        # While the watch is cut off: changes, then compaction of everything before them.
        kube_apiserver.fail(True)
        direct = Direct(kube_apiserver)
        direct.update(relabel(store_get(kube_apiserver, store, "a"), v="2"))
        direct.delete("b")
        direct.create(gns("e", v="1"))
        kube_apiserver.compact()
        lists_before = lists_of_gns(kube_apiserver)
        kube_apiserver.fail(False)
        watch.wait(4)
        assert lists_of_gns(kube_apiserver) > lists_before  # it did relist
        store.create(gns("f", v="1"))
        watch.wait(5)
        time.sleep(0.3)  # nothing else arrives
    finally:
        watch.finish()
    assert watch.seen() == [("added", "d"), ("modified", "a"), ("added", "e"), ("deleted", "b"), ("added", "f")]
    assert watch.events[1].resource.metadata.labels == {"v": "2"}
    assert watch.events[3].resource.metadata.labels == {"v": "1"}  # the last value the consumer saw

    # Resuming from the last event's revision: nothing repeated, nothing lost.
    again = Collector(store, watch.events[-1].revision)
    try:
        store.delete("GlobalNetworkSet", "c")
        again.wait(1)
        time.sleep(0.3)
    finally:
        again.finish()
    assert again.seen() == [("deleted", "c")]


def store_get(server, store, name):
    # Read through the registry too: the server is failing HTTP requests.
    from pycalico.plugins.datastore.kubernetes.convert import from_cr

    obj = server.registry.get(Target(server.types.get(GNS), "v1", None, name), {})[1]
    return from_cr(obj, "GlobalNetworkSet")


def test_a_consumer_stopping_in_the_middle_of_a_relist_gets_the_rest_on_resume(kube_apiserver, kdd_datastore):
    store = kdd_datastore
    for name in ("a", "b", "c"):
        store.create(gns(name, v="1"))
    snap = store.snapshot(kinds=["GlobalNetworkSet"])
    # Changes and a compaction before the watch even starts: its first request is a 410.
    store.update(relabel(store.get("GlobalNetworkSet", "a"), v="2"))
    store.delete("GlobalNetworkSet", "b")
    store.create(gns("d", v="1"))
    kube_apiserver.compact()
    first = Collector(store, snap.revision, stop_after=1)
    first.thread.join(timeout=10)
    assert first.error is None and first.seen() == [("modified", "a")]
    rest = Collector(store, first.events[-1].revision)
    try:
        rest.wait(2)
        time.sleep(0.3)
    finally:
        rest.finish()
    assert rest.seen() == [("added", "d"), ("deleted", "b")]


def test_another_process_can_resume_from_a_revision_in_text_form(kube_apiserver, kdd_datastore, kdd_kubeconfig):
    store = kdd_datastore
    store.create(gns("keep"))
    store.create(gns("drop"))
    revision = str(store.snapshot(kinds=["GlobalNetworkSet"]).revision)
    assert Revision.parse(revision).get("globalnetworksets")
    store.delete("GlobalNetworkSet", "drop")
    store.create(gns("new"))
    other = open_kdd(kdd_kubeconfig)  # remembers nothing: lists at exactly that revision first
    watch = Collector(other, revision)
    try:
        watch.wait(2)
        time.sleep(0.3)
    finally:
        watch.finish()
        other.close()
    assert watch.seen() == [("deleted", "drop"), ("added", "new")]


def test_bookmarks_move_a_quiet_watch_past_compactions(kube_apiserver, kdd_datastore):
    store = kdd_datastore
    store.create(gns("x"))
    snap = store.snapshot(kinds=["GlobalNetworkSet"])
    watch = Collector(store, snap.revision)
    try:
        store.create(gns("y"))
        watch.wait(1)
        for i in range(5):  # other kinds move the server's resourceVersion on
            store.create(load_resources(f"apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: t{i}}}\n"
                                        "spec: {order: 10}\n")[0])
        time.sleep(0.8)  # bookmarks (every 0.2 s) carry the watch to the current resourceVersion
        kube_apiserver.compact()
        lists_before = lists_of_gns(kube_apiserver)
        kube_apiserver.fail(True)  # cut the stream: the watch resumes from its bookmark
        time.sleep(0.2)
        kube_apiserver.fail(False)
        store.create(gns("z"))
        watch.wait(2)
        assert lists_of_gns(kube_apiserver) == lists_before  # resumed without a relist
    finally:
        watch.finish()
    assert watch.seen() == [("added", "y"), ("added", "z")]


def test_outage_raises_unavailable_and_recovers(kube_apiserver, kdd_datastore, kdd_kubeconfig):
    store = open_kdd(kdd_kubeconfig, timeout=1.0)
    try:
        store.create(gns("steady"))
        snap = store.snapshot(kinds=["GlobalNetworkSet"])
        watch = Collector(store, snap.revision)
        time.sleep(0.2)
        for mode in ("503", "close"):
            kube_apiserver.fail(True, mode=mode)
            with pytest.raises(DatastoreUnavailable, match=kube_apiserver.url):
                store.get("GlobalNetworkSet", "steady")
            kube_apiserver.fail(False)
        kube_apiserver.fail(True)
        began = time.monotonic()
        deadline = began + 10
        while watch.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        waited = time.monotonic() - began
        assert isinstance(watch.error, DatastoreUnavailable) and kube_apiserver.url in str(watch.error)
        assert 0.9 <= waited < 4, waited  # it retried for timeout_seconds, then gave up
        watch.finish()
        kube_apiserver.fail(False)
        assert store.get("GlobalNetworkSet", "steady").name == "steady"
        # A watch from the old revision picks up what happened since.
        store.create(gns("later"))
        resumed = Collector(store, snap.revision)
        try:
            resumed.wait(1)
        finally:
            resumed.finish()
        assert resumed.seen() == [("added", "later")]
    finally:
        store.close()


def test_stop_and_close_end_a_many_kind_watch_promptly(kdd_datastore, kdd_kubeconfig):
    store = open_kdd(kdd_kubeconfig)
    snap = store.snapshot()  # every kind: 20 sources
    assert {s for s, _ in snap.revision.positions} >= {"k8s:pods", "k8s:namespaces", "k8s:networkpolicies", "ippools"}
    watch = Collector(store, snap.revision, kinds=None)
    time.sleep(0.5)
    began = time.monotonic()
    watch.stop.set()
    watch.thread.join(timeout=5)
    assert not watch.thread.is_alive() and time.monotonic() - began < 1.0
    closed = Collector(store, snap.revision, kinds=None)
    time.sleep(0.3)
    began = time.monotonic()
    store.close()
    closed.thread.join(timeout=5)
    assert not closed.thread.is_alive() and time.monotonic() - began < 1.0
    assert closed.error is None and closed.events == []


def test_native_kinds_are_watched(kube_apiserver, kdd_datastore):
    store = kdd_datastore
    kinds = ("WorkloadEndpoint", "Profile", "NetworkPolicy")
    snap = store.snapshot(kinds=kinds)
    assert "projectcalico-default-allow" in [r.name for r in snap.resources]
    watch = Collector(store, snap.revision, kinds=kinds)
    api = store.api
    try:
        api.request("POST", "/api/v1/namespaces", body={"metadata": {"name": "shop"}})
        watch.wait(1)
        pending = {"metadata": {"name": "pending", "namespace": "shop"},
                   "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
        api.request("POST", "/api/v1/namespaces/shop/pods", body=pending)  # not scheduled: no endpoint
        pod = {"metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"},
                            "annotations": {"cni.projectcalico.org/podIP": "10.65.0.9/32"}},
               "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], "nodeName": "node-1"}}
        api.request("POST", "/api/v1/namespaces/shop/pods", body=pod)
        watch.wait(2)
        wep = store.list("WorkloadEndpoint", "shop").items[0]
        store.update(attrs.evolve(wep, spec=attrs.evolve(wep.spec, ip_networks=("10.65.0.10/32",))))
        watch.wait(3)
        api.request("POST", "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies",
                    body={"metadata": {"name": "deny"}, "spec": {"podSelector": {}}})
        watch.wait(4)
        api.request("DELETE", "/api/v1/namespaces/shop/pods/web-0")
        watch.wait(5)
        time.sleep(0.3)
    finally:
        watch.finish()
    assert watch.seen() == [
        ("added", "kns.shop"),
        ("added", "node--1-k8s-web--0-eth0"),
        ("modified", "node--1-k8s-web--0-eth0"),
        ("added", "knp.default.deny"),
        ("deleted", "node--1-k8s-web--0-eth0"),
    ]
    assert watch.events[2].resource.spec.ip_networks == ("10.65.0.10/32",)
