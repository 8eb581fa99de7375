"""The CNI plugin's network configuration and CNI_* environment: Calico's keys, and an
error that names the bad key for each way a value can be wrong."""

from __future__ import annotations

import json

import pytest

from pycalico.core.cni import netconf as nc
from pycalico.core.cni import spec
from pycalico.core.cni.spec import CniError

# 10-calico.conflist's calico entry, as Calico's installer writes it (master), with
# cniVersion and name filled in by the runtime.
CALICO_INSTALLED = {
    "cniVersion": "1.0.0",
    "name": "k8s-pod-network",
    "type": "calico",
    "log_level": "info",
    "log_file_path": "/var/log/calico/cni/cni.log",
    "datastore_type": "kubernetes",
    "nodename": "node-1",
    "mtu": 0,
    "ipam": {"type": "calico-ipam"},
    "policy": {"type": "k8s"},
    "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"},
}


def conf(**changes):
    data = json.loads(json.dumps(CALICO_INSTALLED))
    for key, value in changes.items():
        target, parts = data, key.split("__")
        for p in parts[:-1]:
            target = target.setdefault(p, {})
        if value is ...:
            target.pop(parts[-1], None)
        else:
            target[parts[-1]] = value
    return data


def error(data, plugin="calico") -> CniError:
    with pytest.raises(CniError) as info:
        nc.parse(json.dumps(data).encode(), plugin)
    return info.value


def test_calico_installed_conflist_entry_parses():
    c = nc.parse(json.dumps(CALICO_INSTALLED).encode())
    assert (c.cni_version, c.name, c.type) == ("1.0.0", "k8s-pod-network", "calico")
    assert c.ipam.type == "calico-ipam" and (c.ipam.num_v4, c.ipam.num_v6) == (1, 0)
    assert c.nodename == "node-1" and c.mtu == 0 and c.policy_type == "k8s"
    assert c.datastore_type == "kubernetes" and c.kubeconfig == "/etc/cni/net.d/calico-kubeconfig"
    assert c.datastore_env() == {"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": "/etc/cni/net.d/calico-kubeconfig"}
    assert c.socket_path is None and c.labels == ()


def test_every_calico_key_is_accepted():
    full = conf(
        mode="", vxlan_mac_prefix="0E-2A", vxlan_vni=4096, qps=5, burst=10, num_queues=2,
        nodename_file="/var/lib/calico/nodename", nodename_file_optional=True, ipam_lock_file="/tmp/l",
        etcd_endpoints="http://10.0.0.1:2379,https://10.0.0.2:2379", etcd_discovery_srv="", etcd_scheme="",
        etcd_key_file="/k", etcd_cert_file="/c", etcd_ca_cert_file="/ca", log_file_max_size=100,
        log_file_max_age=30, log_file_max_count=10, feature_control={"ip_addrs_no_ipam": False,
                                                                     "floating_ips": False},
        container_settings={"allow_ip_forwarding": True}, include_default_routes=True, device_type="veth",
        readiness_gates=[], policy_setup_timeout_seconds=0, endpoint_status_dir="/var/run/calico/endpoint-status",
        require_mtu_file=False, calico_api_group="", hostname="h", datastore_type="etcdv3",
        ipam={"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "true",
              "ipv4_pools": ["default-ipv4-ippool"], "ipv6_pools": ["fd00::/48"]},
        capabilities={"portMappings": True}, runtimeConfig={"portMappings": []}, some_future_key={"x": 1},
    )
    c = nc.parse(full)
    assert c.allow_ip_forwarding and c.include_default_routes and c.num_queues == 2
    assert (c.ipam.num_v4, c.ipam.num_v6) == (1, 1) and c.ipam.ipv6_pools == ("fd00::/48",)
    assert c.datastore_env()["ETCD_ENDPOINTS"] == "http://10.0.0.1:2379,https://10.0.0.2:2379"


@pytest.mark.parametrize("changes, code, names", [
    ({"name": ...}, spec.INVALID_NETCONF, "name: is required"),
    ({"name": "bad name!"}, spec.INVALID_NETCONF, "name: must match"),
    ({"name": 7}, spec.INVALID_NETCONF, "name: must be a string"),
    ({"cniVersion": "2.0.0"}, spec.INCOMPATIBLE_VERSION, "cniVersion: incompatible CNI version '2.0.0'"),
    ({"cniVersion": 1}, spec.DECODE_FAILURE, "cniVersion: must be a string"),
    ({"mtu": "1500"}, spec.INVALID_NETCONF, "mtu: must be an integer, got \"1500\""),
    ({"mtu": 70000}, spec.INVALID_NETCONF, "mtu: must be between 0 and 65535"),
    ({"num_queues": True}, spec.INVALID_NETCONF, "num_queues: must be an integer"),
    ({"ipam": ...}, spec.INVALID_NETCONF, "ipam.type: is required"),
    ({"ipam": "calico-ipam"}, spec.INVALID_NETCONF, "ipam: must be a JSON object"),
    ({"ipam__assign_ipv4": "yes"}, spec.INVALID_NETCONF, "ipam.assign_ipv4: must be \"true\" or \"false\", got \"yes\""),
    ({"ipam__assign_ipv6": 1}, spec.INVALID_NETCONF, "ipam.assign_ipv6: must be \"true\" or \"false\""),
    ({"ipam__assign_ipv4": "false"}, spec.INVALID_NETCONF, "at least one address family"),
    ({"ipam__ipv4_pools": "default"}, spec.INVALID_NETCONF, "ipam.ipv4_pools: must be a list of strings"),
    ({"ipam__routes": [{"dst": "nope"}]}, spec.INVALID_NETCONF, "ipam.routes[0].dst: must be a CIDR"),
    ({"ipam__routes": {"dst": "0.0.0.0/0"}}, spec.INVALID_NETCONF, "ipam.routes: must be a list"),
    ({"datastore_type": "etcd"}, spec.INVALID_NETCONF, "datastore_type: must be one of 'etcdv3', 'kubernetes'"),
    ({"etcd_endpoints": "10.0.0.1:2379"}, spec.INVALID_NETCONF, "etcd_endpoints[0]: must be an http:// or https://"),
    ({"nodename": ["a"]}, spec.INVALID_NETCONF, "nodename: must be a string"),
    ({"nodename_file_optional": "true"}, spec.INVALID_NETCONF, "nodename_file_optional: must be true or false"),
    ({"policy": {"type": 3}}, spec.INVALID_NETCONF, "policy.type: must be a string"),
    ({"kubernetes": {"kubeconfig": False}}, spec.INVALID_NETCONF, "kubernetes.kubeconfig: must be a string"),
    ({"container_settings": {"allow_ip_forwarding": "yes"}}, spec.INVALID_NETCONF,
     "container_settings.allow_ip_forwarding: must be true or false"),
    ({"feature_control": []}, spec.INVALID_NETCONF, "feature_control: must be a JSON object"),
    ({"device_type": "tap"}, spec.INVALID_NETCONF, "device_type: must be one of 'veth', 'netkit'"),
    ({"calico_config": "/nonexistent/calico.toml"}, spec.INVALID_NETCONF,
     "calico_config: must name a calico.toml that exists"),
    ({"socket_path": 5}, spec.INVALID_NETCONF, "socket_path: must be a string"),
    ({"args": {"cni": {"labels": "app=web"}}}, spec.INVALID_NETCONF, "args.cni.labels: must be a list"),
    ({"args": {"cni": {"labels": [{"key": "app"}]}}}, spec.INVALID_NETCONF, "args.cni.labels[0]: must be"),
    ({"args": {"cni": {"labels": {"app": 1}}}}, spec.INVALID_NETCONF, "args.cni.labels.app: must be a string"),
    ({"prevResult": []}, spec.INVALID_NETCONF, "prevResult: must be a JSON object"),
    ({"runtimeConfig": "x"}, spec.INVALID_NETCONF, "runtimeConfig: must be a JSON object"),
    ({"cni.dev/valid-attachments": [{"ifname": "eth0"}]}, spec.INVALID_NETCONF,
     "cni.dev/valid-attachments[0]: must be"),
])
def test_each_bad_field_is_named(changes, code, names):
    err = error(conf(**changes))
    assert err.code == code
    assert names in err.msg, err.msg


def test_not_json_and_not_an_object():
    with pytest.raises(CniError) as info:
        nc.parse(b"{not json")
    assert info.value.code == spec.DECODE_FAILURE and "not valid JSON" in info.value.msg
    with pytest.raises(CniError) as info:
        nc.parse(b"[1, 2]")
    assert info.value.code == spec.DECODE_FAILURE


def test_empty_version_is_0_2_0_and_calico_ipam_needs_no_ipam_type():
    c = nc.parse(json.dumps({"name": "net", "type": "calico-ipam"}).encode(), "calico-ipam")
    assert c.cni_version == "0.2.0" and c.ipam.type == ""


def test_labels_in_both_forms_and_attachments():
    listed = nc.parse(conf(args={"cni": {"labels": [{"key": "app", "value": "web"}, {"key": "tier", "value": "fe"}]}}))
    mapped = nc.parse(conf(args={"cni": {"labels": {"app": "web", "tier": "fe"}}}))
    assert listed.labels == mapped.labels == (("app", "web"), ("tier", "fe"))
    gc = nc.parse(conf(**{"cniVersion": "1.1.0", "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}))
    assert gc.valid_attachments == (("c1", "eth0"),)
    assert nc.parse(conf()).valid_attachments is None


# --- the environment ------------------------------------------------------------------------------


BASE_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/var/run/netns/p",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc"}


def env_error(**changes) -> CniError:
    env = {**BASE_ENV, **changes}
    env = {k: v for k, v in env.items() if v is not None}
    with pytest.raises(CniError) as info:
        nc.parse_env(env)
    assert info.value.code == spec.INVALID_ENVIRONMENT
    return info.value


def test_environment_parses():
    e = nc.parse_env(BASE_ENV)
    assert (e.command, e.container_id, e.netns, e.ifname) == ("ADD", "abc123", "/var/run/netns/p", "eth0")
    assert e.args.is_k8s and (e.args.pod_namespace, e.args.pod_name) == ("default", "web-0")
    assert e.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert not nc.parse_env({**BASE_ENV, "CNI_ARGS": ""}).args.is_k8s


@pytest.mark.parametrize("changes, names", [
    ({"CNI_COMMAND": None}, "CNI_COMMAND: is required"),
    ({"CNI_COMMAND": "PUT"}, "CNI_COMMAND: unknown command 'PUT'"),
    ({"CNI_CONTAINERID": None}, "CNI_CONTAINERID: is required for ADD"),
    ({"CNI_NETNS": ""}, "CNI_NETNS: is required for ADD"),
    ({"CNI_IFNAME": None}, "CNI_IFNAME: is required for ADD"),
    ({"CNI_IFNAME": "a-name-longer-than-15"}, "CNI_IFNAME: 'a-name-longer-than-15' is not a valid interface name"),
    ({"CNI_IFNAME": "eth/0"}, "CNI_IFNAME"),
    ({"CNI_CONTAINERID": "-abc"}, "CNI_CONTAINERID: '-abc' must start with a letter or digit"),
    ({"CNI_ARGS": "K8S_POD_NAME"}, "CNI_ARGS: item 1 'K8S_POD_NAME' is not KEY=VALUE"),
])
def test_each_bad_variable_is_named(changes, names):
    assert names in env_error(**changes).msg


def test_del_needs_no_netns_and_version_needs_nothing():
    e = nc.parse_env({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0"})
    assert e.netns == ""
    assert nc.parse_env({"CNI_COMMAND": "VERSION"}).command == "VERSION"
    assert nc.parse_env({"CNI_COMMAND": "GC"}).command == "GC"
