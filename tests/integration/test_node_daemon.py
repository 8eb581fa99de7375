"""calico-node as a daemon on real datastores: /readiness through the first sync and an
etcd outage, Felix's status report in etcd, and the Kubernetes Node condition."""

from __future__ import annotations

import base64
import json
import time

from doubles import LoopThread, Recorder
from etcd_fixtures import free_ports
from kdd_fixtures import kdd_config_text
from pycalico.core import status
from pycalico.core.loop import Loop
from pycalico.core.plugins import Registry
from unit.test_health import answer
from waiting import wait_for

RECONCILERS = '[ipam]\ntype = "none"\n[routing]\ntype = "rec"\n[policy]\ntype = "rec"\n[node]\nip = "198.51.100.11/24"\n'


def etcd_config(endpoint: str, port: int, reporting: float = 30) -> str:
    return (
        f'node_name = "node1"\n[datastore]\ntype = "etcd"\n[datastore.etcd]\nendpoints = ["{endpoint}"]\n'
        f"timeout_seconds = 2\n{RECONCILERS}"
        f"[intervals]\ncoalesce_seconds = 0.1\nresync_seconds = 600\nreporting_seconds = {reporting}\n"
        f'[health]\nhost = "127.0.0.1"\nport = {port}\n'
    )


class Running(LoopThread):
    """A Loop serving its probes, run in a thread; stopped on exit."""

    def __init__(self, path, watch_config=False):
        self.routing, self.policy = Recorder("routing"), Recorder("policy")
        registry = Registry({"routing": {"rec": self.routing}, "policy": {"rec": self.policy}})
        super().__init__(Loop(path, registry, watch_config=watch_config, serve=True))


def wep(pod):
    from etcd_fixtures import wep as make

    return make(pod, "default")


def test_readiness_follows_the_first_sync_and_an_etcd_outage(etcd_server, etcd_datastore, tmp_path):
    (port,) = free_ports(1)
    etcd_datastore.create(wep("a"))
    path = tmp_path / "calico.toml"
    path.write_text(etcd_config(etcd_server.endpoint, port))
    with Running(path) as run:
        assert run.loop.readiness()[-1] in ("waiting for the first datastore sync", "first sync not yet applied")
        wait_for(lambda: answer(port, "/readiness") == (200, "ready\n"))
        assert run.policy.kernel == {"a"}
        # The Node and ClusterInformation the first pass wrote come back: settled then.
        wait_for(lambda: run.loop.last_report.changes.get("node") == ())
        passes = run.loop.passes

        etcd_server.stop()  # SIGTERM by pid
        stopped = time.monotonic()
        _, body = wait_for(lambda: (r := answer(port, "/readiness")) and r[0] == 503 and r, timeout=30)
        noticed = time.monotonic() - stopped
        assert body.startswith("datastore unavailable: etcd unreachable at "), body
        # The watch keeps trying for the datastore's timeout (2 s here), then says so.
        assert noticed < 10, f"readiness took {noticed:.1f}s to notice etcd was gone"
        assert answer(port, "/liveness") == (200, "live\n")
        assert run.loop.passes == passes, "an outage must not run a pass"
        assert run.policy.kernel == {"a"}, "the dataplane keeps what it has"

        etcd_server.start()
        wait_for(lambda: answer(port, "/readiness") == (200, "ready\n"), timeout=30)
        assert run.loop.last_report.reason == "sync"
        assert run.policy.kernel == {"a"}, "the resync removed nothing that is still there"


def test_an_agent_started_while_etcd_is_down_waits_for_it(etcd_server, tmp_path):
    (port,) = free_ports(1)
    path = tmp_path / "calico.toml"
    path.write_text(etcd_config(etcd_server.endpoint, port))
    etcd_server.stop()
    with Running(path) as run:
        _, body = wait_for(lambda: (r := answer(port, "/readiness")) and "datastore unavailable" in r[1] and r)
        assert body.splitlines()[1] == "waiting for the first datastore sync"
        etcd_server.start()
        wait_for(lambda: answer(port, "/readiness") == (200, "ready\n"), timeout=30)
        assert run.loop.passes == 1


def etcd_json(server, key):
    """The JSON value of ``key`` and the id of its lease (0: none)."""
    (kv,) = json.loads(server.etcdctl("get", key, "--write-out=json"))["kvs"]
    return json.loads(base64.b64decode(kv["value"])), int(kv.get("lease", 0))


def test_felix_status_is_written_to_etcd_with_uptime_under_a_ttl(etcd_server, tmp_path, monkeypatch):
    monkeypatch.setattr(status, "FIRST_REPORT_DELAY", 0.5)  # Felix waits 10 s; the test need not
    (port,) = free_ports(1)
    path = tmp_path / "calico.toml"
    path.write_text(etcd_config(etcd_server.endpoint, port, reporting=1))
    live_key = "/calico/felix/v2/no-region/host/node1/status"
    last_key = "/calico/felix/v2/no-region/host/node1/last_reported_status"
    with Running(path) as run:
        wait_for(lambda: etcd_server.etcdctl("get", live_key, "--print-value-only").strip(), timeout=10)
        first, lease = etcd_json(etcd_server, live_key)
        assert set(first) == {"time", "uptime", "first_update"}
        assert first["first_update"] is True and 0 < first["uptime"] < 30
        assert time.strptime(first["time"], "%Y-%m-%dT%H:%M:%SZ")
        ttl = etcd_server.etcdctl("lease", "timetolive", format(lease, "x"))
        assert "granted with TTL(90s)" in ttl, ttl
        wait_for(lambda: etcd_json(etcd_server, live_key)[0]["first_update"] is False, timeout=10)
        later, _ = etcd_json(etcd_server, last_key)
        assert later["uptime"] > first["uptime"]
        assert etcd_json(etcd_server, last_key)[1] == 0, "the last report has no TTL"
        assert run.loop.readiness() == []


def test_kubernetes_node_condition_says_calico_is_up_then_down(kube_apiserver, kdd_kubeconfig, kdd_datastore, tmp_path):
    kdd_datastore.api.request("POST", "/api/v1/nodes", body={"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"}})
    (port,) = free_ports(1)
    path = tmp_path / "calico.toml"
    path.write_text(kdd_config_text(kdd_kubeconfig, "node1") + RECONCILERS + f'[health]\nhost = "127.0.0.1"\nport = {port}\n')

    def condition():
        node = kdd_datastore.api.request("GET", "/api/v1/nodes/node1")
        found = [c for c in node.get("status", {}).get("conditions", []) if c["type"] == "NetworkUnavailable"]
        return found[0] if found else None

    with Running(path):
        wait_for(lambda: answer(port, "/readiness") == (200, "ready\n"))
        up = wait_for(condition, timeout=10)
        assert (up["status"], up["reason"], up["message"]) == ("False", "CalicoIsUp", "Calico is running on this node")
    down = condition()
    assert (down["status"], down["reason"], down["message"]) == ("True", "CalicoIsDown", "Calico is shutting down on this node")
