"""Calico's names: WorkloadEndpoints (``libcalico-go/lib/names``), host veths
(``workload_endpoint_default.go``), IPAM handles, against Calico's own examples."""

from __future__ import annotations

import hashlib

import pytest

from pycalico.core.cni import naming
from pycalico.core.cni.handler import identify
from pycalico.core.cni import netconf as nc


@pytest.mark.parametrize("args, name", [
    # the reference's example: node node-1, pod web-0
    (("node-1", "k8s", "eth0", {"pod": "web-0"}), "node--1-k8s-web--0-eth0"),
    # names.go's comment: node1, pod mypod-1, eth0
    (("node1", "k8s", "eth0", {"pod": "mypod-1"}), "node1-k8s-mypod--1-eth0"),
    (("node1", "cni", "eth0", {"container_id": "abcdef0123"}), "node1-cni-abcdef0123-eth0"),
    (("node1", "cni", "eth-1", {"container_id": "a-b"}), "node1-cni-a--b-eth--1"),
    (("node1", "libnetwork", "ep1", {}), "node1-libnetwork-libnetwork-ep1"),
    (("node1", "mesos", "eth0", {"workload": "w-1"}), "node1-mesos-w--1-eth0"),
])
def test_workload_endpoint_names(args, name):
    node, orch, endpoint, kw = args
    assert naming.wep_name(node, orch, endpoint, **kw) == name
    segments = naming.parse_wep_name(name)
    assert segments[0] == node and segments[1] == orch and segments[-1] == endpoint


@pytest.mark.parametrize("kw, problem", [
    ({"pod": "-web"}, "pod: '-web' must not begin with a '-'"),
    ({"pod": "web-"}, "pod: 'web-' must not end with a '-'"),
    ({"pod": ""}, "pod: must be set"),
])
def test_segments_may_not_start_or_end_with_a_dash(kw, problem):
    with pytest.raises(naming.BadName) as info:
        naming.wep_name("node1", "k8s", "eth0", **kw)
    assert str(info.value).startswith(problem)


def test_host_veth_names():
    digest = hashlib.sha1(b"default.web-0").hexdigest()
    veth = naming.host_veth_name(namespace="default", pod="web-0", container_id="ignored")
    assert veth == "cali" + digest[:11] and len(veth) == 15
    # FELIX_INTERFACEPREFIX: the first of a comma list
    assert naming.veth_prefix({"FELIX_INTERFACEPREFIX": "tap,cali"}) == "tap"
    assert naming.veth_prefix({}) == "cali"
    assert naming.host_veth_name(namespace="default", pod="web-0", prefix="tap") == "tap" + digest[:11]
    # not Kubernetes: cali + the first 11 characters of the container ID
    assert naming.host_veth_name(container_id="0123456789abcdef") == "cali0123456789a"
    assert naming.host_veth_name(container_id="short") == "calishort"


def test_handles():
    assert naming.handle_id("k8s-pod-network", "c0ffee") == "k8s-pod-network.c0ffee"
    assert naming.legacy_handle_id("k8s", "default", "web-0", "c0ffee") == "default.web-0"
    assert naming.legacy_handle_id("cni", "default", "", "c0ffee") == "c0ffee"


def _conf(**extra):
    return nc.parse({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
                     "ipam": {"type": "calico-ipam"}, **extra})


def test_identify_k8s_and_cni():
    k8s = nc.parse_env({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/n", "CNI_IFNAME": "eth0",
                        "CNI_ARGS": "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0"})
    ids = identify(_conf(), k8s, "node-1", {})
    assert (ids.orchestrator, ids.namespace, ids.pod) == ("k8s", "prod", "web-0")
    assert ids.wep_name == "node--1-k8s-web--0-eth0"
    assert ids.host_veth == "cali" + hashlib.sha1(b"prod.web-0").hexdigest()[:11]
    assert (ids.handle, ids.legacy_handle) == ("k8s-pod-network.c1", "prod.web-0")

    cni = nc.parse_env({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "0123456789abcdef", "CNI_NETNS": "/n",
                        "CNI_IFNAME": "eth0"})
    ids = identify(_conf(), cni, "node1", {})
    assert (ids.orchestrator, ids.namespace, ids.pod) == ("cni", "default", "")
    assert ids.wep_name == "node1-cni-0123456789abcdef-eth0" and ids.host_veth == "cali0123456789a"
    # the namespace may come from a label, as Calico takes it from Mesos labels
    labelled = _conf(args={"cni": {"labels": {"projectcalico.org/namespace": "team-a"}}})
    assert identify(labelled, cni, "node1", {}).namespace == "team-a"
