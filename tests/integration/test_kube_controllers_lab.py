"""calico-kube-controllers in a lab: a node deleted with ``calicoctl delete node`` has
its blocks freed within the leak grace period, and ``calicoctl ipam check`` is clean.

The lab's etcd holds the Calico side; pods are real namespaces wired by the ``calico``
CNI executable. The Kubernetes API is the stand-in (tests/kubeapi), listening on the
control plane's address inside its namespace, where calico-kube-controllers runs too
(spawned by the lab, so that ``down`` ends it whatever happens).
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import time
from pathlib import Path

import attrs
import pytest
from kdd_fixtures import TOKEN
from kubeapi import KubeAPIServer
from waiting import wait_for

from pycalico.core.controllers import config as kc
from pycalico.core.lab import netns, pods
from pycalico.core.resources import load_resources

pytestmark = pytest.mark.lab

GRACE = 3.0


def kube_request(lab, kubeconfig: Path, method: str, path: str, body: dict | None = None) -> dict:
    """One request to the API server, from inside the control plane's namespace."""
    from pycalico.plugins.datastore.kubernetes import KubeAPI, Options

    def call():
        api = KubeAPI(Options(kubeconfig=str(kubeconfig)))
        try:
            return api.request(method, path, body=body)
        finally:
            api.close()

    return netns.run_in_netns(lab.cp_netns, call, timeout=30)


def calico_setup(ds, nodes: list[str]) -> None:
    """What calico-node writes before the controllers run (here without agents): the
    ClusterInformation, and each Node with its Kubernetes orchRef."""
    docs = [("kind: ClusterInformation\nmetadata: {name: default}\nspec: {clusterGUID: 1ab, clusterType: 'k8s,bgp', "
             "datastoreReady: true}")]
    docs += [f"kind: Node\nmetadata: {{name: {n}}}\nspec: {{orchRefs: [{{nodeName: {n}, orchestrator: k8s}}]}}"
             for n in nodes]
    kcc = kc.default_configuration()
    node_conf = attrs.evolve(kcc.spec.controllers.node, leak_grace_period=kc.go_duration(GRACE))
    for res in load_resources("\n---\n".join("apiVersion: projectcalico.org/v3\n" + d for d in docs)):
        ds.create(res)
    ds.create(attrs.evolve(kcc, spec=attrs.evolve(kcc.spec, controllers=attrs.evolve(kcc.spec.controllers,
                                                                                     node=node_conf))))


def ipam_check(lab) -> str:
    done = lab.exec("node1", ["calicoctl", "ipam", "check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_node_deleted_with_calicoctl_has_its_blocks_freed(make_lab):
    lab = make_lab(nodes=2)
    server = KubeAPIServer(host=lab.state.cp_ip, port=0, token=TOKEN, bookmark_interval=0.5, rv_wait=0.5)
    netns.run_in_netns(lab.cp_netns, server.start)
    try:
        kubeconfig = server.write_kubeconfig(lab.state_dir / "kubeconfig")
        names = [n.name for n in lab.nodes]
        pods.with_datastore(lab, "node1", lambda ds: calico_setup(ds, names))
        live = {}
        for node in names:
            kube_request(lab, kubeconfig, "POST", "/api/v1/nodes",
                         {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
            pod = pods.add_pod(lab, node, f"default/web-{node}")
            ip = live[node] = pod.ips[0].split("/")[0]
            made = kube_request(lab, kubeconfig, "POST", "/api/v1/namespaces/default/pods", {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"web-{node}", "namespace": "default"},
                "spec": {"nodeName": node, "containers": [{"name": "web", "image": "nginx:1.25"}]}})
            made["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
            kube_request(lab, kubeconfig, "PUT", f"/api/v1/namespaces/default/pods/web-{node}/status", made)
        status_file = lab.state_dir / "kube-controllers-status.json"
        # Calico's variables only: the datastore from ETCD_ENDPOINTS, not a calico.toml.
        env = {k: v for k, v in os.environ.items() if k != "CALICO_CONFIG"}
        env.update(ETCD_ENDPOINTS=",".join(lab.etcd_endpoints), KUBECONFIG=str(kubeconfig), ENABLED_CONTROLLERS="node")
        exe = str(Path(sys.executable).parent / "calico-kube-controllers")
        log = lab.state_dir / "logs" / "kube-controllers.log"
        pid = lab.spawn(lab.cp_netns, [exe, "--status-file", str(status_file)], log, name="calico-kube-controllers",
                        env=env)

        def ready():
            try:
                readiness = json.loads(status_file.read_text())["Readiness"]
            except (OSError, ValueError, KeyError):
                return False
            return len(readiness) == 4 and all(c["Ready"] for c in readiness.values())

        wait_for(lambda: ready() or not lab.processes[-1].alive(), 30, "calico-kube-controllers ready")
        assert ready(), log.read_text()
        assert "Check complete; found 0 problems." in ipam_check(lab)

        def blocks() -> list[str]:
            show = lab.exec("node1", ["calicoctl", "ipam", "show", "--show-blocks"], capture_output=True, text=True,
                            timeout=60)
            return [line.split("|")[2].strip() for line in show.stdout.splitlines() if "| Block" in line]

        assert len(blocks()) == 2
        # node2 goes away: Kubernetes evicts its pod, the operator deletes the Calico Node.
        kube_request(lab, kubeconfig, "DELETE", "/api/v1/namespaces/default/pods/web-node2")
        began = time.monotonic()
        done = lab.exec("node1", ["calicoctl", "delete", "node", "node2"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

        def freed() -> list[str] | None:
            now = blocks()
            return now if len(now) == 1 else None

        left = wait_for(freed, GRACE + 5, "node2's block freed")
        took = time.monotonic() - began
        assert any(ipaddress.ip_address(live["node1"]) in ipaddress.ip_network(b) for b in left)
        report = ipam_check(lab)
        assert "Check complete; found 0 problems." in report, report
        assert took < GRACE + 2, f"freed after {took:.1f}s"
        # node1's pod kept its address and still answers from its node.
        attrs_ = lab.exec("node1", ["calicoctl", "ipam", "show", "--ip", live["node1"]], capture_output=True,
                          text=True, timeout=60)
        assert "in use" in attrs_.stdout, attrs_.stdout
        ping = lab.exec("node1", ["ping", "-c", "1", "-W", "2", live["node1"]], capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout
        lab.stop(pid)
    finally:
        server.stop()
