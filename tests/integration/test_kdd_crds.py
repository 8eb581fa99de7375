"""KDD: the CRD manifests shipped with the plugin, generated from the v3 types, and
what the API server stand-in does with them once installed."""

from __future__ import annotations

import json
import urllib.request

import pytest
import yaml
from kdd_fixtures import TOKEN

from pycalico.core.resources.codec import KINDS
from pycalico.plugins.datastore.kubernetes import ApiError, crd_manifests, crds, install_crds

# Calico's CRDs (libcalico-go/config/crd/): plural -> (kind, scope), for the kinds
# pycalico has types for.
CALICO_CRDS = {
    "bgpconfigurations": ("BGPConfiguration", "Cluster"),
    "bgppeers": ("BGPPeer", "Cluster"),
    "blockaffinities": ("BlockAffinity", "Cluster"),
    "caliconodestatuses": ("CalicoNodeStatus", "Cluster"),
    "clusterinformations": ("ClusterInformation", "Cluster"),
    "felixconfigurations": ("FelixConfiguration", "Cluster"),
    "globalnetworkpolicies": ("GlobalNetworkPolicy", "Cluster"),
    "globalnetworksets": ("GlobalNetworkSet", "Cluster"),
    "hostendpoints": ("HostEndpoint", "Cluster"),
    "ipamblocks": ("IPAMBlock", "Cluster"),
    "ipamconfigs": ("IPAMConfig", "Cluster"),
    "ipamhandles": ("IPAMHandle", "Cluster"),
    "ippools": ("IPPool", "Cluster"),
    "ipreservations": ("IPReservation", "Cluster"),
    "kubecontrollersconfigurations": ("KubeControllersConfiguration", "Cluster"),
    "networkpolicies": ("NetworkPolicy", "Namespaced"),
    "networksets": ("NetworkSet", "Namespaced"),
    "tiers": ("Tier", "Cluster"),
}


def test_shipped_manifests_are_what_the_types_generate():
    assert crds.main(["--check"]) == 0, "run: python -m pycalico.plugins.datastore.kubernetes --write"
    assert crds.shipped() == crds.generate()


def test_one_crd_per_calico_kind_with_calicos_names_and_scope():
    docs = [d for d in yaml.safe_load_all(crd_manifests()) if d]
    got = {d["spec"]["names"]["plural"]: (d["spec"]["names"]["kind"], d["spec"]["scope"]) for d in docs}
    assert got == CALICO_CRDS
    # The etcd plurals minus the kinds Kubernetes objects stand for.
    etcd_plurals = {info.plural for info in KINDS.values()}
    assert set(got) == etcd_plurals - {"nodes", "workloadendpoints", "profiles"}
    for d in docs:
        names, spec = d["spec"]["names"], d["spec"]
        assert d["metadata"]["name"] == f"{names['plural']}.crd.projectcalico.org"
        assert names["listKind"] == names["kind"] + "List" and names["singular"] == names["kind"].lower()
        assert "shortNames" not in names and spec["group"] == "crd.projectcalico.org"
        assert spec["preserveUnknownFields"] is False
        (version,) = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
        assert "x-kubernetes-preserve-unknown-fields" not in json.dumps(d)


def test_schemas_are_structural_and_follow_calicos_types():
    schema = {d["spec"]["names"]["plural"]: d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
              for d in yaml.safe_load_all(crd_manifests()) if d}
    block = schema["ipamblocks"]["properties"]["spec"]
    assert block["required"] == ["allocations", "attributes", "cidr", "strictAffinity", "unallocated"]
    assert block["properties"]["allocations"] == {"items": {"type": "integer", "nullable": True}, "type": "array"}
    assert block["properties"]["attributes"]["items"]["properties"]["handle_id"] == {"type": "string"}
    rule = schema["globalnetworkpolicies"]["properties"]["spec"]["properties"]["ingress"]["items"]
    assert rule["required"] == ["action"]
    assert rule["properties"]["protocol"] == {
        "anyOf": [{"type": "integer"}, {"type": "string"}], "pattern": "^.*", "x-kubernetes-int-or-string": True}
    assert rule["properties"]["destination"]["properties"]["ports"]["items"]["x-kubernetes-int-or-string"] is True
    assert schema["tiers"]["properties"]["spec"]["properties"]["order"] == {"type": "number"}
    assert schema["bgppeers"]["properties"]["spec"]["properties"]["asNumber"] == {"type": "integer"}
    assert schema["ippools"]["properties"]["spec"]["required"] == ["cidr"]
    assert set(schema["ippools"]["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}

    def walk(node, path):  # every object declares its fields: nothing is left open
        if isinstance(node, dict):
            if node.get("type") == "object":
                assert "properties" in node or "additionalProperties" in node or path.endswith("metadata"), path
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(schema, "")


def test_install_makes_every_crd_established_and_served(kube_apiserver, kdd_datastore):
    api = kdd_datastore.api
    for plural, (kind, scope) in CALICO_CRDS.items():
        crd = api.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.crd.projectcalico.org")
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True", plural
    served = api.request("GET", "/apis/crd.projectcalico.org/v1")
    assert {r["name"]: (r["kind"], r["namespaced"]) for r in served["resources"]} == {
        p: (k, s == "Namespaced") for p, (k, s) in CALICO_CRDS.items()}
    # Installing again updates in place.
    assert sorted(install_crds(kdd_datastore)) == sorted(f"{p}.crd.projectcalico.org" for p in CALICO_CRDS)


def test_install_accepts_a_kubernetes_api_client(kube_apiserver, kdd_kubeconfig):
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(kdd_kubeconfig))
    try:
        assert len(install_crds(api_client)) == len(CALICO_CRDS)
    finally:
        api_client.close()
    req = urllib.request.Request(kube_apiserver.url + "/apis/crd.projectcalico.org/v1/ippools",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.load(resp)["kind"] == "IPPoolList"


def test_the_server_enforces_the_generated_schema(kdd_datastore):
    api = kdd_datastore.api
    bad = {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool", "metadata": {"name": "bad"},
           "spec": {"cidr": "10.0.0.0/16", "blockSize": "big"}}
    with pytest.raises(ApiError) as info:
        api.request("POST", "/apis/crd.projectcalico.org/v1/ippools", body=bad)
    assert info.value.status == 422 and "spec.blockSize" in info.value.message
    missing = {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool", "metadata": {"name": "bad"}, "spec": {}}
    with pytest.raises(ApiError) as info:
        api.request("POST", "/apis/crd.projectcalico.org/v1/ippools", body=missing)
    assert "spec.cidr: Required value" in info.value.message
