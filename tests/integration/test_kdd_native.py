"""KDD: the Calico kinds Kubernetes' own objects stand for (libcalico-go/lib/backend/k8s/
conversion/ and resources/{node,workloadendpoint,profile}.go): Node <- Node + annotations,
WorkloadEndpoint <- Pod, Profile <- Namespace / ServiceAccount, and Kubernetes
NetworkPolicy -> knp.default.<name>."""

from __future__ import annotations

import hashlib

import attrs
import pytest

from pycalico.core.datastore import NotFound, OperationNotSupported
from pycalico.core.resources.codec import load_resources, to_dict
from pycalico.plugins.datastore.kubernetes import names

CORE = "/api/v1"


def post(store, path: str, body: dict) -> dict:
    return store.api.request("POST", path, body=body)


def make_node(store, name: str, labels: dict | None = None, **status) -> dict:
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}}
    node = post(store, CORE + "/nodes", body)
    if status:
        node["status"] = status
        node = store.api.request("PUT", f"{CORE}/nodes/{name}/status", body=node)
    return node


def make_pod(store, name: str, ns: str = "default", node: str | None = "node-1", labels=None, annotations=None,
             sa: str | None = None, ports=None, host_network: bool = False) -> dict:
    spec: dict = {"containers": [{"name": "main", "image": "busybox:1.36", "ports": ports or []}]}
    if node:
        spec["nodeName"] = node
    if sa:
        spec["serviceAccountName"] = sa
    if host_network:
        spec["hostNetwork"] = True
    meta = {"name": name, "namespace": ns, "labels": labels or {}, "annotations": annotations or {}}
    return post(store, f"{CORE}/namespaces/{ns}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                                                         "spec": spec})


# --- Node -------------------------------------------------------------------------------


def test_node_is_the_kubernetes_node_and_its_annotations_round_trip(kdd_datastore):
    store = kdd_datastore
    make_node(store, "node-1", {"zone": "a"},
              addresses=[{"type": "InternalIP", "address": "198.51.100.11"},
                         {"type": "Hostname", "address": "node-1"}])
    node = store.get("Node", "node-1")
    assert to_dict(node)["spec"] == {
        "orchRefs": [{"nodeName": "node-1", "orchestrator": "k8s"}],
        "addresses": [{"address": "198.51.100.11", "type": "InternalIP"}],
    }
    assert node.status.pod_cidrs == ("10.244.1.0/24",)
    assert node.metadata.labels == {"zone": "a"}
    assert node.metadata.annotations == {"projectcalico.org/kube-labels": '{"zone":"a"}'}

    (wanted,) = load_resources("""
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-1}
spec:
  bgp: {ipv4Address: 198.51.100.11/24, ipv4IPIPTunnelAddr: 10.65.1.1, asNumber: 64513,
        routeReflectorClusterID: 224.0.0.1}
  ipv4VXLANTunnelAddr: 10.65.1.0
  vxlanTunnelMACAddr: 66:2f:0e:61:a2:34
""")
    labels = {**node.metadata.labels, "calico-only": "yes"}
    change = attrs.evolve(wanted, metadata=attrs.evolve(node.metadata, labels=labels),
                          status=node.status)
    updated = store.update(change)
    k8s = store.api.request("GET", f"{CORE}/nodes/node-1")
    ann = k8s["metadata"]["annotations"]
    assert ann == {
        "projectcalico.org/IPv4Address": "198.51.100.11/24",
        "projectcalico.org/IPv4IPIPTunnelAddr": "10.65.1.1",
        "projectcalico.org/ASNumber": "64513",
        "projectcalico.org/RouteReflectorClusterID": "224.0.0.1",
        "projectcalico.org/IPv4VXLANTunnelAddr": "10.65.1.0",
        "projectcalico.org/VXLANTunnelMACAddr": "66:2f:0e:61:a2:34",
        "projectcalico.org/labels": '{"calico-only":"yes"}',  # the Kubernetes label stays Kubernetes'
    }
    assert k8s["metadata"]["labels"] == {"zone": "a"} and k8s["spec"]["podCIDR"] == "10.244.1.0/24"
    got = store.get("Node", "node-1")
    assert got == updated
    assert to_dict(got.spec.bgp) == {"asNumber": 64513, "ipv4Address": "198.51.100.11/24",
                                     "ipv4IPIPTunnelAddr": "10.65.1.1", "routeReflectorClusterID": "224.0.0.1"}
    assert got.spec.ipv4_vxlan_tunnel_addr == "10.65.1.0"
    assert got.metadata.labels == {"zone": "a", "calico-only": "yes"}
    assert [(a.address, a.type) for a in got.spec.addresses] == [
        ("198.51.100.11/24", "CalicoNodeIP"), ("198.51.100.11", "InternalIP")]

    cleared = store.update(attrs.evolve(got, spec=attrs.evolve(got.spec, bgp=None, ipv4_vxlan_tunnel_addr=None,
                                                                     vxlan_tunnel_mac_addr=None)))
    assert cleared.spec.bgp is None
    assert set(store.api.request("GET", f"{CORE}/nodes/node-1")["metadata"]["annotations"]) == {
        "projectcalico.org/labels"}
    with pytest.raises(OperationNotSupported):
        store.create(wanted)
    assert [n.name for n in store.list("Node").items] == ["node-1"]
    assert [n.name for n in store.list("Node", selector="zone == 'a'").items] == ["node-1"]


def test_node_update_is_compare_and_swap(kdd_datastore):
    from pycalico.core.datastore import Conflict

    make_node(kdd_datastore, "node-2")
    first = kdd_datastore.get("Node", "node-2")
    kdd_datastore.update(attrs.evolve(first, metadata=attrs.evolve(first.metadata, labels={"x": "1"})))
    with pytest.raises(Conflict, match="Node node-2"):
        kdd_datastore.update(attrs.evolve(first, metadata=attrs.evolve(first.metadata, labels={"x": "2"})))


# --- WorkloadEndpoint <- Pod ---------------------------------------------------------------


def test_pods_are_workload_endpoints(kdd_datastore):
    store = kdd_datastore
    post(store, f"{CORE}/namespaces/production/serviceaccounts",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web-sa"}})
    pod = make_pod(store, "web-0", ns="production", node="node-1", labels={"app": "web"}, sa="web-sa",
                   annotations={"cni.projectcalico.org/podIP": "10.65.1.5/32",
                                "cni.projectcalico.org/podIPs": "10.65.1.5/32,fd00::5/128",
                                "cni.projectcalico.org/containerID": "abc123"},
                   ports=[{"name": "http", "containerPort": 80},
                          {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"},
                          {"containerPort": 9000}])
    make_pod(store, "pending", ns="production", node=None)  # not scheduled: not an endpoint
    make_pod(store, "host", ns="production", node="node-1", host_network=True)  # host-networked: neither
    (wep,) = store.list("WorkloadEndpoint", "production").items
    name = names.workload_endpoint_name("node-1", "web-0")
    assert name == "node--1-k8s-web--0-eth0"
    veth = "cali" + hashlib.sha1(b"production.web-0").hexdigest()[:11]
    assert to_dict(wep) == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {
            "name": name, "namespace": "production", "uid": pod["metadata"]["uid"],
            "resourceVersion": pod["metadata"]["resourceVersion"],
            "creationTimestamp": pod["metadata"]["creationTimestamp"],
            "labels": {"app": "web", "projectcalico.org/namespace": "production",
                       "projectcalico.org/orchestrator": "k8s", "projectcalico.org/serviceaccount": "web-sa"},
        },
        "spec": {
            "orchestrator": "k8s", "node": "node-1", "containerID": "abc123", "pod": "web-0", "endpoint": "eth0",
            "serviceAccountName": "web-sa", "ipNetworks": ["10.65.1.5/32", "fd00::5/128"],
            "profiles": ["kns.production", "ksa.production.web-sa"], "interfaceName": veth,
            "ports": [{"name": "http", "protocol": "TCP", "port": 80},
                      {"protocol": "UDP", "port": 53, "hostPort": 5353}],
        },
    }
    assert store.get("WorkloadEndpoint", name, "production") == wep
    assert store.list("WorkloadEndpoint", selector="app == 'web'").items == (wep,)
    with pytest.raises(NotFound):
        store.get("WorkloadEndpoint", names.workload_endpoint_name("node-1", "pending"), "production")
    # Create is how the CNI plugin writes an endpoint: the pod's annotations, nothing else.
    created = store.create(attrs.evolve(wep, spec=attrs.evolve(wep.spec, ip_networks=("10.65.1.7/32",),
                                                                 container_id="def456")))
    assert created.spec.ip_networks == ("10.65.1.7/32",) and created.spec.container_id == "def456"
    assert created.metadata.labels == wep.metadata.labels
    with pytest.raises(NotFound):
        store.create(attrs.evolve(wep, metadata=attrs.evolve(
            wep.metadata, name=names.workload_endpoint_name("node-1", "absent"))))

    # kubelet's status wins over Calico's annotations once it is there.
    pod = store.api.request("GET", f"{CORE}/namespaces/production/pods/web-0")
    pod["status"]["podIPs"] = [{"ip": "10.65.1.6"}]
    store.api.request("PUT", f"{CORE}/namespaces/production/pods/web-0/status", body=pod)
    assert store.get("WorkloadEndpoint", name, "production").spec.ip_networks == ("10.65.1.6/32",)


def test_the_cni_plugin_writes_endpoints_as_pod_annotations(kdd_datastore):
    store = kdd_datastore
    make_pod(store, "db-0", node="node-2")
    name = names.workload_endpoint_name("node-2", "db-0")
    wep = store.get("WorkloadEndpoint", name, "default")
    assert wep.spec.ip_networks is None
    written = store.update(attrs.evolve(wep, spec=attrs.evolve(wep.spec, ip_networks=("10.65.2.7/32",),
                                                                 container_id="c0ffee")))
    pod = store.api.request("GET", f"{CORE}/namespaces/default/pods/db-0")
    assert {k: v for k, v in pod["metadata"]["annotations"].items() if k.startswith("cni.")} == {
        "cni.projectcalico.org/podIP": "10.65.2.7/32", "cni.projectcalico.org/podIPs": "10.65.2.7/32",
        "cni.projectcalico.org/containerID": "c0ffee"}
    assert written.spec.ip_networks == ("10.65.2.7/32",) and written.spec.container_id == "c0ffee"
    last = store.delete("WorkloadEndpoint", name, "default")
    assert last.spec.ip_networks == ("10.65.2.7/32",)
    pod = store.api.request("GET", f"{CORE}/namespaces/default/pods/db-0")
    assert {k: v for k, v in pod["metadata"]["annotations"].items() if k.startswith("cni.")} == {
        "cni.projectcalico.org/podIP": "", "cni.projectcalico.org/podIPs": "",
        "cni.projectcalico.org/containerID": "c0ffee"}  # the container ID stays (a repeated DEL checks it)
    assert store.get("WorkloadEndpoint", name, "default").spec.ip_networks is None


# --- Profiles <- Namespaces and ServiceAccounts --------------------------------------------


def test_namespaces_and_service_accounts_are_profiles(kdd_datastore):
    store = kdd_datastore
    ns = post(store, CORE + "/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": "shop", "labels": {"team": "a"}}})
    sa = post(store, f"{CORE}/namespaces/shop/serviceaccounts",
              {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "cart", "labels": {"tier": "db"}}})
    profile = store.get("Profile", "kns.shop")
    assert to_dict(profile) == {
        "apiVersion": "projectcalico.org/v3", "kind": "Profile",
        "metadata": {"name": "kns.shop", "uid": names.convert_uid(ns["metadata"]["uid"]),
                     "resourceVersion": ns["metadata"]["resourceVersion"] + "/",
                     "creationTimestamp": ns["metadata"]["creationTimestamp"]},
        "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
                 "labelsToApply": {"pcns.kubernetes.io/metadata.name": "shop", "pcns.projectcalico.org/name": "shop",
                                   "pcns.team": "a"}},
    }
    sa_profile = store.get("Profile", "ksa.shop.cart")
    assert sa_profile.metadata.resource_version == "/" + sa["metadata"]["resourceVersion"]
    assert to_dict(sa_profile)["spec"] == {"labelsToApply": {"pcsa.projectcalico.org/name": "cart", "pcsa.tier": "db"}}
    listed = [p.name for p in store.list("Profile").items]
    assert "projectcalico-default-allow" in listed and "kns.shop" in listed and "ksa.shop.cart" in listed
    assert listed == sorted(listed)
    assert store.get("Profile", "projectcalico-default-allow").metadata.resource_version == "0"
    with pytest.raises(OperationNotSupported):
        store.update(profile)
    with pytest.raises(NotFound):
        store.get("Profile", "kns.missing")


# --- Kubernetes NetworkPolicy -> knp.default.<name> -----------------------------------------

K8S_POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "web-allow", "namespace": "production"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"},
                        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend", "edge"]},
                                             {"key": "legacy", "operator": "DoesNotExist"}]},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{
            "from": [
                {"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {"matchLabels": {"role": "client"}}},
                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.0/16"]}},
            ],
            "ports": [{"port": 8080, "endPort": 8090}, {"protocol": "UDP", "port": 53}, {"port": 80},
                      {"port": "metrics"}],
        }],
        "egress": [{"to": [{"namespaceSelector": {}}]}, {"ports": [{"protocol": "SCTP"}]}],
    },
}


def test_kubernetes_network_policy_becomes_knp_default(kdd_datastore):
    store = kdd_datastore
    np = post(store, "/apis/networking.k8s.io/v1/namespaces/production/networkpolicies", K8S_POLICY)
    got = store.get("NetworkPolicy", "knp.default.web-allow", "production")
    orchestrator = "projectcalico.org/orchestrator == 'k8s'"
    assert to_dict(got) == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": "knp.default.web-allow", "namespace": "production",
                     "uid": names.convert_uid(np["metadata"]["uid"]),
                     "resourceVersion": np["metadata"]["resourceVersion"],
                     "creationTimestamp": np["metadata"]["creationTimestamp"]},
        "spec": {
            "order": 1000.0,
            "ingress": [
                # One rule per (protocol, peer); the ports of a protocol merged into ranges.
                {"action": "Allow", "protocol": "TCP",
                 "source": {"selector": f"{orchestrator} && role == 'client'", "namespaceSelector": "team == 'a'"},
                 "destination": {"ports": ["metrics", 80, "8080:8090"]}},
                {"action": "Allow", "protocol": "TCP",
                 "source": {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16", "10.2.0.0/16"]},
                 "destination": {"ports": ["metrics", 80, "8080:8090"]}},
                {"action": "Allow", "protocol": "UDP",
                 "source": {"selector": f"{orchestrator} && role == 'client'", "namespaceSelector": "team == 'a'"},
                 "destination": {"ports": [53]}},
                {"action": "Allow", "protocol": "UDP",
                 "source": {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16", "10.2.0.0/16"]},
                 "destination": {"ports": [53]}},
            ],
            "egress": [
                {"action": "Allow", "destination": {"selector": orchestrator, "namespaceSelector": "all()"}},
                {"action": "Allow", "protocol": "SCTP"},
            ],
            "selector": f"{orchestrator} && app == 'web' && tier in {{ 'frontend', 'edge' }} && ! has(legacy)",
            "types": ["Ingress", "Egress"],
        },
    }


def test_network_policies_list_calicos_and_kubernetes_together(kdd_datastore):
    store = kdd_datastore
    minimal = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "deny-all", "namespace": "production"}, "spec": {"podSelector": {}}}
    post(store, "/apis/networking.k8s.io/v1/namespaces/production/networkpolicies", minimal)
    (calico,) = load_resources("""
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-tcp-6379, namespace: production, labels: {owner: me}}
spec: {selector: role == 'database', ingress: [{action: Allow}]}
""")
    store.create(calico)
    listed = store.list("NetworkPolicy", "production").items
    assert [p.name for p in listed] == ["allow-tcp-6379", "knp.default.deny-all"]
    deny = listed[1]
    assert to_dict(deny)["spec"] == {"order": 1000.0, "selector": "projectcalico.org/orchestrator == 'k8s'",
                                     "types": ["Ingress"]}
    assert [p.name for p in store.list("NetworkPolicy").items] == ["allow-tcp-6379", "knp.default.deny-all"]
    assert [p.name for p in store.list("NetworkPolicy", selector="owner == 'me'").items] == ["allow-tcp-6379"]
    page = store.list("NetworkPolicy", "production", limit=1)
    assert [p.name for p in page.items] == ["allow-tcp-6379"] and page.continue_token
    rest = store.list("NetworkPolicy", "production", limit=1, continue_token=page.continue_token)
    assert [p.name for p in rest.items] == ["knp.default.deny-all"] and rest.continue_token is None
    for write in (store.create, store.update):
        with pytest.raises(OperationNotSupported, match="knp.default.deny-all"):
            write(deny)
    with pytest.raises(OperationNotSupported):
        store.delete("NetworkPolicy", "knp.default.deny-all", "production")
