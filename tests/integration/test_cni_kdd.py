"""The calico CNI executable in a lab against the Kubernetes datastore (KDD): the real
``calico`` executable run inside a node's namespace, as a runtime runs it, with a netconf
of ``datastore_type: kubernetes`` and ``kubernetes.kubeconfig``.

The API server is the stand-in of tests/kubeapi, listening on the lab's control-plane
address inside the control-plane namespace, where the nodes reach it (as they reach etcd
in the etcd lab). Every node's calico.toml is switched to that API server, so the lab's
datastore helpers (``pods.with_datastore``) and calicoctl read KDD from inside a node.

In KDD the WorkloadEndpoint is the Pod: the CNI plugin patches the pod's
``cni.projectcalico.org/podIP``/``podIPs``/``containerID`` annotations (through
pods/status) and DEL blanks the IPs; calico-ipam keeps blocks, affinities and handles as
custom resources. node1 has no CNI agent (the executable serves itself); node2's agent
runs with the KDD calico.toml (the fast path).
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path

import pytest
from kdd_fixtures import TOKEN, kdd_config_text
from kubeapi import KubeAPIServer
from lab_fixtures import down_all, require_lab, unique_lab_name
from pycalico.core.cni import naming
from pycalico.core.datastore import NotFound
from pycalico.core.lab import Lab, netns, pods

pytestmark = pytest.mark.lab

NAMESPACE = "shop"
NODE_FOR = {"local": "node1", "agent": "node2"}
CRD_GROUP = "/apis/crd.projectcalico.org/v1"
POD_IP = "cni.projectcalico.org/podIP"
POD_IPS = "cni.projectcalico.org/podIPs"
CONTAINER_ID = "cni.projectcalico.org/containerID"


@pytest.fixture(scope="module")
def klab(tmp_path_factory):
    """A 2-node lab whose datastore is the API server stand-in on the control plane's
    address: CRDs installed, Kubernetes Nodes for the lab's nodes, namespace ``shop``,
    the default IP pool; node2 runs the CNI agent."""
    require_lab()
    root = tmp_path_factory.mktemp("cni-kdd")
    server = None
    try:
        lab = Lab.up(unique_lab_name("k"), nodes=2, state_root=root)
        server = KubeAPIServer(host=lab.state.cp_ip, port=0, token=TOKEN, bookmark_interval=0.5, rv_wait=0.5)
        # The listening socket is made in the control plane's namespace and stays there.
        netns.run_in_netns(lab.cp_netns, server.start)
        kubeconfig = server.write_kubeconfig(kubeconfig_path(lab))
        for n in lab.nodes:
            with open(n.config_path, "w") as f:
                f.write(kdd_config_text(kubeconfig, n.name))
        pods.with_datastore(lab, "node1", lambda ds: setup_cluster(ds, [n.name for n in lab.nodes]))
        pods.ensure_default_pool(lab)
        pods.start_cni_agent(lab, "node2")
        yield lab
    finally:
        try:
            errors = down_all(root)
        finally:
            if server is not None:
                server.stop()
        assert not errors, errors


@pytest.fixture(params=["local", "agent"])
def path(request):
    return request.param


# --- helpers ---------------------------------------------------------------------------------------


def setup_cluster(ds, nodes: list[str]) -> None:
    """What a Kubernetes cluster with Calico has before the first pod: the CRDs, the
    ClusterInformation calico-node writes (datastore ready), the Nodes, and the pods'
    namespace."""
    from pycalico.core.resources import load_resources
    from pycalico.plugins.datastore.kubernetes import install_crds

    install_crds(ds)
    (info,) = load_resources("apiVersion: projectcalico.org/v3\nkind: ClusterInformation\nmetadata: {name: default}\n"
                             "spec: {clusterGUID: 5e1f, clusterType: 'k8s,kdd', datastoreReady: true}\n")
    ds.create(info)
    for name in nodes:
        ds.api.request("POST", "/api/v1/nodes", body={"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    ds.api.request("POST", "/api/v1/namespaces",
                   body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})


def kubeconfig_path(lab: Lab) -> Path:
    return lab.state_dir / "kubeconfig"


def in_node(lab: Lab, fn):
    """``fn(datastore)`` from inside node1 (the API server is reachable only in the lab)."""
    return pods.with_datastore(lab, "node1", fn)


def api(lab: Lab, method: str, url: str, body: dict | None = None):
    """One request to the API server, made from inside node1."""
    return in_node(lab, lambda ds: ds.api.request(method, url, body=body))


def schedule_pod(lab: Lab, name: str, node: str) -> None:
    """The Pod as the scheduler leaves it for the kubelet: bound to ``node``, no IP yet."""
    api(lab, "POST", f"/api/v1/namespaces/{NAMESPACE}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx:1.25"}]}})


def annotations(lab: Lab, pod: str) -> dict:
    return api(lab, "GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}")["metadata"].get("annotations") or {}


def crd_items(lab: Lab, plural: str) -> list[dict]:
    return api(lab, "GET", f"{CRD_GROUP}/{plural}")["items"]


def kdd_netconf(lab: Lab, node: str, agent: bool) -> dict:
    """The node's calico netconf with Calico's KDD keys in place of the lab's
    calico.toml; ``socket_path`` "" turns the agent path off."""
    conf = pods.calico_netconf(lab, node, datastore_type="kubernetes",
                               kubernetes={"kubeconfig": str(kubeconfig_path(lab))}, nodename=node)
    del conf["calico_config"]
    if not agent:
        conf["socket_path"] = ""
    return conf


def ipam_check(lab: Lab, node: str) -> str:
    """``calicoctl ipam check`` run in the node (its calico.toml is the KDD one)."""
    done = lab.exec(node, ["calicoctl", "ipam", "check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- ADD, DEL --------------------------------------------------------------------------------------


def test_add_and_del_patch_the_pod_and_keep_ipam_in_crds(klab, path):
    lab = klab
    node = NODE_FOR[path]
    pod = f"web-{path}"
    schedule_pod(lab, pod, node)
    cid = secrets.token_hex(32)
    nspath = pods.create_netns(lab, f"{lab.name}-{path}")
    conf = kdd_netconf(lab, node, agent=path == "agent")
    key = f"{NAMESPACE}/{pod}"

    result = pods.calico(lab, node, "ADD", cid, nspath, pod=key, netconf=conf)
    veth = naming.host_veth_name(namespace=NAMESPACE, pod=pod)
    assert result["interfaces"][0]["name"] == veth
    (ip,) = result["ips"]
    addr = ip["address"]
    assert addr.endswith("/32") and ipaddress.ip_interface(addr).ip in ipaddress.ip_network(pods.DEFAULT_POOL_CIDR)
    host = addr.split("/")[0]

    # the Pod carries the address and the container, patched by the CNI plugin
    ann = annotations(lab, pod)
    assert (ann.get(POD_IP), ann.get(POD_IPS), ann.get(CONTAINER_ID)) == (addr, addr, cid)

    # ... so the datastore's WorkloadEndpoint (the Pod) shows them, with the cali veth
    wep_name = naming.wep_name(node, naming.K8S, "eth0", pod=pod)
    wep = in_node(lab, lambda ds: ds.get("WorkloadEndpoint", wep_name, NAMESPACE))
    assert (wep.spec.node, wep.spec.pod, wep.spec.container_id) == (node, pod, cid)
    assert wep.spec.ip_networks == (addr,) and wep.spec.interface_name == veth

    # served where the path says: the agent (its log) or the executable itself (the netconf's log)
    agent_log = lab.state_dir / "logs" / "cni-agent-node2.log"
    local_log = pods.conflist_path(lab, node).parent / "cni.log"
    served = (agent_log if path == "agent" else local_log).read_text()
    assert f"ADD {wep_name}: addresses {host}/" in served

    # the node reaches the pod through the veth's route
    res = lab.exec(node, ["ping", "-c", "2", "-i", "0.2", "-W", "2", host], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr

    # calico-ipam's objects are custom resources: the block, this node's affinity, the handle
    handle = naming.handle_id(conf["name"], cid)
    assert in_node(lab, lambda ds: ds.get("IPAMHandle", handle)).spec.handle_id == handle
    blocks = [b["spec"]["cidr"] for b in crd_items(lab, "ipamblocks")]
    (block,) = [b for b in blocks if ipaddress.ip_interface(addr).ip in ipaddress.ip_network(b)]
    affinities = [(a["spec"]["node"], a["spec"]["cidr"], a["spec"]["state"]) for a in crd_items(lab, "blockaffinities")]
    assert (node, block, "confirmed") in affinities
    assert handle in [h["spec"]["handleID"] for h in crd_items(lab, "ipamhandles")]
    out = ipam_check(lab, node)
    assert "Found 1 workload IPs." in out and "Check complete; found 0 problems." in out, out

    # CHECK with the ADD's result finds everything as ADD left it
    assert pods.calico(lab, node, "CHECK", cid, nspath, pod=key, netconf={**conf, "prevResult": result}) is None

    # a repeated ADD (the runtime retries) finds the pod's endpoint and returns its address again
    again = pods.calico(lab, node, "ADD", cid, nspath, pod=key, netconf=conf)
    assert again["ips"] == result["ips"] and again["interfaces"][0] == result["interfaces"][0]
    assert [h["spec"]["handleID"] for h in crd_items(lab, "ipamhandles")] == [handle]

    # DEL: the address is released, the annotations blanked (the container ID kept), the veth gone
    assert pods.calico(lab, node, "DEL", cid, nspath, pod=key, netconf=conf) is None
    ann = annotations(lab, pod)
    assert (ann.get(POD_IP), ann.get(POD_IPS), ann.get(CONTAINER_ID)) == ("", "", cid)
    with pytest.raises(NotFound):
        in_node(lab, lambda ds: ds.get("IPAMHandle", handle))
    assert in_node(lab, lambda ds: ds.get("WorkloadEndpoint", wep_name, NAMESPACE)).spec.ip_networks is None
    out = ipam_check(lab, node)
    assert "Found 0 workload IPs." in out and "Check complete; found 0 problems." in out, out
    assert "Found 0 handles with no matching IPs (and 0 handles with matches)." in out, out
    links = lab.exec(node, ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert veth not in links

    # a repeated DEL (the runtime retries) finds nothing to do and succeeds
    assert pods.calico(lab, node, "DEL", cid, nspath, pod=key, netconf=conf) is None
    assert annotations(lab, pod).get(POD_IP) == ""
