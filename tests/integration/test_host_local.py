"""host-local mode: ``usePodCidr`` / ``usePodCidrIPv6`` replaced by the Node's pod CIDRs
read from a real etcd, then the real host-local binary (Debian's
containernetworking-plugins) run with its data directory in the test's tmp dir."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pycalico.core.cni.invoke import find_in_path
from pycalico.core.resources import load_resources
from pycalico.plugins.ipam.host_local import (
    NAME,
    HostLocalIPAM,
    PluginError,
    delegate,
    node_name,
    replace_pod_cidrs,
)

CNI_BIN = "/usr/lib/cni"


@pytest.fixture(autouse=True)
def host_local_binary():
    if not os.access(f"{CNI_BIN}/host-local", os.X_OK):
        pytest.fail(f"{CNI_BIN}/host-local is missing (Debian package containernetworking-plugins)")


def netconf(data_dir: Path, ipam: dict | None = None, **extra) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico",
        "datastore_type": "etcdv3",
        "nodename": "node-1",
        "ipam": {"type": "host-local", "subnet": "usePodCidr", "dataDir": str(data_dir), **(ipam or {})},
        **extra,
    }


def env(command: str, container: str = "c0ffee01", **extra) -> dict:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": f"/var/run/netns/{container}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"/nonexistent{os.pathsep}{CNI_BIN}",
        "CNI_ARGS": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-{container}",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **extra,
    }


def add_node(store, name="node-1", pod_cidrs=("10.244.1.0/24",)):
    status = f"status: {{podCIDRs: [{', '.join(repr(c) for c in pod_cidrs)}]}}\n" if pod_cidrs else ""
    (node,) = load_resources(f"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\n"
                             f"spec: {{}}\n{status}")
    return store.create(node)


def held(data_dir: Path, network: str = "k8s-pod-network") -> dict[str, str]:
    """host-local's files: address -> container ID."""
    d = data_dir / network
    if not d.exists():
        return {}
    return {p.name: p.read_text().splitlines()[0] for p in d.iterdir()
            if not p.name.startswith("last_reserved_ip") and p.name != "lock"}


# --- the substitution alone ------------------------------------------------------------------------


def test_replace_pod_cidrs_in_ipam_and_ranges():
    calls = []

    def lookup():
        calls.append(1)
        return "10.244.1.0/24", "fd00:1::/64"

    original = {
        "name": "net",
        "ipam": {
            "type": "host-local",
            "subnet": "USEPODCIDR",  # compared case-insensitively, as Calico's EqualFold
            "ranges": [[{"subnet": "usePodCidr", "rangeStart": "x"}], [{"subnet": "usePodCidrIPv6"}],
                       [{"subnet": "192.0.2.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "custom": {"kept": True},
        },
        "other": [1, 2],
    }
    before = json.dumps(original)
    out = replace_pod_cidrs(original, lookup)
    assert json.dumps(original) == before  # a copy is changed
    assert out["ipam"]["subnet"] == "10.244.1.0/24"
    assert out["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24", "rangeStart": "x"}],
                                     [{"subnet": "fd00:1::/64"}], [{"subnet": "192.0.2.0/24"}]]
    assert out["ipam"]["custom"] == {"kept": True} and out["other"] == [1, 2]
    assert calls == [1]  # looked up once
    assert replace_pod_cidrs({"ipam": {"type": "host-local", "subnet": "10.0.0.0/8"}}, lambda: 1 / 0) == {
        "ipam": {"type": "host-local", "subnet": "10.0.0.0/8"}}  # nothing asked for: no lookup

    with pytest.raises(PluginError) as err:
        replace_pod_cidrs({"ipam": {"subnet": "usePodCidrIPv6"}}, lambda: ("10.0.0.0/24", ""))
    assert err.value.msg == "usePodCidrIPv6 found but there is no IPv6 CIDR configured" and err.value.code == 999
    with pytest.raises(PluginError, match="^usePodCidr found but there is no IPv4 CIDR configured$"):
        replace_pod_cidrs({"ipam": {"subnet": "usePodCidr"}}, lambda: ("", "fd00::/64"))
    with pytest.raises(PluginError, match="^failed to parse host-local IPAM ranges section; was expecting a list"):
        replace_pod_cidrs({"ipam": {"ranges": {"a": 1}}}, lambda: ("", ""))
    with pytest.raises(PluginError, match="^failed to parse host-local IPAM data; was expecting a dict, not: <nil>"):
        replace_pod_cidrs({}, lambda: ("", ""))


def test_node_name_follows_calicos_order(tmp_path):
    f = tmp_path / "nodename"
    f.write_text("from-file\n")
    assert node_name({"kubernetes": {"node_name": "k"}, "nodename": "n"}) == "k"
    assert node_name({"nodename": "n", "nodename_file": str(f)}) == "n"
    assert node_name({"nodename_file": str(f), "hostname": "h"}) == "from-file"
    assert node_name({"nodename_file": str(tmp_path / "none"), "hostname": "h"}) == "h"


# --- the real plugin -------------------------------------------------------------------------------


def test_add_and_del_with_the_nodes_pod_cidr(etcd_datastore, tmp_path):
    add_node(etcd_datastore)
    data = tmp_path / "host-local"
    conf = netconf(data)
    result = delegate(conf, env("ADD"), datastore=etcd_datastore)
    assert result["cniVersion"] == "1.0.0"
    (ip,) = result["ips"]
    assert ip["address"] == "10.244.1.2/24" and ip["gateway"] == "10.244.1.1"
    assert held(data) == {"10.244.1.2": "c0ffee01"}
    second = delegate(conf, env("ADD", "c0ffee02"), datastore=etcd_datastore)
    assert second["ips"][0]["address"] == "10.244.1.3/24"
    assert conf["ipam"]["subnet"] == "usePodCidr"  # the caller's config is left alone

    # DEL needs no datastore: host-local releases by container ID, any valid subnet does.
    assert delegate(conf, env("DEL")) == {}
    assert held(data) == {"10.244.1.3": "c0ffee02"}
    assert delegate(conf, env("DEL")) == {}  # again: nothing to do, not an error
    assert delegate(conf, env("DEL", "c0ffee02")) == {}
    assert held(data) == {}


def test_dual_stack_ranges(etcd_datastore, tmp_path):
    add_node(etcd_datastore, pod_cidrs=("10.244.7.0/24", "fd00:244:7::/64"))
    data = tmp_path / "hl"
    conf = netconf(data, {"ranges": [[{"subnet": "usePodCidr"}], [{"subnet": "usePodCidrIPv6"}]]})
    del conf["ipam"]["subnet"]
    result = delegate(conf, env("ADD"), datastore=etcd_datastore)
    assert [i["address"] for i in result["ips"]] == ["10.244.7.2/24", "fd00:244:7::2/64"]
    assert delegate(conf, env("DEL")) == {}
    assert held(data) == {}


def test_errors_tell_the_operator(etcd_datastore, tmp_path):
    data = tmp_path / "hl"
    add_node(etcd_datastore, "bare", pod_cidrs=())
    with pytest.raises(PluginError) as err:
        delegate(netconf(data, nodename="bare"), env("ADD"), datastore=etcd_datastore, node="bare")
    assert err.value.code == 999
    assert err.value.msg.startswith("no podCidr for node bare: usePodCidr takes the node's pod CIDRs from the "
                                    "Calico Node's status.podCIDRs")
    assert "set status.podCIDRs on the Node (calicoctl apply) or give host-local an explicit subnet" in err.value.msg
    assert err.value.result() == {"cniVersion": "1.0.0", "code": 999, "msg": err.value.msg}
    with pytest.raises(PluginError, match='^nodes "ghost" not found$'):
        delegate(netconf(data), env("ADD"), datastore=etcd_datastore, node="ghost")
    add_node(etcd_datastore, "v4only", pod_cidrs=("10.244.9.0/24",))
    with pytest.raises(PluginError, match="^usePodCidrIPv6 found but there is no IPv6 CIDR configured$"):
        delegate(netconf(data, {"subnet": "usePodCidrIPv6"}), env("ADD"), datastore=etcd_datastore, node="v4only")
    add_node(etcd_datastore, "twice", pod_cidrs=("10.244.9.0/24", "10.244.10.0/24"))
    with pytest.raises(PluginError, match="^ClusterCIDR contains two ranges of the same type$"):
        delegate(netconf(data), env("ADD"), datastore=etcd_datastore, node="twice")
    assert held(data) == {}


def test_the_plugins_own_errors_pass_through(etcd_datastore, tmp_path):
    add_node(etcd_datastore, pod_cidrs=("10.244.3.0/30",))  # .1 is the gateway: one address to give
    data = tmp_path / "hl"
    conf = netconf(data)
    assert delegate(conf, env("ADD", "a1"), datastore=etcd_datastore)["ips"][0]["address"] == "10.244.3.2/30"
    with pytest.raises(PluginError) as err:
        delegate(conf, env("ADD", "a2"), datastore=etcd_datastore)
    assert (err.value.code, err.value.msg) == (
        999, "failed to allocate for range 0: no IP addresses available in range set: 10.244.3.1-10.244.3.2")

    with pytest.raises(PluginError, match=r'^failed to find plugin "host-local" in path \[/nowhere /either\]$'):
        delegate(conf, {**env("ADD"), "CNI_PATH": "/nowhere:/either"}, datastore=etcd_datastore)
    with pytest.raises(PluginError, match="^IPAM config missing 'type' key$"):
        delegate({"ipam": {}}, env("ADD"))


def test_the_datastore_is_opened_from_the_netconf(etcd_server, etcd_datastore, tmp_path):
    """What the CNI plugin does when it hands over only the netconf: Calico's
    datastore_type / etcd_endpoints and node name from the config."""
    add_node(etcd_datastore, "node-9", pod_cidrs=("10.244.9.0/24",))
    conf = netconf(tmp_path / "hl", nodename="node-9", etcd_endpoints=etcd_server.endpoint)
    result = delegate(conf, env("ADD"))
    assert result["ips"][0]["address"] == "10.244.9.2/24"
    with pytest.raises(PluginError) as err:
        delegate({**conf, "etcd_endpoints": "http://127.0.0.1:1"}, env("ADD", "other"))
    assert err.value.code == 999 and "\n" not in err.value.msg


def test_calico_toml_selects_host_local(etcd_server, etcd_datastore, tmp_path):
    from pycalico.core import config as cfg
    from pycalico.core.plugins import Plugins

    add_node(etcd_datastore, "node-1", pod_cidrs=("10.244.1.0/24", "fd00:1::/64"))
    path = tmp_path / "calico.toml"
    path.write_text(f'node_name = "node-1"\n\n[datastore]\ntype = "etcd"\n\n[datastore.etcd]\n'
                    f'endpoints = ["{etcd_server.endpoint}"]\n\n[ipam]\ntype = "{NAME}"\n')
    config = cfg.read(path)
    plugins = Plugins.load(config, str(path), slots=("datastore", "ipam"))
    ipam = plugins.ipam(etcd_datastore)
    assert isinstance(ipam, HostLocalIPAM) and ipam.node == "node-1"
    assert ipam.pod_cidrs() == ["10.244.1.0/24", "fd00:1::/64"]
    result = ipam.delegate(netconf(tmp_path / "hl", nodename="ignored"), env("ADD"))
    assert result["ips"][0]["address"] == "10.244.1.2/24"
    assert HostLocalIPAM(etcd_datastore, "ghost").pod_cidrs() == []
    assert find_in_path("host-local", CNI_BIN) == f"{CNI_BIN}/host-local"
    assert shutil.which("host-local", path=CNI_BIN)
