"""Three etcd members: the leader dies in the middle of a watch and a stream of writes."""

from __future__ import annotations

import threading
import time

from etcd_fixtures import WatchRecorder, gns
from waiting import wait_for

from pycalico.core.datastore import AlreadyExists, DatastoreUnavailable

WRITES = 120
KILL_AFTER = 40


def test_leader_killed_mid_watch_every_write_seen_once_in_order(etcd_cluster, etcd_connect):
    leader = etcd_cluster.leader()
    # The leader first: the watch and the writer start on the member that will die.
    endpoints = [leader.endpoint] + [e for e in etcd_cluster.endpoints if e != leader.endpoint]
    store = etcd_connect(endpoints, timeout_seconds=5)
    rec = WatchRecorder(store, store.snapshot().revision)
    written: list[str] = []
    retries: list[str] = []
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(WRITES):
                name = f"seq-{i:04d}"
                retried = False
                while True:
                    try:
                        store.create(gns(name, n=str(i)))
                        break
                    except DatastoreUnavailable as exc:  # ambiguous or unreachable: try again
                        retries.append(f"{name}: {exc}")
                        retried = True
                        time.sleep(0.05)
                    except AlreadyExists:
                        if not retried:
                            raise
                        break  # an earlier attempt did land
                written.append(name)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(written) >= KILL_AFTER or failures, timeout=30)
        leader.kill()
        thread.join(60)
        assert not thread.is_alive() and not failures, failures
        rec.wait(WRITES, timeout=30)
        time.sleep(0.3)  # nothing more may arrive
        new_leader = etcd_cluster.leader()
        assert new_leader is not leader
        leader.start()  # it rejoins on its data dir
        store.create(gns("after-rejoin"))
        rec.wait(WRITES + 1, timeout=30)
    finally:
        rec.close()
    assert rec.error is None, rec.error
    names = [e.resource.metadata.name for e in rec.events]
    assert names == written + ["after-rejoin"]  # every write once, in the order written
    assert {e.type for e in rec.events} == {"added"}
    revisions = [e.revision for e in rec.events]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
