"""The reconcile loop on the real etcd datastore plugin: the first pass sees the
snapshot, a write in etcd reaches the reconcilers through the watch, and an outage
changes nothing until etcd is back."""

import threading
import time


from doubles import Recorder
from pycalico.core.loop import Loop
from pycalico.core.plugins import Registry
from pycalico.core.resources.codec import load_resources
from waiting import wait_for


def wep(pod, node="node1"):
    (resource,) = load_resources(
        f"apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\n"
        f"metadata: {{name: {node}-k8s-{pod}-eth0, namespace: default}}\n"
        f"spec: {{node: {node}, orchestrator: k8s, pod: {pod}, endpoint: eth0, interfaceName: cali{pod:0>11},"
        f" ipNetworks: [10.65.0.1/32]}}\n"
    )
    return resource


def test_loop_syncs_and_follows_real_etcd(etcd_server, etcd_datastore, tmp_path):
    etcd_datastore.create(wep("a"))
    etcd_datastore.create(wep("z", node="node2"))
    config = tmp_path / "calico.toml"
    config.write_text(
        f'node_name = "node1"\n[datastore]\ntype = "etcd"\n[datastore.etcd]\nendpoints = ["{etcd_server.endpoint}"]\n'
        '[ipam]\ntype = "none"\n[routing]\ntype = "rec"\n[policy]\ntype = "rec"\n'
        "[intervals]\ncoalesce_seconds = 0.1\nresync_seconds = 600\n"
    )
    routing, policy = Recorder("routing"), Recorder("policy")
    # The etcd plugin comes from its installed entry point; only the reconcilers are handed in.
    loop = Loop(config, Registry({"routing": {"rec": routing}, "policy": {"rec": policy}}), watch_config=False)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: loop.passes >= 1)
        assert loop.last_report.reason == "sync"
        assert policy.kernel == {"node1-k8s-a-eth0"}

        etcd_datastore.create(wep("b"))
        wait_for(lambda: policy.kernel == {"node1-k8s-a-eth0", "node1-k8s-b-eth0"})
        assert loop.last_report.reason == "update"

        passes = loop.passes
        etcd_server.stop()
        time.sleep(1.0)
        assert loop.passes == passes, "an outage must not run a pass that removes state"
        assert policy.kernel == {"node1-k8s-a-eth0", "node1-k8s-b-eth0"}
        etcd_server.start()
        current = etcd_datastore.get("WorkloadEndpoint", "node1-k8s-a-eth0", "default")
        etcd_datastore.delete("WorkloadEndpoint", current.metadata.name, "default")
        wait_for(lambda: policy.kernel == {"node1-k8s-b-eth0"}, timeout=30)
        assert routing.kernel == policy.kernel
    finally:
        loop.stop()
        thread.join(timeout=15)
    assert not thread.is_alive()


def test_a_config_reload_keeps_following_etcd(etcd_server, etcd_datastore, tmp_path):
    config = tmp_path / "calico.toml"
    text = (
        f'node_name = "node1"\n[datastore]\ntype = "etcd"\n[datastore.etcd]\nendpoints = ["{etcd_server.endpoint}"]\n'
        '[ipam]\ntype = "none"\n[routing]\ntype = "rec"\n[policy]\ntype = "rec"\n'
        '[node]\nip = "198.51.100.11/24"\n'
        "[intervals]\ncoalesce_seconds = 0.1\nresync_seconds = {resync}\n"
    )
    config.write_text(text.format(resync=600))
    routing, policy = Recorder("routing"), Recorder("policy")
    loop = Loop(config, Registry({"routing": {"rec": routing}, "policy": {"rec": policy}}), watch_config=True)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: loop.passes >= 1)
        config.write_text(text.format(resync=500))
        wait_for(lambda: loop.config.intervals.resync_seconds == 500)
        # The old plugins closed their etcd clients; the watch must go on through new ones.
        etcd_datastore.create(wep("c"))
        wait_for(lambda: "node1-k8s-c-eth0" in policy.kernel)
    finally:
        loop.stop()
        thread.join(timeout=15)
    assert not thread.is_alive()
