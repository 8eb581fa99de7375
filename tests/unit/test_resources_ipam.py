"""The IPAM records: CRD resources and the JSON values Calico keeps in etcd."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from pycalico.core.resources import (
    BlockAffinity,
    IPAMBlock,
    IPAMConfig,
    IPAMHandle,
    ResourceError,
    load_resources,
    to_dict,
)
from pycalico.core.resources.ipam import cidr_name

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"

# A block as an older calico-node wrote it into etcd (no sequence numbers yet).
OLD_BLOCK_KEY = "/calico/ipam/v2/assignment/ipv4/block/172.20.107.192-26"
OLD_BLOCK = (
    '{"cidr":"172.20.107.192/26","affinity":"host:k8s-node3","allocations":[0'
    + ",null" * 63
    + '],"unallocated":[5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,'
    "34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,1,2,4,3],"
    '"attributes":[{"handle_id":"ipip-tunnel-addr-k8s-node3","secondary":{"node":"k8s-node3",'
    '"type":"ipipTunnelAddress"}}],"deleted":false}'
)

# The same shape as today's model.AllocationBlock marshals it.
BLOCK = {
    "cidr": "10.65.79.0/29",
    "affinity": "host:node-1",
    "allocations": [0, None, 1, None, None, None, None, None],
    "unallocated": [3, 4, 5, 6, 7, 1],
    "attributes": [
        {"handle_id": "vxlan-tunnel-addr-node-1", "secondary": {"node": "node-1", "type": "vxlanTunnelAddress"}},
        {
            "handle_id": "k8s-pod-network.9f3c2a",
            "secondary": {
                "namespace": "default",
                "node": "node-1",
                "pod": "web-0",
                "timestamp": "2024-05-01 12:00:00 +0000 UTC",
            },
        },
    ],
    "sequenceNumber": 1714564800000000003,
    "sequenceNumberForAllocation": {"0": 1714564800000000000, "2": 1714564800000000002},
    "deleted": False,
}


def test_real_old_block_from_etcd():
    block = IPAMBlock.from_etcd(OLD_BLOCK, OLD_BLOCK_KEY)
    assert block.metadata.name == "172-20-107-192-26"
    assert block.kind == "IPAMBlock" and block.api_version == "crd.projectcalico.org/v1"
    assert block.host == "k8s-node3"
    assert block.spec.allocations[0] == 0 and block.spec.allocations[1:] == (None,) * 63
    assert block.spec.unallocated[-4:] == (1, 2, 4, 3)
    (attr,) = block.spec.attributes
    assert attr.handle == "ipip-tunnel-addr-k8s-node3"
    assert attr.secondary == {"node": "k8s-node3", "type": "ipipTunnelAddress"}
    assert block.spec.sequence_number is None
    assert block.etcd_key() == OLD_BLOCK_KEY
    assert block.ip(0) == ipaddress.ip_address("172.20.107.192")


def test_old_block_rewritten_as_calico_writes_it_today():
    value = IPAMBlock.from_etcd(OLD_BLOCK, OLD_BLOCK_KEY).to_etcd()
    original = json.loads(OLD_BLOCK)
    assert {k: v for k, v in value.items() if k in original} == original
    assert value["sequenceNumber"] == 0 and value["sequenceNumberForAllocation"] is None
    assert IPAMBlock.from_etcd(json.dumps(value)).to_etcd() == value


def test_block_etcd_round_trip():
    block = IPAMBlock.from_etcd(json.dumps(BLOCK).encode())
    assert block.to_etcd() == BLOCK
    assert block.spec.sequence_number_for_allocation == {"0": 1714564800000000000, "2": 1714564800000000002}
    assert block.ordinal("10.65.79.2") == 2
    with pytest.raises(ValueError):
        block.ordinal("10.65.80.1")


def test_block_crd_and_etcd_agree():
    crd = next(r for r in load_resources((MANIFESTS / "ipam.yaml").read_text()) if r.kind == "IPAMBlock")
    again = IPAMBlock.from_etcd(crd.to_etcd())
    assert again.spec == crd.spec
    assert to_dict(again)["spec"] == to_dict(crd)["spec"]


def test_new_block_is_all_free():
    block = IPAMBlock.new("10.0.0.0/30", affinity="host:n1", sequence_number=7)
    assert block.to_etcd() == {
        "cidr": "10.0.0.0/30",
        "affinity": "host:n1",
        "allocations": [None, None, None, None],
        "unallocated": [0, 1, 2, 3],
        "attributes": [],
        "sequenceNumber": 7,
        "sequenceNumberForAllocation": {},
        "deleted": False,
    }
    assert block.problems() == []


def test_legacy_host_affinity_and_null_attributes():
    value = {
        "cidr": "10.244.2.64/30",
        "hostAffinity": "node-2",
        "strictAffinity": False,
        "allocations": [None, None, None, None],
        "unallocated": [0, 1, 2, 3],
        "attributes": [{"handle_id": None, "secondary": None}],
    }
    block = IPAMBlock.from_etcd(value)
    assert block.host == "node-2"
    assert block.to_etcd()["attributes"] == [{"handle_id": None, "secondary": None}]


def test_ipv6_block_key():
    block = IPAMBlock.new("fd00:10:244::/122")
    assert block.metadata.name == "fd00-10-244---122"
    assert block.etcd_key() == "/calico/ipam/v2/assignment/ipv6/block/fd00:10:244::-122"


def test_block_etcd_value_with_an_unknown_key_is_refused():
    with pytest.raises(ResourceError, match="unknown key 'owner'"):
        IPAMBlock.from_etcd(BLOCK | {"owner": "x"})
    with pytest.raises(ResourceError, match="invalid JSON"):
        IPAMBlock.from_etcd("{nope")


def test_block_affinity_etcd():
    key = "/calico/ipam/v2/host/node-1/ipv4/block/10.65.79.0-26"
    aff = BlockAffinity.from_etcd('{"state":"confirmed","deleted":false}', key)
    assert aff.metadata.name == "node-1-10-65-79-0-26" == BlockAffinity.name_for("node-1", "10.65.79.0/26")
    assert (aff.spec.state, aff.spec.node, aff.spec.cidr, aff.spec.deleted) == (
        "confirmed",
        "node-1",
        "10.65.79.0/26",
        "false",
    )
    assert aff.etcd_key() == key
    assert aff.to_etcd() == {"state": "confirmed", "deleted": False}


def test_block_affinity_ipv6_and_pending():
    key = "/calico/ipam/v2/host/n1/ipv6/block/fd00::-122"
    aff = BlockAffinity.from_etcd({"state": "pending"}, key)
    assert aff.spec.cidr == "fd00::/122"
    assert aff.etcd_key() == key
    with pytest.raises(ResourceError, match="not a block affinity key"):
        BlockAffinity.from_etcd({"state": "pending"}, "/calico/ipam/v2/handle/x")
    with pytest.raises(ResourceError, match="must be one of confirmed, pending, pendingDeletion"):
        BlockAffinity.from_etcd({"state": "taken"}, key)


def test_handle_etcd():
    key = "/calico/ipam/v2/handle/k8s-pod-network.9f3c2a"
    handle = IPAMHandle.from_etcd('{"block":{"10.65.79.0/26":2},"deleted":false}', key)
    assert handle.spec.handle_id == "k8s-pod-network.9f3c2a"
    assert handle.spec.block == {"10.65.79.0/26": 2}
    assert handle.etcd_key() == key
    assert handle.to_etcd() == {"block": {"10.65.79.0/26": 2}, "deleted": False}


def test_ipam_config_etcd():
    config = IPAMConfig.from_etcd('{"strict_affinity":true,"maxBlocksPerHost":4}')
    assert (config.spec.strict_affinity, config.spec.auto_allocate_blocks, config.max_blocks) == (True, False, 4)
    assert config.to_etcd() == {"strict_affinity": True, "maxBlocksPerHost": 4}
    assert config.etcd_key() == "/calico/ipam/v2/config"
    default = IPAMConfig.default()
    assert default.to_etcd() == {"auto_allocate_blocks": True}
    assert default.max_blocks == 20
    assert IPAMConfig.from_etcd(default.to_etcd()).spec == default.spec


def test_ipam_config_kind_names():
    crd, v3 = [r for r in load_resources((MANIFESTS / "ipam.yaml").read_text()) if isinstance(r, IPAMConfig)]
    assert (crd.kind, crd.api_version) == ("IPAMConfig", "crd.projectcalico.org/v1")
    assert (v3.kind, v3.api_version) == ("IPAMConfiguration", "projectcalico.org/v3")
    assert v3.to_etcd() == {"strict_affinity": True, "maxBlocksPerHost": 4}


def test_cidr_name():
    assert cidr_name("10.0.0.0/26") == "10-0-0-0-26"
    assert cidr_name("fd00::/122") == "fd00---122"
