"""The reconcile loop, driven through an in-memory datastore (tests/doubles.py)."""

import time

import attrs

from doubles import LoopThread, MemoryDatastore, MemoryPlugin, Recorder
from pycalico.core import config as cfg
from pycalico.core import registration
from pycalico.core.ctl.version import client_version
from pycalico.core.loop import Loop
from pycalico.core.plugins import Registry
from pycalico.core.resources.codec import load_resources
from waiting import wait_for

CONFIG = """
node_name = "node1"
[datastore]
type = "memory"
[ipam]
type = "none"
[routing]
type = "rec"
[policy]
type = "rec"
[node]
ip = "198.51.100.11/24"
[intervals]
coalesce_seconds = 0.2
resync_seconds = {resync}
[logging]
level = "{level}"
"""


NODE = load_resources("""
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node1}
spec: {bgp: {ipv4Address: 198.51.100.11/24}}
""")[0]


def wep(pod, node="node1"):
    (resource,) = load_resources(
        f"""
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {node}-k8s-{pod}-eth0
  namespace: default
spec:
  node: {node}
  orchestrator: k8s
  pod: {pod}
  endpoint: eth0
  interfaceName: cali{pod:0>11}
  ipNetworks: [10.65.0.1/32]
"""
    )
    return resource


class Harness(LoopThread):
    def __init__(self, tmp_path, resources=(), resync=600, watch_config=False, registered=True, extra="", serve=False,
                 policies=None):
        """``policies``: more policy plugins by name, for a config to switch to."""
        self.path = tmp_path / "calico.toml"
        self.write(resync=resync, extra=extra)
        # A registered node: the loop's node step has nothing to write.
        info = registration.desired_cluster_information(None, cfg.read(self.path))
        self.store = MemoryDatastore([info, NODE, *resources] if registered else resources)
        self.routing, self.policy = Recorder("routing"), Recorder("policy")
        registry = Registry(
            {"datastore": {"memory": MemoryPlugin(self.store)}, "routing": {"rec": self.routing},
             "policy": {"rec": self.policy, **(policies or {})}}
        )
        super().__init__(Loop(self.path, registry, watch_config=watch_config, serve=serve), join_timeout=10)

    def write(self, resync=600, level="info", extra=""):
        self.path.write_text(CONFIG.format(resync=resync, level=level) + extra)



def test_first_pass_reconciles_the_snapshot_for_this_node(tmp_path):
    with Harness(tmp_path, [wep("a"), wep("b"), wep("c", node="node2")]) as h:
        wait_for(lambda: h.loop.passes == 1)
        report = h.loop.last_report
        assert report.reason == "sync" and report.ok
        assert report.changes == {
            "node": (),
            "routing": ("+node1-k8s-a-eth0", "+node1-k8s-b-eth0"),
            "policy": ("+node1-k8s-a-eth0", "+node1-k8s-b-eth0"),
        }
        # Every reconciler of a pass sees the same immutable snapshot.
        assert h.routing.states[0] is h.policy.states[0]
        assert h.routing.states[0].revision == h.store.revision


def test_a_burst_of_updates_is_one_pass(tmp_path):
    with Harness(tmp_path) as h:
        wait_for(lambda: h.loop.passes == 1)
        for i in range(50):
            h.store.put(wep(f"p{i}"))
        wait_for(lambda: h.loop.passes >= 2)
        time.sleep(0.5)
        assert h.loop.passes == 2
        assert h.loop.last_report.reason == "update"
        assert len(h.routing.kernel) == 50


def test_a_status_write_costs_no_pass(tmp_path):
    (request,) = load_resources("""
apiVersion: projectcalico.org/v3
kind: CalicoNodeStatus
metadata: {name: node1-status}
spec: {node: node1, classes: [Agent], updatePeriodSeconds: 10}
""")
    with Harness(tmp_path) as h:
        wait_for(lambda: h.loop.passes == 1)
        h.store.put(request)
        h.store.put(wep("a"))
        wait_for(lambda: h.loop.passes == 2)
        h.store.put(request)
        time.sleep(0.5)
        assert h.loop.passes == 2
        # Kept for the status reporter (which may have filled its status meanwhile).
        assert [r.spec for r in h.loop.cache.of_kind("CalicoNodeStatus")] == [request.spec]


def test_delete_converges_and_a_repeated_state_changes_nothing(tmp_path):
    a = wep("a")
    with Harness(tmp_path, [a, wep("b")]) as h:
        wait_for(lambda: h.loop.passes == 1)
        h.store.delete(a)
        wait_for(lambda: h.loop.passes == 2)
        assert h.loop.last_report.changes["policy"] == ("-node1-k8s-a-eth0",)
        h.store.put(wep("b"))  # same value again
        wait_for(lambda: h.loop.passes == 3)
        assert h.loop.last_report.changed == 0


def test_periodic_resync_runs_a_pass_without_changes(tmp_path):
    with Harness(tmp_path, [wep("a")], resync=1) as h:
        wait_for(lambda: h.loop.passes >= 2, timeout=4)
        assert h.loop.last_report.reason == "resync"
        assert h.loop.last_report.changed == 0


def test_a_failing_slot_is_reported_and_does_not_stop_the_other(tmp_path):
    with Harness(tmp_path) as h:
        wait_for(lambda: h.loop.passes == 1)
        h.routing.fail_next = True
        h.store.put(wep("a"))
        wait_for(lambda: h.loop.passes == 2)
        report = h.loop.last_report
        assert report.errors == {"routing": "RuntimeError: injected failure"}
        assert report.changes["policy"] == ("+node1-k8s-a-eth0",)
        h.store.put(wep("b"))
        wait_for(lambda: h.loop.passes == 3)
        assert h.loop.last_report.ok and h.routing.kernel == {"node1-k8s-a-eth0", "node1-k8s-b-eth0"}


def test_datastore_outage_keeps_state_and_resyncs_on_return(tmp_path):
    with Harness(tmp_path, [wep("a")]) as h:
        wait_for(lambda: h.loop.passes == 1)
        h.store.fail()
        time.sleep(0.6)
        assert h.loop.passes == 1, "an outage must not trigger a pass that removes state"
        assert h.policy.kernel == {"node1-k8s-a-eth0"}
        h.store.put(wep("b"))  # written while the agent cannot see it
        h.store.recover()
        wait_for(lambda: h.loop.passes == 2, timeout=5)
        assert h.loop.last_report.reason == "sync"
        assert h.store.snapshots == 2
        assert h.policy.kernel == {"node1-k8s-a-eth0", "node1-k8s-b-eth0"}


def test_config_reload_good_and_bad(tmp_path, caplog):
    with Harness(tmp_path, [wep("a")], watch_config=True) as h:
        wait_for(lambda: h.loop.passes == 1)
        h.write(level="debug")
        wait_for(lambda: h.loop.config.logging.level == "debug", timeout=5)
        wait_for(lambda: h.loop.last_report.reason == "config")
        # A change outside the slots restarts no plugin.
        assert h.routing.unconfigured == 0 and h.routing.configured == 1

        h.path.write_text(h.path.read_text() + "\n[health]\nport = 'x'\n")
        wait_for(lambda: h.loop.last_config_error is not None, timeout=5)
        assert "health.port: expected an integer" in h.loop.last_config_error
        assert h.loop.config.logging.level == "debug"  # the last good config stays
        h.store.put(wep("b"))
        wait_for(lambda: h.policy.kernel == {"node1-k8s-a-eth0", "node1-k8s-b-eth0"})

        h.write(level="info")
        wait_for(lambda: h.loop.last_config_error is None and h.loop.config.logging.level == "info", timeout=5)


def test_stop_shuts_down_plugins_and_datastore(tmp_path):
    h = Harness(tmp_path)
    with h:
        wait_for(lambda: h.loop.passes == 1)
    assert h.store.closed and h.routing.unconfigured == 1 and h.policy.unconfigured == 1


def test_once_returns_after_the_first_pass(tmp_path):
    h = Harness(tmp_path, [wep("a")])
    h.loop.run(once=True)
    assert h.loop.passes == 1 and h.store.closed


def test_the_node_registers_itself_and_keeps_what_others_set(tmp_path):
    with Harness(tmp_path, registered=False, watch_config=True) as h:
        wait_for(lambda: ("Node", "", "node1") in h.store._items)
        node = h.store._items[("Node", "", "node1")]
        assert node.spec.bgp.ipv4_address == "198.51.100.11/24"
        wait_for(lambda: h.loop.passes >= 2)
        assert h.loop.last_report.changes["node"] == ()
        # A route reflector cluster ID set by the operator survives a new address.
        bgp = attrs.evolve(node.spec.bgp, route_reflector_cluster_id="244.0.0.1")
        h.store.put(attrs.evolve(node, spec=attrs.evolve(node.spec, bgp=bgp)))
        h.path.write_text(h.path.read_text().replace("198.51.100.11/24", "198.51.100.12/24"))
        wait_for(lambda: h.store._items[("Node", "", "node1")].spec.bgp.ipv4_address == "198.51.100.12/24")
        assert h.store._items[("Node", "", "node1")].spec.bgp.route_reflector_cluster_id == "244.0.0.1"
        info = h.store._items[("ClusterInformation", "", "default")].spec
        assert info.calico_version == client_version() and info.datastore_ready
        assert len(info.cluster_guid) == 32


def test_a_changed_slot_restarts_alone_and_the_sync_goes_on(tmp_path):
    other = Recorder("policy")
    with Harness(tmp_path, [wep("a")], watch_config=True, policies={"rec2": other}) as h:
        wait_for(lambda: h.loop.passes == 1)
        h.path.write_text(h.path.read_text().replace('[policy]\ntype = "rec"', '[policy]\ntype = "rec2"'))
        wait_for(lambda: other.kernel == {"node1-k8s-a-eth0"}, timeout=5)
        assert (h.policy.configured, h.policy.unconfigured) == (1, 1)
        assert (other.configured, other.unconfigured) == (1, 0)
        assert (h.routing.configured, h.routing.unconfigured) == (1, 0)
        assert h.store.snapshots == 1 and not h.store.closed, "the sync was not restarted"
        h.store.put(wep("b"))
        wait_for(lambda: other.kernel == {"node1-k8s-a-eth0", "node1-k8s-b-eth0"})
        assert h.policy.kernel == {"node1-k8s-a-eth0"}, "the old plugin gets no more passes"
