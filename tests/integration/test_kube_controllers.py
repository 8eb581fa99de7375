"""calico-kube-controllers against real etcd and the Kubernetes API stand-in
(tests/kubeapi): the node controller and IPAM GC, the etcd-mode syncs, the
configuration resource, and leader election between replicas.

The Kubernetes side (nodes, pods with the IPs kubelet reports, namespaces, service
accounts, NetworkPolicies) is written to the stand-in over HTTP as the API server's
clients would; the Calico side (Nodes with their ``k8s`` orchRef, IPAM allocations
made by calico-ipam with the CNI plugin's attributes, WorkloadEndpoints) to etcd.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs
import pytest
import requests
from etcd_fixtures import free_ports
from kdd_fixtures import open_kdd
from waiting import wait_for

from pycalico.core.controllers import config as kc
from pycalico.core.controllers import kube as k
from pycalico.core.controllers import status as st
from pycalico.core.controllers.ipamgc import IPAMGC
from pycalico.core.controllers.ksync import (
    EndpointLabels,
    namespace_sync,
    policy_sync,
    service_account_sync,
)
from pycalico.core.controllers.leader import ETCD_KEY, Elector, KubeLease, Timing
from pycalico.core.controllers.main import Service
from pycalico.core.controllers.node import NodeController
from pycalico.core.datastore import NotFound
from pycalico.core.kube.policy import knp_to_calico
from pycalico.core.kube.profiles import namespace_to_profile, service_account_to_profile
from pycalico.core.resources.codec import from_dict, load_resources, to_dict
from pycalico.plugins.ipam.calico_ipam import IPAM, NotAssigned

CORE = "/api/v1"
POOL = "10.65.0.0/16"
FAST = Timing(lease_duration=2.0, renew_deadline=1.5, retry_period=0.2)


# --- the two sides of a cluster ---------------------------------------------------------------


class Kube:
    """Kubernetes objects written through the stand-in's HTTP API."""

    def __init__(self, api):
        self.api = api

    def post(self, path: str, body: dict) -> dict:
        return self.api.request("POST", path, body=body)

    def node(self, name: str, labels: dict | None = None) -> dict:
        return self.post(f"{CORE}/nodes", {"apiVersion": "v1", "kind": "Node",
                                           "metadata": {"name": name, "labels": labels or {}}})

    def namespace(self, name: str, labels: dict | None = None) -> dict:
        return self.post(f"{CORE}/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": name, "labels": labels or {}}})

    def service_account(self, ns: str, name: str, labels: dict | None = None) -> dict:
        return self.post(f"{CORE}/namespaces/{ns}/serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}}})

    def network_policy(self, ns: str, name: str, spec: dict) -> dict:
        return self.post(f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies", {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec})

    def pod(self, ns: str, name: str, node: str, ip: str | None = None, labels: dict | None = None) -> dict:
        pod = self.post(f"{CORE}/namespaces/{ns}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox:1.36"}]}})
        if ip is not None:  # what kubelet reports once the CNI plugin has run
            pod["status"] = {**pod.get("status", {}), "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
            pod = self.api.request("PUT", f"{CORE}/namespaces/{ns}/pods/{name}/status", body=pod)
        return pod

    def patch_labels(self, path: str, labels: dict) -> dict:
        return self.api.request("PATCH", path, body={"metadata": {"labels": labels}},
                                content_type="application/merge-patch+json")

    def delete(self, path: str) -> None:
        self.api.request("DELETE", path)


def resource(text: str):
    (res,) = load_resources(text)
    return res


def calico_node(ds, name: str, k8s_name: str | None = None):
    refs = f", orchRefs: [{{nodeName: {k8s_name}, orchestrator: k8s}}]" if k8s_name else ""
    return ds.create(resource(f"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\n"
                              f"spec: {{bgp: {{ipv4Address: 198.51.100.{10 + len(name)}/24}}{refs}}}\n"))


def pool(ds, cidr: str = POOL):
    ds.create(resource(f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: default-ipv4-ippool}}\n"
                       f"spec: {{cidr: {cidr}, blockSize: 26}}\n"))


def pod_address(ds, node: str, ns: str, name: str) -> str:
    """An address calico-ipam gives pod ``ns/name`` on ``node`` (the CNI plugin's handle
    and attributes)."""
    got = IPAM(ds, node=node).auto_assign(f"k8s-pod-network.{ns}-{name}", {"namespace": ns, "pod": name})
    return str(got.v4[0].ip)


def tunnel_address(ds, node: str) -> str:
    got = IPAM(ds, node=node).auto_assign(f"vxlan-tunnel-addr-{node}", {"type": "vxlanTunnelAddress"})
    return str(got.v4[0].ip)


def wep(ds, node: str, ns: str, name: str, ip: str, labels: dict | None = None):
    text = (f"apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\n"
            f"metadata: {{name: {node}-k8s-{name}-eth0, namespace: {ns}}}\n"
            f"spec: {{node: {node}, orchestrator: k8s, pod: {name}, endpoint: eth0, interfaceName: cali{name[:11]},"
            f" ipNetworks: [{ip}/32]}}\n")
    res = resource(text)
    if labels:
        res = attrs.evolve(res, metadata=attrs.evolve(res.metadata, labels=labels))
    return ds.create(res)


def holder(ipam, ip: str) -> str | None:
    try:
        return ipam.get_assignment_attributes(ip).handle_id
    except NotAssigned:
        return None


@pytest.fixture
def kube(kube_apiserver, kdd_kubeconfig):
    store = open_kdd(kdd_kubeconfig)
    try:
        yield Kube(store.api), k.KubeView(store)
    finally:
        store.close()


# --- the node controller and IPAM GC -------------------------------------------------------------


def test_a_deleted_node_is_cleaned_up_while_live_pods_keep_their_addresses(etcd_datastore, kube, kdd_kubeconfig,
                                                                             tmp_path):
    """etcd mode, the whole service: Kubernetes node2 is deleted (with its pods) ->
    Calico Node node2 deleted, its endpoints removed, its addresses, tunnel address,
    handles and blocks freed; node1's live pods keep theirs."""
    api, view = kube
    ds = etcd_datastore
    pool(ds)
    live = {}
    for node in ("node1", "node2"):
        api.node(node)
        calico_node(ds, node, node)
        for i in range(2):
            name = f"{node}-pod{i}"
            ip = live[name] = pod_address(ds, node, "default", name)
            api.pod("default", name, node, ip)
            wep(ds, node, "default", name, ip)
    tunnel = tunnel_address(ds, "node2")
    kcc = kc.default_configuration()
    grace = 2.0
    node_conf = attrs.evolve(kcc.spec.controllers.node, leak_grace_period="2s")
    (port,) = free_ports(1)
    ds.create(attrs.evolve(kcc, spec=attrs.evolve(kcc.spec, prometheus_metrics_port=port,
                                                  controllers=attrs.evolve(kcc.spec.controllers, node=node_conf))))
    service = Service(ds, view, FAST, "replica-1", st.Status(tmp_path / "status.json"),
                      {"ENABLED_CONTROLLERS": "node"}, metrics_host="127.0.0.1")
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        wait_for(lambda: service.node_controller is not None and service.node_controller.last is not None, 10,
                 "a first node controller pass")
        ipam = IPAM(ds, node="node1")
        assert ipam.check().ok
        began = time.monotonic()
        for i in range(2):
            api.delete(f"{CORE}/namespaces/default/pods/node2-pod{i}")
        api.delete(f"{CORE}/nodes/node2")

        def cleaned():
            return (not [n for n in ds.list("Node").items if n.name == "node2"]
                    and not ipam.store.affinities("node2")
                    and all(holder(ipam, live[f"node2-pod{i}"]) is None for i in range(2))
                    and holder(ipam, tunnel) is None
                    and not [w for w in ds.list("WorkloadEndpoint").items if w.spec.node == "node2"])

        wait_for(cleaned, 10, "node2 cleaned up")
        took = time.monotonic() - began
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        service.stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert took < grace + 1.0, f"cleanup took {took:.1f}s"
    # Two pod addresses and the tunnel address, released as leaks by the leader.
    assert "\nipam_allocations_gc_reclamations 3\n" in metrics, metrics
    assert "\npycalico_kube_controllers_leader 1\n" in metrics
    handles = {h.metadata.name for h in ipam.store.handles()}
    assert handles == {"k8s-pod-network.default-node1-pod0", "k8s-pod-network.default-node1-pod1"}
    for i in range(2):
        assert holder(ipam, live[f"node1-pod{i}"]) == f"k8s-pod-network.default-node1-pod{i}"
    assert {b.host for b in ipam.store.blocks()} == {"node1"}
    report = ipam.check()
    assert report.ok, str(report)
    # The leader wrote what it runs with.
    stored = ds.get("KubeControllersConfiguration", "default")
    assert stored.status.environment_vars == {"ENABLED_CONTROLLERS": "node"}
    assert to_dict(stored.status.running_config)["controllers"] == {
        "node": {"syncLabels": "Enabled", "leakGracePeriod": "2s",
                 "hostEndpoint": {"autoCreate": "Disabled", "createDefaultHostEndpoint": "Enabled"}}}


def test_leaks_wait_out_the_grace_period_and_live_pods_are_never_freed(etcd_datastore, kube):
    """IPAM GC scans with a clock of its own: a leak is freed only after the grace
    period and a recheck, with all addresses of its handle, never a live pod's."""
    api, view = kube
    ds = etcd_datastore
    pool(ds)
    api.node("node1")
    calico_node(ds, "node1", "node1")
    live = pod_address(ds, "node1", "default", "live")
    api.pod("default", "live", "node1", live)
    starting = pod_address(ds, "node1", "default", "starting")
    api.pod("default", "starting", "node1")  # no IP reported yet: valid
    gone = pod_address(ds, "node1", "default", "gone")
    moved = pod_address(ds, "node1", "default", "moved")
    api.pod("default", "moved", "node1", "10.99.0.1")  # reports another address
    back = pod_address(ds, "node1", "default", "back")
    unknown = str(IPAM(ds, node="node1").auto_assign("some-other-user", {}).v4[0].ip)  # no pod attributes
    ipam = IPAM(ds, node="node1")
    clock = [1000.0]
    gc = IPAMGC(IPAM(ds, node="kube-controllers"), view, grace=10.0, clock=lambda: clock[0])

    def scan(pods=None):
        return gc.scan({n.name: n for n in ds.list("Node").items}, set(view.nodes()),
                       view.pods() if pods is None else pods)

    first = scan()
    assert (first.released, set(first.candidates)) == ((), {gone, moved, back})
    clock[0] += 9.0
    assert scan().released == ()
    # "back" is re-created with its address after the scan's list was read: the
    # recheck against the API server saves it.
    clock[0] += 2.0
    stale = view.pods()
    api.pod("default", "back", "node1", back)
    result = scan(stale)
    assert sorted(result.released) == sorted([gone, moved])
    assert result.candidates == ()
    for ip, handle in ((live, "live"), (starting, "starting"), (back, "back")):
        assert holder(ipam, ip) == f"k8s-pod-network.default-{handle}"
    assert holder(ipam, unknown) == "some-other-user"
    assert holder(ipam, gone) is None and holder(ipam, moved) is None
    assert gc.reclaimed == 2
    # Many scans later nothing more goes.
    clock[0] += 100.0
    assert scan().released == ()
    assert holder(ipam, live) is not None


def test_grace_period_zero_and_unset_free_only_a_gone_nodes_leaks(etcd_datastore, kube):
    api, view = kube
    ds = etcd_datastore
    pool(ds)
    for node in ("node1", "node2"):
        api.node(node)
        calico_node(ds, node, node)
    leaked = pod_address(ds, "node1", "default", "leaked")
    orphan = pod_address(ds, "node2", "default", "orphan")
    for grace in (0.0, None):
        gc = IPAMGC(IPAM(ds, node="kube-controllers"), view, grace=grace, clock=lambda: 1e6)
        assert gc.scan({n.name: n for n in ds.list("Node").items}, set(view.nodes()), view.pods()).released == ()
    api.delete(f"{CORE}/nodes/node2")
    result = gc.scan({n.name: n for n in ds.list("Node").items}, set(view.nodes()), view.pods())
    assert result.released == (orphan,) and result.nodes_released == ("node2",)
    assert holder(IPAM(ds, node="node1"), leaked) is not None


def test_a_handle_goes_whole_and_empty_blocks_go_after_two_scans_never_the_last(etcd_datastore, kube):
    api, view = kube
    ds = etcd_datastore
    pool(ds)
    api.node("node1")
    calico_node(ds, "node1", "node1")
    ipam = IPAM(ds, node="node1")
    # A dual-address pod (Multus-like) where only one address is in the pod's status.
    two = ipam.auto_assign("k8s-pod-network.default-two", {"namespace": "default", "pod": "two"}, num_v4=2)
    a, b = (str(x.ip) for x in two.v4)
    api.pod("default", "two", "node1", a)
    # Fill the first block, so that the next pod claims a second one; then empty it.
    first_block = {blk.cidr for blk in ipam.store.blocks()}
    for i in range(64 - 2):
        ipam.auto_assign(f"filler-{i}", {"namespace": "default", "pod": f"filler-{i}"})
    extra = pod_address(ds, "node1", "default", "extra")
    (second,) = {blk.cidr for blk in ipam.store.blocks()} - first_block
    ipam.release_by_handle("k8s-pod-network.default-extra")
    for i in range(64 - 2):
        ipam.release_by_handle(f"filler-{i}")
    clock = [0.0]
    gc = IPAMGC(IPAM(ds, node="kube-controllers"), view, grace=5.0, clock=lambda: clock[0])

    def scan():
        return gc.scan({n.name: n for n in ds.list("Node").items}, set(view.nodes()), view.pods())

    assert scan().blocks_released == ()  # first seen empty
    clock[0] += 4.0
    assert scan().blocks_released == ()  # empty for less than the grace period
    clock[0] += 2.0
    assert scan().blocks_released == (second,)
    assert {blk.cidr for blk in ipam.store.blocks()} == first_block
    assert holder(ipam, extra) is None
    # Address b is not the pod's (its status lists a): a candidate, but a shares its
    # handle and is valid, so neither goes.
    clock[0] += 60.0
    assert scan().released == ()
    assert holder(ipam, a) == holder(ipam, b) == "k8s-pod-network.default-two"
    # The node's last block is never given up, even empty.
    ipam.release_by_handle("k8s-pod-network.default-two")
    api.delete(f"{CORE}/namespaces/default/pods/two")
    for _ in range(3):
        clock[0] += 6.0
        assert scan().blocks_released == ()
    assert {blk.cidr for blk in ipam.store.blocks()} == first_block


def test_label_sync_and_non_kubernetes_nodes(etcd_datastore, kube):
    """syncLabels copies Kubernetes labels and removes those Kubernetes dropped, keeping
    the Calico Node's own; a Calico Node without a k8s orchRef is left alone."""
    api, view = kube
    ds = etcd_datastore
    pool(ds)
    api.node("k8s-a", {"zone": "a", "rack": "1"})
    node = calico_node(ds, "calico-a", "k8s-a")
    ds.update(attrs.evolve(node, metadata=attrs.evolve(node.metadata, labels={"own": "x"})))
    calico_node(ds, "bare-metal", None)
    bare_ip = pod_address(ds, "bare-metal", "default", "bm-pod")  # no such pod in Kubernetes
    settings = kc.NodeSettings(sync_labels=True, delete_nodes=True, leak_grace_period=1.0)
    gc = IPAMGC(IPAM(ds, node="kube-controllers"), view, 1.0)
    controller = NodeController(ds, view, settings, gc, calico_watch=None)
    controller.reconcile()
    got = ds.get("Node", "calico-a")
    assert got.metadata.labels == {"own": "x", "zone": "a", "rack": "1"}
    assert got.metadata.annotations == {"projectcalico.org/kube-labels": '{"rack":"1","zone":"a"}'}
    api.patch_labels(f"{CORE}/nodes/k8s-a", {"rack": None, "zone": "b"})
    controller.reconcile()
    got = ds.get("Node", "calico-a")
    assert got.metadata.labels == {"own": "x", "zone": "b"}
    rv = got.metadata.resource_version
    controller.reconcile()
    assert ds.get("Node", "calico-a").metadata.resource_version == rv  # nothing to do: nothing written
    time.sleep(1.1)
    controller.reconcile()
    assert ds.get("Node", "bare-metal") is not None
    assert holder(IPAM(ds, node="bare-metal"), bare_ip) == "k8s-pod-network.default-bm-pod"


def test_kdd_node_deletion_frees_its_blocks(kdd_datastore, kube_apiserver):
    """KDD: the Calico Node is the Kubernetes node; deleting it frees its blocks."""
    ds = kdd_datastore
    api, view = Kube(ds.api), k.KubeView(ds)
    pool(ds)
    for node in ("node1", "node2"):
        api.node(node)
    keep = pod_address(ds, "node1", "default", "keep")
    api.pod("default", "keep", "node1", keep)
    lost = pod_address(ds, "node2", "default", "lost")
    api.pod("default", "lost", "node2", lost)
    tunnel = tunnel_address(ds, "node2")
    gc = IPAMGC(IPAM(ds, node="kube-controllers"), view, 900.0)
    controller = NodeController(ds, view, kc.NodeSettings(leak_grace_period=900.0), gc, calico_watch=None)
    controller.reconcile()
    assert controller.last.released == ()
    api.delete(f"{CORE}/namespaces/default/pods/lost")
    api.delete(f"{CORE}/nodes/node2")
    controller.reconcile()
    assert sorted(controller.last.released) == sorted([lost, tunnel])
    assert controller.last.nodes_released == ("node2",)
    ipam = IPAM(ds, node="node1")
    assert {b.host for b in ipam.store.blocks()} == {"node1"}
    assert holder(ipam, keep) == "k8s-pod-network.default-keep"
    assert ipam.check().ok


def test_kdd_service_elects_on_a_lease_and_frees_a_deleted_nodes_block(kdd_datastore, kube_apiserver, tmp_path):
    """The whole service on the Kubernetes datastore: the Lease taken, the configuration
    created as a custom resource with its status, and a deleted node's block freed."""
    ds = kdd_datastore
    api = Kube(ds.api)
    pool(ds)
    for node in ("node1", "node2"):
        api.node(node)
    lost = pod_address(ds, "node2", "default", "lost")
    service = Service(ds, k.KubeView(ds), FAST, "kdd-replica", st.Status(tmp_path / "status.json"),
                      {"ENABLED_CONTROLLERS": "node"})
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        wait_for(lambda: service.node_controller is not None and service.node_controller.last is not None, 10,
                 "a first pass")
        lease = ds.api.request("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/"
                                      "calico-kube-controllers")
        assert lease["spec"]["holderIdentity"] == "kdd-replica"
        api.delete(f"{CORE}/nodes/node2")
        ipam = IPAM(ds, node="node1")
        wait_for(lambda: holder(ipam, lost) is None and not ipam.store.blocks(), 10, "node2's block freed")
    finally:
        service.stop.set()
        thread.join(10)
    stored = ds.get("KubeControllersConfiguration", "default")
    assert stored.status.environment_vars == {"ENABLED_CONTROLLERS": "node", "DATASTORE_TYPE": "kubernetes"}
    assert stored.status.running_config.controllers.node.sync_labels == "Disabled"


# --- etcd mode: syncs from Kubernetes ------------------------------------------------------------


def test_etcd_syncs_write_exactly_the_conversion_and_remove_stale_objects(etcd_datastore, kube):
    api, view = kube
    ds = etcd_datastore
    api.namespace("shop", {"team": "web"})
    api.service_account("shop", "frontend", {"tier": "front"})
    api.network_policy("shop", "allow-web", {"podSelector": {"matchLabels": {"app": "web"}},
                                             "ingress": [{"ports": [{"port": 80}]}]})
    # Stale copies of objects Kubernetes no longer has, and a profile nobody syncs.
    for text in ("kind: Profile\nmetadata: {name: kns.gone}\nspec: {}",
                 "kind: Profile\nmetadata: {name: ksa.shop.old}\nspec: {}",
                 "kind: Profile\nmetadata: {name: my-profile}\nspec: {}",
                 "kind: NetworkPolicy\nmetadata: {name: knp.default.old, namespace: shop}\nspec: {selector: all()}"):
        ds.create(resource("apiVersion: projectcalico.org/v3\n" + text))
    syncs = [namespace_sync(ds, view, 300), service_account_sync(ds, view, 300), policy_sync(ds, view, 300)]
    for s in syncs:
        s.reconcile()

    conversions = ((k.NAMESPACES, namespace_to_profile), (k.SERVICE_ACCOUNTS, service_account_to_profile),
                   (k.NETWORK_POLICIES, knp_to_calico))
    for s, (source, convert) in zip(syncs, conversions):
        want = {(r.metadata.namespace or "", r.name): r for r in map(convert, view.objects(source))}
        have = {(r.metadata.namespace or "", r.name): r for r in ds.list(s.kind).items if r.name.startswith(s.prefix)}
        assert set(have) == set(want), s.name
        for key, res in want.items():
            assert to_dict(have[key])["spec"] == to_dict(res)["spec"], key
            assert have[key].metadata.labels == res.metadata.labels
    assert ds.get("Profile", "kns.shop").spec.labels_to_apply == {
        "pcns.team": "web", "pcns.kubernetes.io/metadata.name": "shop", "pcns.projectcalico.org/name": "shop"}
    assert [s.last.deleted for s in syncs] == [1, 1, 1]
    assert ds.get("Profile", "my-profile") is not None
    # Level-based: a second pass writes nothing; a change is one update.
    for s in syncs:
        s.reconcile()
        assert s.last == type(s.last)(), s.name
    api.patch_labels(f"{CORE}/namespaces/shop", {"team": "api"})
    syncs[0].reconcile()
    assert (syncs[0].last.updated, ds.get("Profile", "kns.shop").spec.labels_to_apply["pcns.team"]) == (1, "api")


def test_workload_endpoint_labels_follow_their_pods(etcd_datastore, kube):
    api, view = kube
    ds = etcd_datastore
    api.namespace("shop")
    api.pod("shop", "web", "node1", "10.65.0.5", labels={"app": "web"})
    api.pod("shop", "pending", "node1", None, labels={"app": "new"})
    wep(ds, "node1", "shop", "web", "10.65.0.5", labels={"app": "old", "projectcalico.org/namespace": "shop"})
    wep(ds, "node1", "shop", "pending", "10.65.0.6", labels={"app": "before"})
    sync = EndpointLabels(ds, view, 300)
    sync.reconcile()
    assert sync.last.updated == 1
    got = ds.get("WorkloadEndpoint", "node1-k8s-web-eth0", "shop")
    assert got.metadata.labels == {"app": "web", "projectcalico.org/namespace": "shop",
                                   "projectcalico.org/orchestrator": "k8s",
                                   "projectcalico.org/serviceaccount": "default"}
    # A pod without an IP yet is left to the CNI plugin.
    assert ds.get("WorkloadEndpoint", "node1-k8s-pending-eth0", "shop").metadata.labels == {"app": "before"}
    sync.reconcile()
    assert sync.last.updated == 0


# --- configuration --------------------------------------------------------------------------------


def test_a_bad_configuration_field_is_refused_and_reported(etcd_datastore, kube, tmp_path, capsys):
    _, view = kube
    ds = etcd_datastore
    doc = to_dict(kc.default_configuration())
    doc["spec"]["controllers"]["node"]["leakGracePeriod"] = "15 min"
    ds.create(from_dict(doc, defaults=False, validate=False))  # as if written around calicoctl
    path = tmp_path / "status.json"
    service = Service(ds, view, None, "replica-1", st.Status(path), {})
    service.elector.step()
    assert service.load_config() is None
    assert st.check_main(["-r", "-f", str(path)]) == 1
    assert capsys.readouterr().out == (
        "KubeControllersConfiguration default: spec.controllers.node.leakGracePeriod: '15 min' is not a duration "
        "(use a number and unit, e.g. '90s', '1m30s', '250ms')\n")
    # Fixed: accepted, reported ready, and the status written.
    stored = ds.get("KubeControllersConfiguration", "default")
    doc["spec"]["controllers"]["node"]["leakGracePeriod"] = "15m"
    doc["metadata"]["resourceVersion"] = stored.metadata.resource_version
    ds.update(from_dict(doc))
    run = service.load_config()
    assert run is not None and run.node.leak_grace_period == 900.0
    assert service.status.readiness[st.CONFIG] == {"Ready": True, "Reason": ""}
    assert ds.get("KubeControllersConfiguration", "default").status.running_config.log_severity_screen == "Info"


def test_the_default_configuration_is_created_by_the_leader_only(etcd_datastore, kube, tmp_path):
    _, view = kube
    ds = etcd_datastore
    standby = Service(ds, view, FAST, "standby", st.Status(tmp_path / "a.json"), {})
    assert standby.load_config() == kc.merge({}, "etcdv3", kc.default_configuration().spec)[0]
    with pytest.raises(NotFound):
        ds.get("KubeControllersConfiguration", "default")
    leader = Service(ds, view, None, "leader", st.Status(tmp_path / "b.json"), {})
    leader.elector.step()
    leader.load_config()
    assert ds.get("KubeControllersConfiguration", "default").spec == kc.default_configuration().spec


def test_compaction_keeps_one_period_of_history(etcd_server, etcd_datastore):
    from pycalico.core.controllers.compaction import Compactor

    ds = etcd_datastore
    pool(ds)
    clock = [0.0]
    compactor = Compactor(ds, period=600.0, clock=lambda: clock[0])
    compactor.reconcile()  # notes the revision
    first = etcd_server.revision()
    calico_node(ds, "node1")

    def read_at(revision: int) -> str:
        return etcd_server.etcdctl("get", "--rev", str(revision), "/calico/", "--prefix", "--keys-only")

    clock[0] += 300.0
    compactor.reconcile()  # half a period: nothing
    read_at(first - 1)
    clock[0] += 301.0
    compactor.reconcile()
    # History before the revision seen a period ago is gone; from it on, kept.
    with pytest.raises(RuntimeError, match="required revision has been compacted"):
        read_at(first - 1)
    assert "default-ipv4-ippool" in read_at(first)


# --- leader election -------------------------------------------------------------------------------


def test_kdd_lease_one_leader_and_takeover_after_the_lease(kube_apiserver, kdd_kubeconfig):
    """Two electors on the Lease: never both acting; when the leader stops renewing,
    the other takes over only after the lease duration."""
    stores = [open_kdd(kdd_kubeconfig) for _ in range(2)]
    timing = Timing(lease_duration=1.5, renew_deadline=1.0, retry_period=0.1)
    electors = [Elector(KubeLease(s.api, f"r{i}", timing.lease_duration), timing) for i, s in enumerate(stores)]
    stops = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=e.run, args=(stop,)) for e, stop in zip(electors, stops)]
    both, samples = [], []
    for t in threads:
        t.start()
    try:
        first = wait_for(lambda: next((e for e in electors if e.acting()), None), 5, "a leader")
        other = electors[1 - electors.index(first)]
        # The leader's renewals stop (its API calls fail) but its thread keeps running.
        first.lock.api = _Unreachable()
        lost_at = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not other.acting():
            acting = [e.acting() for e in electors]
            samples.append(acting)
            if all(acting):
                both.append(time.monotonic())
            if lost_at is None and not first.acting():
                lost_at = time.monotonic()
            time.sleep(0.01)
        took_over = time.monotonic()
    finally:
        for stop in stops:
            stop.set()
        for t in threads:
            t.join(5)
        for s in stores:
            s.close()
    assert other.acting() is False  # released when stopped
    assert not both, "both replicas acted at once"
    assert lost_at is not None and took_over - lost_at > 0.3
    lease = Kube(open_kdd(kdd_kubeconfig).api).api.request(
        "GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/calico-kube-controllers")
    assert lease["spec"]["leaseTransitions"] == 1
    assert lease["spec"]["holderIdentity"] == ""  # released on stop


class _Unreachable:
    where = "unreachable"

    def request(self, *args, **kwargs):
        from pycalico.core.datastore import DatastoreUnavailable

        raise DatastoreUnavailable("test: partitioned")


def _replica(identity: str, tmp_path: Path, etcd_server, kubeconfig: Path) -> tuple[subprocess.Popen, Path]:
    log_path = tmp_path / f"{identity}.log"
    env = {**os.environ, "ETCD_ENDPOINTS": ",".join(etcd_server.endpoints), "KUBECONFIG": str(kubeconfig),
           "DATASTORE_TYPE": "etcdv3", "ENABLED_CONTROLLERS": "namespace", "RECONCILER_PERIOD": "1h"}
    env.pop("CALICO_CONFIG", None)
    exe = Path(sys.executable).parent / "calico-kube-controllers"
    argv = [str(exe), "--status-file", str(tmp_path / f"{identity}.json"), "--leader-elect-identity", identity,
            "--leader-elect-lease-duration", "2", "--leader-elect-renew-deadline", "1.5",
            "--leader-elect-retry-period", "0.2"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, log_path


def test_two_replicas_only_the_leader_writes_and_the_other_takes_over(etcd_server, etcd_datastore, kube,
                                                                       kdd_kubeconfig, tmp_path):
    api, _ = kube
    ds = etcd_datastore
    procs = {}
    try:
        for name in ("r1", "r2"):
            procs[name] = _replica(name, tmp_path, etcd_server, kdd_kubeconfig)

        def leader():
            out = etcd_server.etcdctl("get", ETCD_KEY, "--print-value-only").strip()
            return out if out in procs else None

        first = wait_for(leader, 20, "a leader")
        second = next(n for n in procs if n != first)
        api.namespace("alpha")
        wait_for(lambda: [p for p in ds.list("Profile").items if p.name == "kns.alpha"], 10, "kns.alpha synced")
        # Both replicas run the namespace controller; only the leader wrote.
        time.sleep(0.5)
        logs = {n: log.read_text() for n, (_, log) in procs.items()}
        assert "namespace controller:" in logs[first] and "Profile created" in logs[first]
        assert "Profile created" not in logs[second], logs[second]
        status = st.Status(tmp_path / f"{second}.json")
        assert status.path.exists()
        killed_at = time.monotonic()
        os.kill(procs[first][0].pid, signal.SIGKILL)
        procs[first][0].wait(5)
        api.namespace("beta")
        wait_for(lambda: leader() == second, 10, f"{second} leading")
        wait_for(lambda: [p for p in ds.list("Profile").items if p.name == "kns.beta"], 10, "kns.beta synced")
        assert time.monotonic() - killed_at < 8
        assert "Profile created" in procs[second][1].read_text()
        assert st.check_main(["-r", "-f", str(tmp_path / f"{second}.json")]) == 0
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
