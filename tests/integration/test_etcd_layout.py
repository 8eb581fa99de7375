"""The etcd plugin writes and reads Calico's key layout and values (real etcd)."""

from __future__ import annotations

import base64
import json
import logging

import attrs
import pytest

from pycalico.core import config as cfg
from pycalico.core.datastore import NotFound
from pycalico.core.plugins import Plugins
from pycalico.core.resources import BlockAffinity, IPAMBlock, IPAMConfig, IPAMHandle, load_resources
from pycalico.plugins.datastore.etcd import EtcdDatastore, Options

RES = "/calico/resources/v3/projectcalico.org"

# As calicoctl (libcalico-go clientv3 + etcdv3 backend) stores them: json.Marshal of the
# v3 object, kind first, no resourceVersion.
CALICOCTL_IPPOOL = (
    '{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"default-ipv4-ippool",'
    '"uid":"8b6c4a9e-3f0e-4c59-9d53-5a2a7c3f1e11","creationTimestamp":"2024-05-01T10:00:00Z"},'
    '"spec":{"cidr":"192.168.0.0/16","vxlanMode":"Never","ipipMode":"Always","natOutgoing":true,'
    '"blockSize":26,"nodeSelector":"all()","allowedUses":["Workload","Tunnel"]}}'
)
# A block as an older calico-node wrote it (tests/unit/test_resources_ipam.py).
BLOCK_KEY = "/calico/ipam/v2/assignment/ipv4/block/172.20.107.192-26"
BLOCK = (
    '{"cidr":"172.20.107.192/26","affinity":"host:k8s-node3","allocations":[0' + ",null" * 63
    + '],"unallocated":[' + ",".join(str(i) for i in range(1, 64)) + '],'
    '"attributes":[{"handle_id":"ipip-tunnel-addr-k8s-node3","secondary":{"node":"k8s-node3",'
    '"type":"ipipTunnelAddress"}}],"deleted":false}'
)
AFFINITY_KEY = "/calico/ipam/v2/host/k8s-node3/ipv4/block/172.20.107.192-26"
HANDLE_KEY = "/calico/ipam/v2/handle/ipip-tunnel-addr-k8s-node3"


def one(text: str):
    (resource,) = load_resources(text)
    return resource


WEP = """
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-k8s-web--0-eth0
  namespace: prod
  labels: {app: web, projectcalico.org/namespace: prod, projectcalico.org/orchestrator: k8s}
spec:
  orchestrator: k8s
  node: node1
  pod: web-0
  endpoint: eth0
  containerID: 2b4f3a
  ipNetworks: [10.65.0.5/32]
  profiles: [kns.prod]
  interfaceName: cali0123456789a
"""

POOL = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool-a}
spec: {cidr: 10.65.0.0/16, ipipMode: Always}
"""


def raw(server, key: str) -> tuple[dict, int]:
    """The value at ``key`` as JSON and its mod_revision, read with etcdctl."""
    out = json.loads(server.etcdctl("get", key, "-w", "json"))
    (kv,) = out["kvs"]
    return json.loads(base64.b64decode(kv["value"])), kv["mod_revision"]


def test_create_lands_at_calicos_key_with_calicos_json(etcd_server, etcd_datastore):
    wep = etcd_datastore.create(one(WEP))
    pool = etcd_datastore.create(one(POOL))
    assert etcd_server.etcdctl("get", "--prefix", "--keys-only", "/calico/").split() == [
        f"{RES}/ippools/pool-a",
        f"{RES}/workloadendpoints/prod/node1-k8s-web--0-eth0",
    ]
    value, mod_revision = raw(etcd_server, f"{RES}/workloadendpoints/prod/node1-k8s-web--0-eth0")
    assert list(value) == ["kind", "apiVersion", "metadata", "spec"]
    assert value["kind"] == "WorkloadEndpoint" and value["apiVersion"] == "projectcalico.org/v3"
    meta = value["metadata"]
    assert "resourceVersion" not in meta and "selfLink" not in meta
    assert meta["name"] == "node1-k8s-web--0-eth0" and meta["namespace"] == "prod"
    assert meta["uid"] == wep.metadata.uid and len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z") and meta["creationTimestamp"] == wep.metadata.creation_timestamp
    assert value["spec"]["ipNetworks"] == ["10.65.0.5/32"] and value["spec"]["interfaceName"] == "cali0123456789a"
    assert wep.metadata.resource_version == str(mod_revision)
    pool_value, pool_rev = raw(etcd_server, f"{RES}/ippools/pool-a")
    assert "namespace" not in pool_value["metadata"]
    assert pool_value["spec"]["ipipMode"] == "Always" and pool_value["spec"]["blockSize"] == 26
    assert pool.metadata.resource_version == str(pool_rev)


def test_resource_version_is_the_keys_mod_revision(etcd_server, etcd_datastore):
    created = etcd_datastore.create(one(POOL))
    etcd_server.etcdctl("put", "/calico/unrelated", "x")  # moves the store's revision, not the key's
    got = etcd_datastore.get("IPPool", "pool-a")
    assert got.metadata.resource_version == created.metadata.resource_version
    assert got.metadata.resource_version == str(raw(etcd_server, f"{RES}/ippools/pool-a")[1])


def test_values_written_by_calico_read_back_typed(etcd_server, etcd_datastore):
    etcd_server.etcdctl("put", f"{RES}/ippools/default-ipv4-ippool", CALICOCTL_IPPOOL)
    etcd_server.etcdctl("put", BLOCK_KEY, BLOCK)
    etcd_server.etcdctl("put", AFFINITY_KEY, '{"state":"confirmed","deleted":false}')
    etcd_server.etcdctl("put", HANDLE_KEY, '{"block":{"172.20.107.192/26":1},"deleted":false}')
    etcd_server.etcdctl("put", "/calico/ipam/v2/config", '{"strict_affinity":true,"auto_allocate_blocks":true}')

    pool = etcd_datastore.get("IPPool", "default-ipv4-ippool")
    assert str(pool.spec.cidr) == "192.168.0.0/16" and pool.spec.ipip_mode == "Always" and pool.spec.nat_outgoing
    assert pool.metadata.uid == "8b6c4a9e-3f0e-4c59-9d53-5a2a7c3f1e11"
    assert pool.metadata.resource_version == str(raw(etcd_server, f"{RES}/ippools/default-ipv4-ippool")[1])

    block = etcd_datastore.get("IPAMBlock", "172-20-107-192-26")
    assert isinstance(block, IPAMBlock) and block.host == "k8s-node3"
    assert block.spec.attributes[0].handle == "ipip-tunnel-addr-k8s-node3"
    affinity = etcd_datastore.get("BlockAffinity", "k8s-node3-172-20-107-192-26")
    assert isinstance(affinity, BlockAffinity)
    spec = affinity.spec
    assert (spec.state, spec.node, spec.cidr) == ("confirmed", "k8s-node3", "172.20.107.192/26")
    handle = etcd_datastore.get("IPAMHandle", "ipip-tunnel-addr-k8s-node3")
    assert isinstance(handle, IPAMHandle) and handle.spec.block == {"172.20.107.192/26": 1}
    config = etcd_datastore.get("IPAMConfiguration", "default")
    assert isinstance(config, IPAMConfig) and config.spec.strict_affinity is True

    snap = etcd_datastore.snapshot()
    assert sorted((r.kind, r.name) for r in snap.resources) == [
        ("BlockAffinity", "k8s-node3-172-20-107-192-26"),
        ("IPAMBlock", "172-20-107-192-26"),
        ("IPAMConfiguration", "default"),
        ("IPAMHandle", "ipip-tunnel-addr-k8s-node3"),
        ("IPPool", "default-ipv4-ippool"),
    ]


def test_ipam_records_are_written_at_ipam_keys_in_calicos_form(etcd_server, etcd_datastore):
    block = IPAMBlock.new("10.65.1.0/26", affinity="host:node-2", sequence_number=7)
    affinity = one(
        """
apiVersion: projectcalico.org/v3
kind: BlockAffinity
metadata: {name: node-2-10-65-1-0-26}
spec: {state: pending, node: node-2, cidr: 10.65.1.0/26, deleted: "false"}
"""
    )
    handle = one(
        """
apiVersion: crd.projectcalico.org/v1
kind: IPAMHandle
metadata: {name: k8s-pod-network.abc}
spec: {handleID: k8s-pod-network.abc, block: {10.65.1.0/26: 2}}
"""
    )
    for record in (block, affinity, handle, IPAMConfig.default()):
        etcd_datastore.create(record)
        value, _ = raw(etcd_server, record.etcd_key())
        assert value == record.to_etcd()
    assert raw(etcd_server, "/calico/ipam/v2/host/node-2/ipv4/block/10.65.1.0-26")[0] == {
        "state": "pending",
        "deleted": False,
    }
    stored = etcd_datastore.get("BlockAffinity", "node-2-10-65-1-0-26")
    confirmed = etcd_datastore.update(_with_state(stored, "confirmed"))
    assert raw(etcd_server, stored.etcd_key())[0]["state"] == "confirmed"
    assert confirmed.metadata.resource_version != stored.metadata.resource_version
    assert [r.name for r in etcd_datastore.list("IPAMBlock").items] == ["10-65-1-0-26"]
    etcd_datastore.delete("IPAMHandle", "k8s-pod-network.abc")
    assert etcd_server.etcdctl("get", handle.etcd_key()) == ""


def _with_state(affinity, state):
    return attrs.evolve(affinity, spec=attrs.evolve(affinity.spec, state=state))


def test_undecodable_values_are_skipped_and_logged(etcd_server, etcd_datastore, caplog):
    etcd_datastore.create(one(POOL))
    etcd_server.etcdctl("put", f"{RES}/ippools/broken", "{not json")
    etcd_server.etcdctl("put", f"{RES}/ippools/wrong-type", '{"spec":{"blockSize":"big"}}')
    etcd_server.etcdctl("put", "/calico/felix/v2/no-region/host/node1/status", '{"time":"x"}')
    etcd_server.etcdctl("put", f"{RES}/bgpfilters/f1", "{}")  # a kind pycalico does not model
    with caplog.at_level(logging.WARNING, logger="pycalico.plugins.datastore.etcd"):
        snap = etcd_datastore.snapshot()
    assert [r.name for r in snap.resources] == ["pool-a"]
    logged = caplog.text
    assert f"{RES}/ippools/broken" in logged and f"{RES}/ippools/wrong-type" in logged
    assert "felix" not in logged
    assert [r.name for r in etcd_datastore.list("IPPool").items] == ["pool-a"]
    with pytest.raises(NotFound, match="does not decode"):
        etcd_datastore.get("IPPool", "broken")


def test_plugin_is_configured_from_calico_toml(etcd_server, tmp_path):
    text = f"""
[datastore]
type = "etcd"

[datastore.etcd]
endpoints = ["{etcd_server.endpoint}"]
timeout_seconds = 3
"""
    plugins = Plugins.load(cfg.parse(text), slots=("datastore",))
    assert plugins.config.datastore.options == Options(endpoints=(etcd_server.endpoint,), timeout_seconds=3.0)
    store = plugins.datastore()
    try:
        assert isinstance(store, EtcdDatastore)
        assert store.snapshot().resources == ()
    finally:
        plugins.unconfigure()
    assert store.conn.closed


def test_bad_options_are_reported_at_their_toml_paths(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    text = f"""
[datastore]
type = "etcd"

[datastore.etcd]
endpoints = ["https://10.0.0.1:2379", "etcd:2379", "http://10.0.0.2:2379/v3"]
cert_file = "{cert}"
username = "calico"
"""
    with pytest.raises(cfg.ConfigError) as info:
        Plugins.load(cfg.parse(text), slots=("datastore",), configure=False)
    lines = info.value.lines
    assert any(line.startswith("datastore.etcd.endpoints[1]: 'etcd:2379' must start with http") for line in lines)
    assert any(line.startswith("datastore.etcd.endpoints[2]: ") and "without a path" in line for line in lines)
    assert any(line.startswith("datastore.etcd.key_file: is required when cert_file is set") for line in lines)
    assert any(line.startswith("datastore.etcd.password: is required when username is set") for line in lines)
    with pytest.raises(cfg.ConfigError, match=r"datastore.etcd.timeout_seconds: must be between"):
        Plugins.load(cfg.parse('[datastore]\ntype="etcd"\n[datastore.etcd]\ntimeout_seconds=0\n'),
                     slots=("datastore",), configure=False)
