"""CalicoNodeStatus reports (``core/nodestatus.py``) on real datastores.

On etcd, the reporter alone, with a BGP daemon the test sets (what it reads is not the
point here: tests/integration/test_nodestatus_bird.py reads a real BIRD): when it
reports, when it writes, when it stops. On the Kubernetes API stand-in, a whole agent
without BGP networking, which reports what Calico reports then.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import attrs
import pytest

from kdd_fixtures import kdd_config_text
from pycalico.core.datastore import NotFound
from pycalico.core.nodestatus import NodeStatusReporter
from pycalico.core.resources import load_resources
from pycalico.core.resources.nodestatus import (
    BGPDaemonStatus,
    CalicoNodeAgentStatus,
    CalicoNodeBGPRouteStatus,
    CalicoNodeBGPStatus,
    CalicoNodeStatusStatus,
)
from pycalico.plugins.datastore.kubernetes import crds
from tests.integration.test_node_daemon import RECONCILERS, Running
from waiting import wait_for


def request(name: str, node: str, classes: str, period: int):
    (res,) = load_resources(
        f"apiVersion: projectcalico.org/v3\nkind: CalicoNodeStatus\nmetadata: {{name: {name}}}\n"
        f"spec: {{node: {node}, classes: [{classes}], updatePeriodSeconds: {period}}}\n")
    return res


class Daemon:
    """In place of the plugins: node1's configuration, and a BGP daemon with as many
    Established sessions as the test says; every read is counted."""

    def __init__(self):
        self.config = SimpleNamespace(hostname="node1")
        self.established = 1
        self.reads: list[tuple[str, ...]] = []

    def bgp_status(self, classes):
        self.reads.append(tuple(classes))
        daemon = BGPDaemonStatus(state="Ready", version="2.0.12", router_id="198.51.100.11")
        return CalicoNodeStatusStatus(
            agent=CalicoNodeAgentStatus(bird_v4=daemon, bird_v6=daemon),
            bgp=CalicoNodeBGPStatus(number_established_v4=self.established, number_not_established_v4=0,
                                    number_established_v6=0, number_not_established_v6=0),
            routes=CalicoNodeBGPRouteStatus(),
        )


class Synced:
    """The agent's part, on a watch of the test's own: the CalicoNodeStatus resources its
    sync has cached, and the reporter told of each change."""

    def __init__(self, ds, connect, daemon):
        snapshot = ds.snapshot(["CalicoNodeStatus"])
        self.items = {r.name: r for r in snapshot.resources}
        self.stop = threading.Event()
        self.reporter = NodeStatusReporter(connect, lambda: daemon, lambda: tuple(self.items.values()))
        self.thread = threading.Thread(target=self._follow, args=(ds, snapshot.revision), daemon=True)

    def _follow(self, ds, revision):
        for event in ds.watch(revision, self.stop, ["CalicoNodeStatus"]):
            if event.type == "deleted":
                self.items.pop(event.resource.name, None)
            else:
                self.items[event.resource.name] = event.resource
            self.reporter.changed(event)

    def __enter__(self):
        self.reporter.start()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.reporter.stop()
        self.thread.join(5)


def test_a_request_is_reported_at_once_then_every_period_and_written_only_when_it_changes(etcd_connect, etcd_server):
    endpoints = etcd_server.endpoints
    ds = etcd_connect(endpoints)
    daemon = Daemon()
    ds.create(request("mine", "node1", "Agent, BGP", 1))
    ds.create(request("theirs", "node2", "Agent", 1))
    with Synced(ds, lambda: etcd_connect(endpoints), daemon):
        first = wait_for(lambda: ds.get("CalicoNodeStatus", "mine").status, timeout=5, what="the first report")
        assert first.agent.bird_v4.router_id == "198.51.100.11" and first.bgp.number_established_v4 == 1
        assert first.routes is None, "only the classes asked for"
        assert time.strptime(first.last_updated, "%Y-%m-%dT%H:%M:%SZ")
        version = ds.get("CalicoNodeStatus", "mine").metadata.resource_version

        # Read every second; nothing changed, so nothing written.
        reads = len(daemon.reads)
        wait_for(lambda: len(daemon.reads) >= reads + 2, timeout=5, what="two more reads")
        assert ds.get("CalicoNodeStatus", "mine").metadata.resource_version == version
        assert set(daemon.reads) == {("Agent", "BGP")}, "another node's request is not this node's to read"
        assert ds.get("CalicoNodeStatus", "theirs").status is None

        daemon.established = 2
        changed = wait_for(lambda: (s := ds.get("CalicoNodeStatus", "mine").status).bgp.number_established_v4 == 2
                           and s, timeout=5, what="the new session count")
        assert changed.last_updated >= first.last_updated

        # A new spec is reported at once, whatever the period; the part no longer asked
        # for keeps what it said (as in Calico).
        current = ds.get("CalicoNodeStatus", "mine")
        spec = attrs.evolve(current.spec, classes=("BGP", "Routes"), update_period_seconds=3600)
        ds.update(attrs.evolve(current, spec=spec))
        now = wait_for(lambda: (s := ds.get("CalicoNodeStatus", "mine").status).routes is not None and s, timeout=5,
                       what="the Routes part")
        assert now.agent == changed.agent and daemon.reads[-1] == ("BGP", "Routes")

        # Deleted: no more reads, no more writes.
        ds.delete("CalicoNodeStatus", "mine")
        time.sleep(0.5)  # a pass to notice
        reads = len(daemon.reads)
        time.sleep(2.5)
        assert len(daemon.reads) == reads
        with pytest.raises(NotFound):
            ds.get("CalicoNodeStatus", "mine")


def test_an_update_period_of_zero_reports_once(etcd_connect, etcd_server):
    endpoints = etcd_server.endpoints
    ds = etcd_connect(endpoints)
    daemon = Daemon()
    with Synced(ds, lambda: etcd_connect(endpoints), daemon):
        ds.create(request("once", "node1", "BGP", 0))
        wait_for(lambda: ds.get("CalicoNodeStatus", "once").status, timeout=5, what="the one report")
        daemon.established = 5
        time.sleep(2)
        assert daemon.reads == [("BGP",)]
        assert ds.get("CalicoNodeStatus", "once").status.bgp.number_established_v4 == 1


def test_an_agent_without_bgp_reports_calicos_not_ready_on_kubernetes(kube_apiserver, kdd_kubeconfig, kdd_datastore,
                                                                      tmp_path):
    kdd_datastore.create(request("node1-status", "node1", "Agent, BGP, Routes", 1))
    path = tmp_path / "calico.toml"
    path.write_text(kdd_config_text(kdd_kubeconfig, "node1") + RECONCILERS)
    with Running(path):
        status = wait_for(lambda: kdd_datastore.get("CalicoNodeStatus", "node1-status").status, timeout=10,
                          what="the agent's report")
    assert status.agent.bird_v4 == status.agent.bird_v6 == BGPDaemonStatus(state="NotReady")
    assert (status.bgp.number_established_v4, status.bgp.number_not_established_v6) == (0, 0)
    assert status.bgp.peers_v4 is None and status.routes == CalicoNodeBGPRouteStatus()
    # Stored as Calico's CRD has it: a cluster-scoped custom resource, the counts always there.
    path = f"/apis/{crds.GROUP}/{crds.VERSION}/caliconodestatuses/node1-status"
    stored = kdd_datastore.api.request("GET", path)["status"]
    assert stored["agent"] == {"birdV4": {"state": "NotReady"}, "birdV6": {"state": "NotReady"}}
    assert stored["bgp"] == {"numberEstablishedV4": 0, "numberNotEstablishedV4": 0, "numberEstablishedV6": 0,
                             "numberNotEstablishedV6": 0}
