"""The calico CNI executable in a lab: real namespaces, the lab's etcd, the real
``calico`` executable run inside a node's namespace as a runtime runs it.

node1 has no CNI agent (the executable serves itself, in process); node2 runs the agent
(``pycalico.core.cni.server``), so the fast path is used there. Tests parametrised over
``path`` run once on each.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time

import pytest
from lab_fixtures import lab_for

from pycalico.core.lab import Lab, netns, pods
from pycalico.core.lab.pods import CniFailed

pytestmark = pytest.mark.lab

NODE_FOR = {"local": "node1", "agent": "node2"}


@pytest.fixture(scope="module")
def clab(tmp_path_factory):
    with lab_for(tmp_path_factory, "cni-lab", nodes=3) as lab:
        pods.ensure_default_pool(lab)
        pods.start_cni_agent(lab, "node2")
        yield lab


@pytest.fixture(params=["local", "agent"])
def path(request):
    return request.param


# --- helpers ---------------------------------------------------------------------------------------


def container(lab: Lab, tag: str) -> tuple[str, str]:
    """A new container ID and a fresh network namespace (recorded in the lab)."""
    cid = secrets.token_hex(32)
    return cid, pods.create_netns(lab, f"{lab.name}-{tag}")


def ipam_call(lab: Lab, fn, node: str = "node1"):
    from pycalico.plugins.ipam.calico_ipam import IPAM

    return pods.with_datastore(lab, node, lambda ds: fn(IPAM(ds, node)))


def get(lab: Lab, kind: str, name: str, namespace: str | None = None):
    from pycalico.core.datastore import NotFound

    def read(ds):
        try:
            return ds.get(kind, name, namespace)
        except NotFound:
            return None

    return pods.with_datastore(lab, "node1", read)


def in_use(lab: Lab) -> int:
    return ipam_call(lab, lambda ipam: ipam.check().in_use)


def node_sh(lab: Lab, node: str, *argv: str, check: bool = True) -> str:
    res = lab.exec(node, list(argv), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{argv} in {node}: {res.stderr}")
    return res.stdout


def ns_sh(netns_path: str, *argv: str) -> str:
    return subprocess.run(netns.exec_argv(os.path.basename(netns_path), list(argv)), capture_output=True,
                          text=True, check=True).stdout


def veth_of(namespace: str, pod: str) -> str:
    return "cali" + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def add(lab, node, cid, nspath, pod, **netconf):
    conf = pods.calico_netconf(lab, node, **netconf)
    return pods.calico(lab, node, "ADD", cid, nspath, pod=pod, netconf=conf)


def delete(lab, node, cid, nspath, pod, **netconf):
    conf = pods.calico_netconf(lab, node, **netconf)
    return pods.calico(lab, node, "DEL", cid, nspath, pod=pod, netconf=conf)


# --- ADD ---------------------------------------------------------------------------------------------


def test_add_wires_the_pod_as_calico_does(clab, path):
    node = NODE_FOR[path]
    pod = f"web-0{path[0]}"
    cid, nspath = container(clab, f"w{path[0]}")
    labels = {"cni": {"labels": [{"key": "app", "value": "web"}]}}
    result = add(clab, node, cid, nspath, f"default/{pod}", args=labels)
    veth = veth_of("default", pod)
    assert len(veth) == 15

    # the result: CNI 1.0.0, [host side, container side], the /32 on interface 1
    assert result["cniVersion"] == "1.0.0"
    assert result["interfaces"][0] == {"name": veth, "mac": "ee:ee:ee:ee:ee:ee"}
    eth0 = result["interfaces"][1]
    assert eth0["name"] == "eth0" and eth0["sandbox"] == nspath
    (ip,) = result["ips"]
    assert ip["interface"] == 1 and ip["address"].endswith("/32")
    addr = ip["address"].split("/")[0]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]

    # the container side
    assert f"inet {addr}/32" in ns_sh(nspath, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    routes = ns_sh(nspath, "ip", "-4", "route")
    assert "default via 169.254.1.1 dev eth0" in routes
    assert any(line.startswith("169.254.1.1 dev eth0") and "scope link" in line for line in routes.splitlines())
    assert eth0["mac"] in ns_sh(nspath, "ip", "-o", "link", "show", "eth0")
    assert ns_sh(nspath, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "0"

    # the host side
    link = node_sh(clab, node, "ip", "-o", "link", "show", veth)
    assert "ee:ee:ee:ee:ee:ee" in link and "UP" in link
    route = node_sh(clab, node, "ip", "-4", "route", "show", addr)
    assert f"{addr} dev {veth}" in route and "scope link" in route
    for key, want in (("conf/{}/proxy_arp", "1"), ("neigh/{}/proxy_delay", "0"), ("conf/{}/forwarding", "1"),
                      ("conf/{}/route_localnet", "1")):
        assert node_sh(clab, node, "cat", f"/proc/sys/net/ipv4/{key.format(veth)}").strip() == want, key

    # the WorkloadEndpoint, named and labelled as Calico does
    wep_name = f"{node}-k8s-{pod.replace('-', '--')}-eth0"
    wep = get(clab, "WorkloadEndpoint", wep_name, "default")
    assert wep is not None, wep_name
    assert wep.metadata.labels == {"app": "web", "projectcalico.org/namespace": "default",
                                   "projectcalico.org/orchestrator": "k8s", "projectcalico.org/serviceaccount": "default"}
    s = wep.spec
    assert (s.orchestrator, s.node, s.pod, s.endpoint, s.container_id) == ("k8s", node, pod, "eth0", cid)
    assert (s.interface_name, s.mac, s.ip_networks) == (veth, eth0["mac"], (f"{addr}/32",))
    # the lab's conflist has Kubernetes policy (policy.type k8s), as Calico's manifests install it
    assert (s.profiles, s.service_account_name) == (("kns.default", "ksa.default.default"), "default")

    # stored where Calico keeps it, and its address held by the handle <net>.<cid>
    keys = subprocess.run(netns.exec_argv(clab.cp_netns, [
        "etcdctl", "--endpoints", clab.etcd_endpoints[0], "get", "--keys-only", "--prefix",
        "/calico/resources/v3/projectcalico.org/workloadendpoints/default/"]),
        capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}).stdout
    assert f"/calico/resources/v3/projectcalico.org/workloadendpoints/default/{wep_name}" in keys.split()
    owner = ipam_call(clab, lambda ipam: ipam.get_assignment_attributes(addr))
    assert owner.handle_id == f"k8s-pod-network.{cid}"
    assert owner.attrs["pod"] == pod and owner.attrs["namespace"] == "default" and owner.attrs["node"] == node

    delete(clab, node, cid, nspath, f"default/{pod}")


def test_a_plain_cni_container_gets_calicos_cni_names(clab):
    cid, nspath = container(clab, "plain")
    conf = pods.calico_netconf(clab, "node1")
    result = pods.calico(clab, "node1", "ADD", cid, nspath, netconf=conf)
    assert result["interfaces"][0]["name"] == "cali" + cid[:11]
    wep = get(clab, "WorkloadEndpoint", f"node1-cni-{cid}-eth0", "default")
    assert wep.metadata.labels == {"projectcalico.org/namespace": "default", "projectcalico.org/orchestrator": "cni"}
    assert wep.spec.orchestrator == "cni" and wep.spec.pod is None
    pods.calico(clab, "node1", "DEL", cid, nspath, netconf=conf)
    assert get(clab, "WorkloadEndpoint", f"node1-cni-{cid}-eth0", "default") is None


def test_pods_on_one_node_reach_each_other_and_their_node(clab):
    a = pods.add_pod(clab, "node2", "default/ping-a", labels={"app": "a"})
    b = pods.add_pod(clab, "node2", "default/ping-b")
    try:
        assert a.ip != b.ip
        for src, dst in ((a, b.ip), (b, a.ip), (a, clab.node("node2").ip)):
            res = pods.exec_in_pod(clab, src.key, ["ping", "-c", "2", "-i", "0.2", "-W", "2", dst],
                                   capture_output=True, text=True)
            assert res.returncode == 0, f"{src.key} -> {dst}: {res.stdout}{res.stderr}"
    finally:
        pods.del_pod(clab, a.key)
        pods.del_pod(clab, b.key)
    assert not netns.exists(a.netns) and a.netns not in Lab.load(clab.name, clab.state_dir.parent).state.namespaces


def test_repeated_add_returns_the_same_result_and_allocates_nothing(clab, path):
    node = NODE_FOR[path]
    cid, nspath = container(clab, f"r{path[0]}")
    first = add(clab, node, cid, nspath, f"default/again-{path}")
    before = in_use(clab)
    second = add(clab, node, cid, nspath, f"default/again-{path}")
    assert second == first
    assert in_use(clab) == before
    held = ipam_call(clab, lambda ipam: ipam.ips_by_handle(f"k8s-pod-network.{cid}"))
    assert [str(ip) for ip in held] == [first["ips"][0]["address"].split("/")[0]]
    delete(clab, node, cid, nspath, f"default/again-{path}")


def test_a_new_sandbox_of_the_pod_replaces_the_earlier_ones_veth_and_endpoint(clab, path):
    """The runtime made a new sandbox (container) for the pod without DEL of the old one:
    the host veth has the same name, so the old one is removed, and the endpoint is
    taken over, as Calico does."""
    node = NODE_FOR[path]
    pod = f"sandbox-{path}"
    old_cid, old_ns = container(clab, f"s{path[0]}1")
    new_cid, new_ns = container(clab, f"s{path[0]}2")
    old = add(clab, node, old_cid, old_ns, f"default/{pod}")
    new = add(clab, node, new_cid, new_ns, f"default/{pod}")
    assert new["interfaces"][0]["name"] == old["interfaces"][0]["name"] == veth_of("default", pod)
    assert new["ips"] != old["ips"]  # a new container gets its own address
    assert "eth0" not in ns_sh(old_ns, "ip", "-o", "link")  # went with the old host side
    assert f"inet {new['ips'][0]['address']}" in ns_sh(new_ns, "ip", "-o", "addr", "show", "eth0")
    wep = get(clab, "WorkloadEndpoint", f"{node}-k8s-sandbox--{path}-eth0", "default")
    assert wep.spec.container_id == new_cid and list(wep.spec.ip_networks) == [new["ips"][0]["address"]]
    # The old sandbox's DEL gives its address back and leaves the new one alone.
    assert delete(clab, node, old_cid, old_ns, f"default/{pod}") is None
    assert ipam_call(clab, lambda ipam: ipam.ips_by_handle(f"k8s-pod-network.{old_cid}")) == []
    assert get(clab, "WorkloadEndpoint", f"{node}-k8s-sandbox--{path}-eth0", "default") is not None
    assert f"inet {new['ips'][0]['address']}" in ns_sh(new_ns, "ip", "-o", "addr", "show", "eth0")
    delete(clab, node, new_cid, new_ns, f"default/{pod}")


# --- DEL ---------------------------------------------------------------------------------------------


def test_del_removes_everything_and_twice_is_fine(clab, path):
    node = NODE_FOR[path]
    pod = f"gone-{path}"
    cid, nspath = container(clab, f"d{path[0]}")
    result = add(clab, node, cid, nspath, f"default/{pod}")
    addr, veth = result["ips"][0]["address"].split("/")[0], result["interfaces"][0]["name"]
    before = in_use(clab)

    assert delete(clab, node, cid, nspath, f"default/{pod}") is None
    assert node_sh(clab, node, "ip", "-o", "link", "show", veth, check=False) == ""
    assert addr not in node_sh(clab, node, "ip", "-4", "route")
    assert "eth0" not in ns_sh(nspath, "ip", "-o", "link")
    assert get(clab, "WorkloadEndpoint", f"{node}-k8s-{pod.replace('-', '--')}-eth0", "default") is None
    assert in_use(clab) == before - 1
    from pycalico.plugins.ipam.calico_ipam import NotAssigned

    with pytest.raises(NotAssigned):
        ipam_call(clab, lambda ipam: ipam.get_assignment_attributes(addr))

    # again, without the namespace, and for a container never seen: all succeed
    assert delete(clab, node, cid, nspath, f"default/{pod}") is None
    assert delete(clab, node, cid, "", f"default/{pod}") is None
    assert delete(clab, node, secrets.token_hex(8), "/var/run/netns/no-such-ns", "default/never") is None


# --- failures ------------------------------------------------------------------------------------------


def test_failed_add_leaves_nothing_behind_ipam_exhausted(clab):
    from pycalico.core.resources import load_resources

    (tiny,) = load_resources("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: tiny}\n"
                             "spec: {cidr: 10.66.0.0/30, blockSize: 30, ipipMode: Never, nodeSelector: '!all()'}\n")
    pods.with_datastore(clab, "node1", lambda ds: ds.create(tiny))
    made = []
    try:
        for i in range(4):
            cid, nspath = container(clab, f"t{i}")
            result = add(clab, "node2", cid, nspath, f"default/tiny-{i}",
                         ipam={"type": "calico-ipam", "ipv4_pools": ["tiny"]})
            made.append((cid, nspath, f"default/tiny-{i}", result))
        before = in_use(clab)
        cid, nspath = container(clab, "t4")
        with pytest.raises(CniFailed) as info:
            add(clab, "node2", cid, nspath, "default/tiny-4", ipam={"type": "calico-ipam", "ipv4_pools": ["tiny"]})
        assert info.value.error["code"] == 999
        assert "no free addresses in IP pool tiny (10.66.0.0/30: 4 of 4 in use)" in info.value.error["msg"]
        assert in_use(clab) == before
        assert node_sh(clab, "node2", "ip", "-o", "link", "show", veth_of("default", "tiny-4"), check=False) == ""
        assert get(clab, "WorkloadEndpoint", "node2-k8s-tiny--4-eth0", "default") is None
        assert "eth0" not in ns_sh(nspath, "ip", "-o", "link")
        # A repeated ADD of a pod in the full pool is still answered with its result.
        cid, nspath, pod, result = made[0]
        assert add(clab, "node2", cid, nspath, pod, ipam={"type": "calico-ipam", "ipv4_pools": ["tiny"]}) == result
        assert f"inet {result['ips'][0]['address']}" in ns_sh(nspath, "ip", "-o", "addr", "show", "eth0")
    finally:
        for cid, nspath, pod, _ in made:
            delete(clab, "node2", cid, nspath, pod, ipam={"type": "calico-ipam", "ipv4_pools": ["tiny"]})
        # Calico keeps an emptied block affine to its node; give it up before the pool goes
        ipam_call(clab, lambda ipam: ipam.release_affinity("10.66.0.0/30", "node2"), node="node2")
        pods.with_datastore(clab, "node1", lambda ds: ds.delete("IPPool", "tiny"))
        assert ipam_call(clab, lambda ipam: ipam.check()).ok


def test_failed_endpoint_write_undoes_the_address_and_the_veth(clab, path):
    node = NODE_FOR[path]
    cid, nspath = container(clab, f"f{path[0]}")
    before = in_use(clab)
    bad = {"cni": {"labels": [{"key": "app", "value": "not a valid label value!"}]}}
    with pytest.raises(CniFailed) as info:
        add(clab, node, cid, nspath, f"default/badlabel-{path}", args=bad)
    msg = info.value.error["msg"]
    assert "metadata.labels.app" in msg and "args.cni.labels" in msg and "undone" in msg
    assert in_use(clab) == before
    assert ipam_call(clab, lambda ipam: ipam.ips_by_handle(f"k8s-pod-network.{cid}")) == []
    assert node_sh(clab, node, "ip", "-o", "link", "show", veth_of("default", f"badlabel-{path}"), check=False) == ""
    assert "eth0" not in ns_sh(nspath, "ip", "-o", "link")
    assert get(clab, "WorkloadEndpoint", f"{node}-k8s-badlabel--{path}-eth0", "default") is None
    assert ipam_call(clab, lambda ipam: ipam.check()).ok


def test_errors_name_what_to_fix(clab):
    cid, nspath = container(clab, "errs")
    with pytest.raises(CniFailed) as info:
        add(clab, "node1", cid, nspath, "default/e", mtu="1500")
    assert info.value.error["code"] == 7 and info.value.error["msg"].startswith("mtu: must be an integer")
    with pytest.raises(CniFailed) as info:
        add(clab, "node2", cid, "/var/run/netns/not-there", "default/e")
    assert info.value.error["code"] == 3 and "CNI_NETNS" in info.value.error["msg"]
    with pytest.raises(CniFailed) as info:
        pods.calico(clab, "node2", "ADD", cid, nspath, ifname="much-too-long-name", pod="default/e")
    assert info.value.error["code"] == 4 and info.value.error["msg"].startswith("CNI_IFNAME")
    with pytest.raises(CniFailed) as info:
        add(clab, "node2", cid, nspath, "default/e", cniVersion="9.9.9")
    assert info.value.error["code"] == 1
    assert ipam_call(clab, lambda ipam: ipam.ips_by_handle(f"k8s-pod-network.{cid}")) == []


# --- CHECK ---------------------------------------------------------------------------------------------


def test_check_detects_a_deleted_route_and_a_repeated_add_repairs_it(clab):
    node, pod = "node2", "chk"
    cid, nspath = container(clab, "chk")
    result = add(clab, node, cid, nspath, f"default/{pod}")
    addr, veth = result["ips"][0]["address"].split("/")[0], result["interfaces"][0]["name"]
    conf = pods.calico_netconf(clab, node, prevResult=result)
    check = lambda: pods.calico(clab, node, "CHECK", cid, nspath, pod=f"default/{pod}", netconf=conf)  # noqa: E731
    assert check() is None

    node_sh(clab, node, "ip", "route", "del", f"{addr}/32", "dev", veth)
    with pytest.raises(CniFailed) as info:
        check()
    assert f"host route {addr}/32 dev {veth} scope link is missing" in info.value.error["msg"]

    assert add(clab, node, cid, nspath, f"default/{pod}")["ips"] == result["ips"]  # re-wired, same address
    assert check() is None

    ns_sh(nspath, "ip", "route", "del", "default")
    with pytest.raises(CniFailed) as info:
        check()
    assert "container route 0.0.0.0/0 via 169.254.1.1 dev eth0 is missing" in info.value.error["msg"]

    old = pods.calico_netconf(clab, node, prevResult=result, cniVersion="0.3.1")
    with pytest.raises(CniFailed) as info:
        pods.calico(clab, node, "CHECK", cid, nspath, pod=f"default/{pod}", netconf=old)
    assert info.value.error["code"] == 1
    delete(clab, node, cid, nspath, f"default/{pod}")


# --- versions, STATUS, GC ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.2.0", "0.3.1", "0.4.0"])
def test_older_runtimes_get_their_result_version(clab, version):
    cid, nspath = container(clab, f"v{version.replace('.', '')}")
    result = add(clab, "node2", cid, nspath, f"default/v{version.replace('.', '')}", cniVersion=version)
    assert result["cniVersion"] == version
    if version == "0.2.0":
        assert result["ip4"]["ip"].endswith("/32") and "interfaces" not in result
    else:
        assert result["ips"][0]["version"] == "4" and result["ips"][0]["interface"] == 1
    delete(clab, "node2", cid, nspath, f"default/v{version.replace('.', '')}", cniVersion=version)


def test_status_and_gc(clab):
    node = "node2"
    ok = pods.calico_netconf(clab, node, cniVersion="1.1.0")
    assert pods.calico(clab, node, "STATUS", "", netconf=ok) is None
    down = {k: v for k, v in ok.items() if k != "calico_config"}
    down.update(datastore_type="etcdv3", etcd_endpoints="http://198.51.100.2:1", socket_path="")
    with pytest.raises(CniFailed) as info:
        pods.calico(clab, node, "STATUS", "", netconf=down)
    assert info.value.error["code"] == 50

    keep, keep_ns = container(clab, "gck")
    lost, lost_ns = container(clab, "gcl")
    add(clab, node, keep, keep_ns, "default/gc-keep")
    lost_result = add(clab, node, lost, lost_ns, "default/gc-lost")
    gc = pods.calico_netconf(clab, node, cniVersion="1.1.0",
                             **{"cni.dev/valid-attachments": [{"containerID": keep, "ifname": "eth0"}]})
    assert pods.calico(clab, node, "GC", "", netconf=gc) is None
    assert ipam_call(clab, lambda ipam: ipam.ips_by_handle(f"k8s-pod-network.{lost}")) == []
    assert get(clab, "WorkloadEndpoint", "node2-k8s-gc--lost-eth0", "default") is None
    assert node_sh(clab, node, "ip", "-o", "link", "show", lost_result["interfaces"][0]["name"], check=False) == ""
    assert get(clab, "WorkloadEndpoint", "node2-k8s-gc--keep-eth0", "default") is not None
    assert len(ipam_call(clab, lambda ipam: ipam.ips_by_handle(f"k8s-pod-network.{keep}"))) == 1
    delete(clab, node, keep, keep_ns, "default/gc-keep")


# --- the two paths ---------------------------------------------------------------------------------------


def test_the_agent_serves_and_without_it_the_executable_serves_itself(clab):
    log = clab.state_dir / "logs" / "cni-agent-node3.log"
    local_log = pods.conflist_path(clab, "node3").parent / "cni.log"
    pid = pods.start_cni_agent(clab, "node3")
    cid, nspath = container(clab, "srv")
    add(clab, "node3", cid, nspath, "default/served")
    assert "node3-k8s-served-eth0" in log.read_text()
    assert not local_log.exists() or "served" not in local_log.read_text()
    delete(clab, "node3", cid, nspath, "default/served")

    clab.stop(pid)  # SIGTERM: the agent removes its socket
    sock_path = pods.socket_path(clab, "node3")
    assert not os.path.exists(sock_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a socket file nobody listens on
    stale.bind(sock_path)
    stale.close()
    try:
        cid, nspath = container(clab, "self")
        add(clab, "node3", cid, nspath, "default/alone")
        assert "node3-k8s-alone-eth0" in local_log.read_text()
        delete(clab, "node3", cid, nspath, "default/alone")
    finally:
        os.unlink(sock_path)


def test_chain_with_portmap_and_bandwidth_after_calico(clab):
    pod = pods.add_pod(clab, "node2", "default/srv", port_mappings=[
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        bandwidth={"ingressRate": 10_000_000, "ingressBurst": 1_000_000,
                   "egressRate": 10_000_000, "egressBurst": 1_000_000})
    server = subprocess.Popen(netns.exec_argv(pod.netns, [sys.executable, "-m", "http.server", "80",
                                                          "--bind", "0.0.0.0"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # portmap received our result and passed it on
        assert pod.result["interfaces"][0]["name"] == veth_of("default", "srv")
        assert pod.result["ips"][0]["address"] == f"{pod.ip}/32"
        nat = node_sh(clab, "node2", "iptables-save", "-t", "nat")
        assert f"{pod.ip}:80" in nat and "CNI-HOSTPORT-DNAT" in nat
        # bandwidth found the host side in our result (the interface without a sandbox)
        veth = pod.result["interfaces"][0]["name"]
        assert "tbf" in node_sh(clab, "node2", "tc", "qdisc", "show", "dev", veth)
        pods.check_pod(clab, pod.key)  # calico's CHECK with the result the chain produced
        url = f"http://{clab.node('node2').ip}:8080/"
        fetch = [sys.executable, "-c", f"import urllib.request as u; print(u.urlopen({url!r}, timeout=2).status)"]
        deadline = time.monotonic() + 10
        while True:
            res = clab.exec("node1", fetch, capture_output=True, text=True)
            if res.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert res.stdout.strip() == "200", res.stderr
    finally:
        server.kill()
        server.wait()
        pods.del_pod(clab, pod.key)
    assert f"{pod.ip}:80" not in node_sh(clab, "node2", "iptables-save", "-t", "nat")
    assert not [line for line in node_sh(clab, "node2", "ip", "-o", "link").splitlines() if ": bwp" in line]


def test_lab_cli_pod_commands(clab):
    cli = [os.path.join(os.path.dirname(sys.executable), "calico-lab")]
    where = ["--name", clab.name, "--state-dir", str(clab.state_dir.parent)]
    out = subprocess.run(cli + ["pod", "add", "node1", "default/cli-pod", "--labels", "app=cli,tier=x"] + where,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ip = out.stdout.strip()
    listed = json.loads(subprocess.run(cli + ["pod", "list", "--json"] + where, capture_output=True, text=True,
                                       check=True).stdout)
    mine = next(p for p in listed if p["pod"] == "default/cli-pod")
    assert mine["node"] == "node1" and mine["ips"] == [f"{ip}/32"] and mine["labels"] == {"app": "cli", "tier": "x"}
    shown = subprocess.run(cli + ["exec", "default/cli-pod"] + where + ["--", "ip", "-4", "-o", "addr"],
                           capture_output=True, text=True, check=True).stdout
    assert f"{ip}/32" in shown
    wep = get(clab, "WorkloadEndpoint", "node1-k8s-cli--pod-eth0", "default")
    assert wep.metadata.labels["app"] == "cli"
    assert subprocess.run(cli + ["pod", "del", "default/cli-pod"] + where, capture_output=True).returncode == 0
    bad = subprocess.run(cli + ["pod", "add", "node1", "nonamespace"] + where, capture_output=True, text=True)
    assert bad.returncode == 1 and "NAMESPACE/NAME" in bad.stderr


def test_calico_ipam_executable_and_the_datastore_test_flag(clab):
    cid = secrets.token_hex(32)
    conf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico-ipam", "nodename": "node2",
            "nodename_file_optional": True, "calico_config": clab.node("node2").config_path,
            "ipam_lock_file": str(pods.node_dir(clab, "node2") / "cni" / "ipam.lock")}
    env = pods.cni_env("ADD", cid, "/unused", "eth0", "default", "ipam-only")
    first = pods.run_plugin(clab, "node2", conf, env)  # served by node2's agent, dispatched on argv[0]
    (ip,) = first["ips"]
    assert ip["address"].endswith("/26") and "interfaces" not in first  # block-masked, as Calico returns it
    assert pods.run_plugin(clab, "node2", conf, env) == first  # the handle's address again
    owner = ipam_call(clab, lambda ipam: ipam.get_assignment_attributes(ip["address"].split("/")[0]))
    assert owner.handle_id == f"k8s-pod-network.{cid}" and owner.attrs["pod"] == "ipam-only"
    assert pods.run_plugin(clab, "node2", conf, {**env, "CNI_COMMAND": "DEL"}) is None
    assert ipam_call(clab, lambda ipam: ipam.ips_by_handle(f"k8s-pod-network.{cid}")) == []

    calico = pods._find_plugin("calico")
    ok = clab.exec("node1", [calico, "-t"], input=json.dumps(pods.calico_netconf(clab, "node1")).encode(),
                   capture_output=True)
    assert ok.returncode == 0, ok.stdout
    bad = dict(pods.calico_netconf(clab, "node1"), datastore_type="etcdv3", etcd_endpoints="http://198.51.100.2:1")
    bad.pop("calico_config")
    failed = clab.exec("node1", [calico, "-t"], input=json.dumps(bad).encode(), capture_output=True)
    assert failed.returncode == 1 and json.loads(failed.stdout)["code"] == 100


def test_host_local_takes_the_nodes_pod_cidr(clab, tmp_path):
    """ipam host-local with "usePodCidr": the real host-local plugin allocates from the
    Node's status.podCIDRs, as Calico's host-local mode does."""
    from pycalico.core.resources import load_resources

    (node,) = load_resources("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node3}\n"
                             "status: {podCIDRs: [10.67.3.0/24]}\n")
    pods.with_datastore(clab, "node1", lambda ds: ds.create(node))
    ipam = {"type": "host-local", "subnet": "usePodCidr", "dataDir": str(tmp_path / "host-local")}
    cid, nspath = container(clab, "hl")
    try:
        result = add(clab, "node3", cid, nspath, "default/hl-0", ipam=ipam)
        (ip,) = [i["address"] for i in result["ips"]]
        assert ip.startswith("10.67.3.") and ip.endswith("/32")
        assert f"inet {ip}" in ns_sh(nspath, "ip", "-o", "addr", "show", "eth0")
    finally:
        delete(clab, "node3", cid, nspath, "default/hl-0", ipam=ipam)
        pods.with_datastore(clab, "node1", lambda ds: ds.delete("Node", "node3"))
    assert not list((tmp_path / "host-local").rglob("10.67.3.*"))  # DEL gave the address back
