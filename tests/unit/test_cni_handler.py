"""The handler's own logic, without namespaces: node name order, routes, results, the
agent's settings cache, and errors before any work."""

from __future__ import annotations

import json

import pytest

from pycalico.core.cni import handler as h
from pycalico.core.cni import netconf as nc
from pycalico.core.cni import spec
from pycalico.core.cni.spec import CniError
from pycalico.core.datastore import NotFound, Page


def conf(**extra) -> nc.NetConf:
    return nc.parse({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
                     "ipam": {"type": "calico-ipam"}, **extra})


def test_node_name_order(tmp_path):
    missing = str(tmp_path / "nodename")
    with pytest.raises(CniError) as info:
        h.node_name(conf(nodename="n1", nodename_file=missing))
    assert info.value.code == spec.TRY_AGAIN_LATER and info.value.msg.startswith(f"nodename_file: {missing}")
    assert h.node_name(conf(nodename="n1", nodename_file=missing, nodename_file_optional=True)) == "n1"
    (tmp_path / "nodename").write_text("from-file\n")
    assert h.node_name(conf(nodename_file=missing)) == "from-file"
    assert h.node_name(conf(nodename="n1", nodename_file=missing)) == "n1"

    class Toml:
        node_name = "from-toml"

    assert h.node_name(conf(nodename_file=missing), Toml()) == "from-toml"
    (tmp_path / "nodename").unlink()
    assert h.node_name(conf(nodename_file=missing, nodename_file_optional=True, hostname="old")) == "old"


def test_routes_and_results():
    assert h.container_routes(conf()) == [("0.0.0.0/0", ""), ("::/0", "")]
    host_local = conf(ipam={"type": "host-local", "routes": [{"dst": "10.0.0.0/8"}]})
    assert h.container_routes(host_local) == [("10.0.0.0/8", "")]
    both = conf(ipam={"type": "host-local", "routes": [{"dst": "10.0.0.0/8"}]}, include_default_routes=True)
    assert h.container_routes(both)[1:] == [("0.0.0.0/0", ""), ("::/0", "")]

    env = nc.parse_env({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/p",
                        "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"})
    ids = h.identify(conf(), env, "node1", {})
    # as IPAM returns them (block-masked, v6 first) and as the endpoint stores them: the same result
    a = h.build_result(ids, env, conf(), ["fd00::5/122", "10.65.0.5/26"], ids.host_veth, "02:00:00:00:00:01", 1440)
    b = h.build_result(ids, env, conf(), ["10.65.0.5/32", "fd00::5/128"], ids.host_veth, "02:00:00:00:00:01", 1440)
    assert a == b
    out = spec.render(a, "1.0.0")
    assert [ip["address"] for ip in out["ips"]] == ["10.65.0.5/32", "fd00::5/128"]
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"}]
    v4 = spec.render(h.build_result(ids, env, conf(), ["10.65.0.5"], "caliX", "m", 0), "1.0.0")
    assert v4["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]


class CountingStore:
    def __init__(self):
        self.calls = []

    def get(self, kind, name, namespace=None):
        self.calls.append(("get", kind))
        if kind == "IPAMConfiguration":
            raise NotFound(kind, name)
        return (kind, name)

    def list(self, kind, namespace=None, selector=None, limit=0, continue_token=None):
        self.calls.append(("list", kind))
        return Page(items=(kind,), revision=1)

    def close(self):
        self.calls.append(("close",))


def test_the_agents_settings_cache(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(h.time, "monotonic", lambda: now[0])
    ds = CountingStore()
    view = h.CachedSettings(ds, ttl=2.0)
    for _ in range(3):
        assert view.list("IPPool").items == ("IPPool",)
        assert view.get("Node", "n1") == ("Node", "n1")
        with pytest.raises(NotFound):
            view.get("IPAMConfiguration", "default")
        assert view.get("IPAMBlock", "b") == ("IPAMBlock", "b")  # never cached
    assert ds.calls.count(("list", "IPPool")) == 1 and ds.calls.count(("get", "Node")) == 1
    assert ds.calls.count(("get", "IPAMConfiguration")) == 1 and ds.calls.count(("get", "IPAMBlock")) == 3
    now[0] += 2.5
    view.list("IPPool")
    assert ds.calls.count(("list", "IPPool")) == 2
    view.invalidate()
    view.list("IPPool")
    assert ds.calls.count(("list", "IPPool")) == 3
    view.close()  # everything else goes straight through
    assert ds.calls[-1] == ("close",)


def run(env, stdin) -> tuple[int, dict]:
    reply = h.Handler().handle("calico", env, json.dumps(stdin).encode() if isinstance(stdin, dict) else stdin)
    return reply.code, json.loads(reply.stdout) if reply.stdout else {}


def test_errors_before_any_work(tmp_path):
    base = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": str(tmp_path / "gone"), "CNI_IFNAME": "eth0"}
    good = {"cniVersion": "1.0.0", "name": "net", "type": "calico", "ipam": {"type": "calico-ipam"},
            "nodename": "n1", "nodename_file_optional": True, "mtu": 1500}
    code, out = run(base, good)
    assert code == 1 and out["code"] == spec.UNKNOWN_CONTAINER and out["msg"].startswith("CNI_NETNS")
    code, out = run({**base, "CNI_COMMAND": "CHECK"}, {**good, "cniVersion": "0.3.1"})
    assert out["code"] == spec.INCOMPATIBLE_VERSION and out["cniVersion"] == "0.3.1"
    code, out = run({**base, "CNI_COMMAND": "GC"}, good)
    assert out["code"] == spec.INCOMPATIBLE_VERSION and "GC needs 1.1.0" in out["msg"]
    code, out = run(base, {**good, "device_type": "netkit"})
    assert out["code"] == spec.UNSUPPORTED_FIELD
    code, out = run({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert code == 0 and out["cniVersion"] == "0.4.0"
    code, out = run(base, b"not json")
    assert out["code"] == spec.DECODE_FAILURE
