"""pycalico.core.kube: Kubernetes objects to Calico resources, and the API server's checks
the lab applies first; the CNI's ``args.cni.ports`` that carry a pod's container ports."""

import pytest

from pycalico.core.cni import netconf as nc
from pycalico.core.cni.spec import CniError
from pycalico.core.kube import names
from pycalico.core.kube.convert import is_kubernetes, to_calico
from pycalico.core.kube.objects import ConversionError
from pycalico.core.kube.pods import endpoint_ports, workload_labels, workload_profiles
from pycalico.core.kube.validation import Invalid, admit
from pycalico.core.resources.codec import to_dict


def np(spec, name="web", namespace="shop"):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_namespace_becomes_an_allow_all_profile_with_prefixed_labels():
    obj = admit({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "red"}}})
    assert obj["metadata"]["labels"] == {"team": "red", "kubernetes.io/metadata.name": "shop"}
    profile = to_dict(to_calico(obj))
    assert profile["metadata"]["name"] == "kns.shop"
    assert profile["spec"] == {
        "ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
        "labelsToApply": {"pcns.kubernetes.io/metadata.name": "shop", "pcns.projectcalico.org/name": "shop",
                          "pcns.team": "red"}}


def test_service_account_profile_and_default_namespace():
    obj = admit({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})
    assert obj["metadata"]["namespace"] == "default"
    profile = to_calico(obj)
    assert profile.name == "ksa.default.robot"
    assert profile.spec.labels_to_apply == {"pcsa.projectcalico.org/name": "robot"}
    assert profile.spec.ingress is None and profile.spec.egress is None


def test_network_policy_conversion_as_calico_does():
    policy = to_calico(admit(np({
        "podSelector": {"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]}, {"key": "old", "operator": "DoesNotExist"}]},
        "ingress": [{"from": [{"namespaceSelector": {}}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                     "ports": [{"port": 81}, {"port": 80}, {"port": "http"}, {"protocol": "UDP", "port": 53}]}],
        "egress": [{"ports": [{"port": 8000, "endPort": 8010}]}],
    })))
    assert policy.name == "knp.default.web" and policy.metadata.namespace == "shop"
    spec = to_dict(policy)["spec"]
    assert spec["order"] == 1000.0 and spec["types"] == ["Ingress", "Egress"]  # Egress: the API server's default
    assert spec["selector"] == ("projectcalico.org/orchestrator == 'k8s' && app == 'web' && tier in { 'a', 'b' } "
                                "&& ! has(old)")
    tcp_ports = ["http", "80:81"]  # named first, numbers merged into a range
    assert spec["ingress"] == [
        {"action": "Allow", "protocol": "TCP", "destination": {"ports": tcp_ports},
         "source": {"selector": "projectcalico.org/orchestrator == 'k8s'", "namespaceSelector": "all()"}},
        {"action": "Allow", "protocol": "TCP", "destination": {"ports": tcp_ports},
         "source": {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"]}},
        {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]},
         "source": {"selector": "projectcalico.org/orchestrator == 'k8s'", "namespaceSelector": "all()"}},
        {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]},
         "source": {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"]}},
    ]
    assert spec["egress"] == [{"action": "Allow", "protocol": "TCP", "destination": {"ports": ["8000:8010"]}}]


def test_policy_types_default_like_the_api_server():
    ingress_only = admit(np({"podSelector": {}}))
    assert ingress_only["spec"]["policyTypes"] == ["Ingress"]
    explicit = admit(np({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}))
    assert to_calico(explicit).spec.types == ("Egress",)


@pytest.mark.parametrize("obj, problem", [
    (np({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
     "spec.podSelector.matchExpressions[0].values: must be non-empty with operator In"),
    (np({"ingress": [{"from": [{}]}]}), "spec.ingress[0].from[0]: must have a podSelector"),
    (np({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}]}),
     "spec.egress[0].to[0].ipBlock.except[0]: must be strictly within the cidr 10.0.0.0/8"),
    (np({"ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}), "spec.ingress[0].ports[0].endPort: needs a "
                                                                       "numeric port"),
    (np({"ingress": [{"ports": [{"port": "no_underscore"}]}]}), "spec.ingress[0].ports[0].port: a port name"),
    (np({"policyTypes": ["Both"]}), "spec.policyTypes[0]: must be Ingress or Egress"),
    (np({}, namespace="Shop"), "metadata.namespace: 'Shop' is not a valid DNS label"),
    ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}, "metadata.name: 'a.b' is not a valid DNS label"),
    ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"a": "-x"}}},
     "metadata.labels.a: label value '-x'"),
    ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "namespace": "x"}},
     "metadata.namespace: a Namespace is not namespaced"),
])
def test_the_api_servers_checks_name_the_field(obj, problem):
    with pytest.raises(Invalid) as err:
        admit(obj)
    assert any(f"{path}: {msg}".startswith(problem) for path, msg in err.value.problems), err.value.problems


def test_only_kubernetes_types_calico_reads_convert():
    assert is_kubernetes({"apiVersion": "v1"}) and not is_kubernetes({"apiVersion": "projectcalico.org/v3"})
    assert not is_kubernetes({"kind": "Namespace"})  # no apiVersion: not taken for Kubernetes
    with pytest.raises(ConversionError, match="apps/v1 Deployment: Calico converts only v1 Namespace"):
        to_calico({"apiVersion": "apps/v1", "kind": "Deployment"})


def test_pod_labels_profiles_and_ports():
    assert workload_labels({"app": "web"}, "shop", "default") == {
        "app": "web", "projectcalico.org/namespace": "shop", "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "default"}
    assert names.LABEL_SERVICE_ACCOUNT not in workload_labels({}, "shop", "s" * 63)  # too long for a label value
    assert workload_profiles("shop", "robot") == ["kns.shop", "ksa.shop.robot"]
    assert workload_profiles("shop", "") == ["kns.shop"]
    assert endpoint_ports([
        {"name": "http", "containerPort": 80},
        {"containerPort": 81},  # neither a name nor a hostPort: not on the endpoint
        {"containerPort": 82, "hostPort": 8082, "hostIP": "198.51.100.1", "protocol": "UDP"},
        {"name": "odd", "containerPort": 83, "protocol": "ICMP"},
    ]) == [{"name": "http", "protocol": "TCP", "port": 80},
           {"protocol": "UDP", "port": 82, "hostPort": 8082, "hostIP": "198.51.100.1"}]


def test_uid_conversion_is_its_own_inverse():
    uid = "01020304-0506-4708-890a-0b0c0d0e0f10"
    assert names.convert_uid(uid) == "8040c020-a060-4710-8950-d030b070f008"
    assert names.convert_uid(names.convert_uid(uid)) == uid
    assert names.convert_uid_or_none("not-a-uid") is None


def _netconf(**args):
    return {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "ipam": {"type": "calico-ipam"},
            "args": {"cni": args}}


def test_cni_takes_container_ports_in_args():
    ports = [{"name": "http", "containerPort": 80, "protocol": "TCP"}]
    assert nc.parse(_netconf(ports=ports)).ports == tuple(ports)
    assert nc.parse(_netconf()).ports == ()


@pytest.mark.parametrize("ports, message", [
    ("http=80", "args.cni.ports: must be a list"),
    ([{"name": "http"}], "args.cni.ports[0].containerPort: must be 1..65535"),
    ([{"containerPort": "80"}], "args.cni.ports[0].containerPort: must be a number"),
    ([{"containerPort": 80, "protocol": "ICMP"}], "args.cni.ports[0].protocol: must be"),
    ([{"containerPort": 80, "port": 80}], "args.cni.ports[0].port: is not a container port key"),
])
def test_cni_names_the_bad_port_field(ports, message):
    with pytest.raises(CniError) as err:
        nc.parse(_netconf(ports=ports))
    assert err.value.msg.startswith(message), err.value.msg
