"""Snapshot and watch on a real etcd: one revision, order, compaction, outages."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import threading
import time

import pytest
from etcd_fixtures import WatchRecorder, gns, handle, relabel, wep
from waiting import wait_for

from pycalico.core.datastore import DatastoreUnavailable
from pycalico.core.resources import IPAMHandle

RES = "/calico/resources/v3/projectcalico.org"


def etcd_state(server, revision: int) -> dict[str, int]:
    """key -> mod_revision of every /calico/ key at ``revision``, read with etcdctl."""
    out = json.loads(server.etcdctl("get", "--prefix", "/calico/", "--rev", str(revision), "-w", "json"))
    return {base64.b64decode(kv["key"]).decode(): kv["mod_revision"] for kv in out.get("kvs", [])}


def test_snapshot_is_one_revision_while_writes_go_on(etcd_server, etcd_datastore):
    store = etcd_datastore
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            store.create(gns(f"g{i}"))
            store.create(handle(f"h{i}"))
            i += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        wait_for(lambda: etcd_server.revision() > 40)
        snaps = [store.snapshot() for _ in range(3)]
    finally:
        stop.set()
        thread.join(10)
    for snap in snaps:
        expected = etcd_state(etcd_server, snap.revision)
        got = {}
        for r in snap.resources:
            key = r.etcd_key() if isinstance(r, IPAMHandle) else f"{RES}/globalnetworksets/{r.name}"
            got[key] = int(r.metadata.resource_version)
        assert got == expected
        assert any(isinstance(r, IPAMHandle) for r in snap.resources)


def test_watch_delivers_changes_in_order_with_their_revisions(etcd_server, etcd_datastore):
    store = etcd_datastore
    snap = store.snapshot()
    rec = WatchRecorder(store, snap.revision)
    try:
        expected = []
        a = store.create(gns("a"))
        expected.append(("added", "GlobalNetworkSet", "a", a.metadata.resource_version))
        w = store.create(wep("web-0", "prod"))
        expected.append(("added", "WorkloadEndpoint", "web-0", w.metadata.resource_version))
        h = store.create(handle("k8s-pod-network.1"))
        expected.append(("added", "IPAMHandle", "k8s-pod-network.1", h.metadata.resource_version))
        a2 = store.update(relabel(a, v="2"))
        expected.append(("modified", "GlobalNetworkSet", "a", a2.metadata.resource_version))
        etcd_server.etcdctl("put", "/calico/felix/v2/no-region/host/n1/status", "{}")  # not a synced kind
        store.delete("WorkloadEndpoint", "web-0", "prod")
        store.delete("IPAMHandle", "k8s-pod-network.1")
        rec.wait(6)
        time.sleep(0.2)
    finally:
        rec.close()
    got = [(e.type, e.resource.kind, e.resource.metadata.name, str(e.revision)) for e in rec.events]
    assert got[:4] == expected
    assert [g[:3] for g in got[4:]] == [
        ("deleted", "WorkloadEndpoint", "web-0"),
        ("deleted", "IPAMHandle", "k8s-pod-network.1"),
    ]
    revisions = [e.revision for e in rec.events]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    assert rec.events[4].resource.metadata.resource_version == w.metadata.resource_version  # the last value


def test_watch_of_some_kinds_only(etcd_datastore):
    store = etcd_datastore
    snap = store.snapshot(kinds=("IPAMHandle",))
    rec = WatchRecorder(store, snap.revision, kinds=("IPAMHandle",))
    try:
        store.create(gns("x"))
        store.create(handle("h1"))
        rec.wait(1)
        time.sleep(0.2)
    finally:
        rec.close()
    assert rec.summary() == [("added", "IPAMHandle", "h1")]


def test_compaction_relists_and_yields_only_the_differences(etcd_server, etcd_datastore, caplog):
    store = etcd_datastore
    for name in ("keep", "change", "gone"):
        store.create(gns(name))
    snap = store.snapshot()
    store.create(gns("new"))
    store.update(relabel(store.get("GlobalNetworkSet", "change"), v="2"))
    store.delete("GlobalNetworkSet", "gone")
    store.create(gns("brief"))
    store.delete("GlobalNetworkSet", "brief")  # created and deleted: the consumer never needs to know
    compacted = etcd_server.compact()
    with caplog.at_level(logging.WARNING, logger="pycalico.plugins.datastore.etcd"):
        rec = WatchRecorder(store, snap.revision)
        try:
            rec.wait(3)
            late = store.create(gns("late"))
            rec.wait(4)
            time.sleep(0.2)
        finally:
            rec.close()
    assert rec.summary() == [
        ("added", "GlobalNetworkSet", "new"),
        ("modified", "GlobalNetworkSet", "change"),
        ("deleted", "GlobalNetworkSet", "gone"),
        ("added", "GlobalNetworkSet", "late"),
    ]
    assert rec.events[1].resource.metadata.labels == {"v": "2"}
    # A consumer resuming from a difference's revision relists again; from the last, it goes on.
    assert [e.revision for e in rec.events[:2]] == [snap.revision, snap.revision]
    assert rec.events[2].revision == compacted
    assert rec.events[3].revision == int(late.metadata.resource_version)
    assert "compacted" in caplog.text


def test_resume_after_compaction_from_the_last_event_taken(etcd_server, etcd_datastore):
    """A consumer that stops in the middle resumes from its last event's revision: with
    the history compacted meanwhile, it gets exactly what it has not seen."""
    store = etcd_datastore
    snap = store.snapshot()
    rec = WatchRecorder(store, snap.revision)
    try:
        store.create(gns("one"))
        store.create(gns("two"))
        rec.wait(2)
    finally:
        rec.close()
    token = rec.events[-1].revision
    store.update(relabel(store.get("GlobalNetworkSet", "one"), v="2"))
    store.delete("GlobalNetworkSet", "two")
    store.create(gns("three"))
    etcd_server.compact()
    again = WatchRecorder(store, token)
    try:
        again.wait(3)
        time.sleep(0.3)
    finally:
        again.close()
    assert again.summary() == [
        ("modified", "GlobalNetworkSet", "one"),
        ("added", "GlobalNetworkSet", "three"),
        ("deleted", "GlobalNetworkSet", "two"),
    ]


def test_compaction_without_the_snapshot_state_still_reports_changes(etcd_server, etcd_datastore, etcd_connect, caplog):
    """A revision from another process's snapshot: no state to diff against."""
    store = etcd_datastore
    store.create(gns("old"))
    other = etcd_connect(etcd_server.endpoints)
    revision = other.snapshot().revision
    store.create(gns("added-later"))
    store.update(relabel(store.get("GlobalNetworkSet", "old"), v="2"))
    etcd_server.compact()
    with caplog.at_level(logging.WARNING, logger="pycalico.plugins.datastore.etcd"):
        rec = WatchRecorder(store, revision)
        try:
            rec.wait(2)
            store.delete("GlobalNetworkSet", "old")
            rec.wait(3)
        finally:
            rec.close()
    assert rec.summary() == [
        ("added", "GlobalNetworkSet", "added-later"),
        ("modified", "GlobalNetworkSet", "old"),
        ("deleted", "GlobalNetworkSet", "old"),
    ]
    assert "cannot be reported" in caplog.text


def test_stop_and_close_end_a_watch_within_a_second(etcd_datastore, etcd_server, etcd_connect):
    rec = WatchRecorder(etcd_datastore, etcd_datastore.snapshot().revision)
    time.sleep(0.3)
    assert rec.close() < 1.0
    other = etcd_connect(etcd_server.endpoints)
    rec = WatchRecorder(other, other.snapshot().revision)
    time.sleep(0.3)
    began = time.monotonic()
    other.close()
    rec.thread.join(5)
    assert not rec.thread.is_alive() and time.monotonic() - began < 1.0
    assert rec.error is None


def test_etcd_down_is_unavailable_then_a_running_watch_recovers(etcd_server, etcd_connect):
    store = etcd_connect(etcd_server.endpoints, timeout_seconds=4)
    store.create(gns("steady"))
    rec = WatchRecorder(store, store.snapshot().revision)
    try:
        time.sleep(0.2)
        etcd_server.stop()
        began = time.monotonic()
        with pytest.raises(DatastoreUnavailable, match=etcd_server.endpoint.replace(".", r"\.")):
            store.get("GlobalNetworkSet", "steady")
        assert time.monotonic() - began <= 4.5
        with pytest.raises(DatastoreUnavailable):
            store.create(gns("during"))
        etcd_server.start()
        store.create(gns("after"))
        rec.wait(1)
        time.sleep(0.2)
    finally:
        rec.close()
    assert rec.error is None
    assert rec.summary() == [("added", "GlobalNetworkSet", "after")]


def test_watch_raises_unavailable_when_etcd_stays_down(etcd_server, etcd_connect):
    store = etcd_connect(etcd_server.endpoints, timeout_seconds=1.5)
    rec = WatchRecorder(store, store.snapshot().revision)
    time.sleep(0.2)
    etcd_server.stop()
    began = time.monotonic()
    wait_for(lambda: rec.error is not None, timeout=6)
    assert isinstance(rec.error, DatastoreUnavailable)
    assert etcd_server.endpoint in str(rec.error)
    assert 0.8 <= time.monotonic() - began <= 4.0  # timeout_seconds=1.5 after the stream broke
    rec.close()


def test_a_quiet_watch_on_a_hung_etcd_raises_unavailable(etcd_server, etcd_connect):
    """A stopped (SIGSTOP) etcd keeps its connections open: nothing breaks the stream, so
    the watch asks the endpoint for its status once it has been quiet for the timeout."""
    store = etcd_connect(etcd_server.endpoints, timeout_seconds=1.5)
    rec = WatchRecorder(store, store.snapshot().revision)
    try:
        time.sleep(2.0)  # quiet, but etcd answers: the watch goes on
        assert rec.error is None
        os.kill(etcd_server.pid, signal.SIGSTOP)
        began = time.monotonic()
        wait_for(lambda: rec.error is not None, timeout=8, what="the hung etcd noticed")
        # Quiet for 1.5 s, then a status request that times out after 1.5 s.
        assert time.monotonic() - began <= 4.5
        assert isinstance(rec.error, DatastoreUnavailable) and "does not answer" in str(rec.error)
    finally:
        os.kill(etcd_server.pid, signal.SIGCONT)
        rec.close()
