"""Leader election's timing rules and the fenced datastore (the locks themselves are
tested against etcd and the API server stand-in)."""

from __future__ import annotations

import pytest

from pycalico.core.controllers.leader import Elector, Fenced, NotLeader, Timing
from pycalico.core.datastore import DatastoreUnavailable
from pycalico.core.schema import FieldError


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedLock:
    """Answers acquire_or_renew from a list: True, False, or an exception to raise."""

    identity = "me"

    def __init__(self, *answers):
        self.answers = list(answers)
        self.released = 0

    def acquire_or_renew(self):
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def release(self):
        self.released += 1


class Recorder:
    def __init__(self):
        self.writes = []

    def create(self, r):
        self.writes.append(("create", r))
        return r

    def update(self, r):
        self.writes.append(("update", r))
        return r

    def delete(self, kind, name, namespace=None, resource_version=None):
        self.writes.append(("delete", kind, name, namespace, resource_version))

    def get(self, kind, name, namespace=None):
        return (kind, name)


def test_the_holder_acts_until_the_renew_deadline_after_it_sent_its_renewal():
    clock, changes = Clock(), []
    elector = Elector(ScriptedLock(True, DatastoreUnavailable("down"), DatastoreUnavailable("down")),
                      Timing(15, 10, 2), on_change=changes.append, clock=clock)
    assert not elector.acting()
    elector.step()
    assert elector.acting() and changes == [True]
    clock.now += 9.9
    elector.step()  # unreachable: the deadline of the last renewal still holds
    assert elector.acting()
    clock.now += 0.1
    elector.step()
    # Stopped at renew_deadline (10 s), 5 s before any other replica may take the
    # lease (15 s after it last saw it change).
    assert not elector.acting() and changes == [True, False]


def test_a_lost_lock_stops_at_once():
    clock = Clock()
    elector = Elector(ScriptedLock(True, False), Timing(15, 10, 2), clock=clock)
    elector.step()
    clock.now += 1
    elector.step()
    assert not elector.acting()


def test_fenced_writes_only_while_acting():
    clock = Clock()
    elector = Elector(ScriptedLock(True, False), Timing(3, 2, 1), clock=clock)
    ds = Recorder()
    fenced = Fenced(ds, elector)
    with pytest.raises(NotLeader):
        fenced.create("a")
    elector.step()
    fenced.create("a")
    fenced.delete("Node", "n1", resource_version="7")
    assert fenced.get("Node", "n1") == ("Node", "n1")  # reads are never fenced
    clock.now += 2.0
    for write in (lambda: fenced.update("b"), lambda: fenced.delete("Node", "n2")):
        with pytest.raises(NotLeader, match="me is not the leader"):
            write()
    assert ds.writes == [("create", "a"), ("delete", "Node", "n1", None, "7")]


def test_a_write_must_land_before_another_replica_can_lead():
    clock = Clock()
    # Lease 15 s, renewed until 10 s after the last renewal was sent: another replica may
    # lead from 15 s. A write with a 10 s request timeout may start until 5 s.
    elector = Elector(ScriptedLock(True), Timing(15, 10, 2), clock=clock)
    fenced = Fenced(Recorder(), elector, write_seconds=10.0)
    elector.step()
    clock.now += 5.0
    fenced.create("in time")
    clock.now += 0.1
    assert elector.acting()  # still the leader for reads and decisions...
    with pytest.raises(NotLeader, match=r"not for 10s more"):
        fenced.create("too late")  # ...but a write now could land after 15 s


def test_stopping_releases_a_held_lock():
    import threading

    lock = ScriptedLock(True)
    elector = Elector(lock, Timing(3, 2, 1))
    stop = threading.Event()
    thread = threading.Thread(target=elector.run, args=(stop,))
    thread.start()
    try:
        while not elector.acting():
            pass
    finally:
        stop.set()
        thread.join(5)
    assert lock.released == 1 and not elector.acting()


@pytest.mark.parametrize("args, field, text", [
    ((15, 15, 2), "renew_deadline", "must be below lease_duration (15), got 15"),
    ((15, 10, 10), "retry_period", "must be above 0 and below renew_deadline, got 10"),
])
def test_timing_is_checked(args, field, text):
    with pytest.raises(FieldError) as err:
        Timing(*args)
    assert (err.value.field, str(err.value)) == (field, text)


def test_the_write_budget_is_the_request_timeout_when_the_lease_leaves_room_for_it(caplog):
    from types import SimpleNamespace

    from pycalico.core.controllers.main import _write_budget

    store = SimpleNamespace(options=SimpleNamespace(timeout_seconds=10.0))
    assert _write_budget(store, None) == 0.0  # no election: nothing to fence
    assert _write_budget(store, Timing(15, 10, 2)) == 10.0  # Calico's client-go defaults
    assert _write_budget(store, Timing(2, 1.5, 0.2)) == 0.0
    assert "request timeout (10s) is longer than the lease leaves for a write (1.8s)" in caplog.text
