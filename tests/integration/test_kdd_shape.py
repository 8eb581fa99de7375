"""KDD: custom resources have the shape Calico gives them (libcalico-go/lib/backend/k8s/
resources/resources.go, customresource.go), and objects Calico wrote read back."""

from __future__ import annotations

import json
import uuid

import attrs
import pytest

from pycalico.core.datastore import AlreadyExists, NotFound, OperationNotSupported
from pycalico.core.resources import IPAMBlock
from pycalico.core.resources.codec import load_resources, to_dict
from pycalico.plugins.datastore.kubernetes import names
from pycalico.plugins.datastore.kubernetes.convert import from_cr, to_cr

CRD = "/apis/crd.projectcalico.org/v1"


def one(text: str):
    (resource,) = load_resources(text)
    return resource


def raw(store, path: str) -> dict:
    return store.api.request("GET", CRD + path)


def test_uid_conversion_is_calicos_and_its_own_inverse():
    # conversion.ConvertUID reverses the bits of every byte but the version and variant bytes.
    assert names.convert_uid("00000000-0000-4000-8000-000000000001") == "00000000-0000-4000-8000-000000000080"
    assert names.convert_uid("01020304-0506-4708-890a-0b0c0d0e0f10") == "8040c020-a060-4710-8950-d030b070f008"
    for _ in range(20):
        uid = str(uuid.uuid4())
        assert names.convert_uid(names.convert_uid(uid)) == uid


def test_ippool_is_stored_as_calico_stores_it(kdd_datastore):
    pool = one("""
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
  labels: {env: prod, projectcalico.org/owner: ops}
  annotations: {note: hello}
spec: {cidr: 10.65.0.0/16, ipipMode: Always, natOutgoing: true}
""")
    created = kdd_datastore.create(pool)
    cr = raw(kdd_datastore, "/ippools/pool-a")
    meta = cr["metadata"]
    assert (cr["apiVersion"], cr["kind"]) == ("crd.projectcalico.org/v1", "IPPool")
    assert cr["spec"] == to_dict(pool)["spec"]
    # The v3 metadata lives in one annotation (no name for non-policies, no uid,
    # namespace or resourceVersion); the CR's own labels and annotations keep only
    # Calico's keys.
    stored = json.loads(meta["annotations"]["projectcalico.org/metadata"])
    assert stored == {"creationTimestamp": created.metadata.creation_timestamp,
                      "labels": {"env": "prod", "projectcalico.org/owner": "ops"}, "annotations": {"note": "hello"}}
    assert list(stored) == ["creationTimestamp", "labels", "annotations"]  # Go's ObjectMeta order
    assert meta["labels"] == {"projectcalico.org/owner": "ops"}
    assert set(meta["annotations"]) == {"projectcalico.org/metadata"}
    # resourceVersion is the CR's; the uid a deterministic transform of the CR's.
    assert created.metadata.resource_version == meta["resourceVersion"]
    assert created.metadata.uid == names.convert_uid(meta["uid"])
    got = kdd_datastore.get("IPPool", "pool-a")
    assert got == created and got.api_version == "projectcalico.org/v3"
    assert got.metadata.labels == {"env": "prod", "projectcalico.org/owner": "ops"}


def test_global_network_policy_keeps_its_v3_name(kdd_datastore):
    """Calico v3.32+ names the backing object as the v3 policy (no ``default.``
    prefix) and records the name in the metadata annotation."""
    gnp = one("""
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-dns}
spec:
  order: 100
  selector: all()
  egress:
  - action: Allow
    protocol: UDP
    destination: {ports: [53]}
""")
    created = kdd_datastore.create(gnp)
    cr = raw(kdd_datastore, "/globalnetworkpolicies/allow-dns")
    assert (cr["apiVersion"], cr["kind"], cr["metadata"]["name"]) == (
        "crd.projectcalico.org/v1", "GlobalNetworkPolicy", "allow-dns")
    assert json.loads(cr["metadata"]["annotations"]["projectcalico.org/metadata"]) == {
        "name": "allow-dns", "creationTimestamp": created.metadata.creation_timestamp}
    assert cr["spec"] == {"tier": "default", "order": 100.0, "selector": "all()", "types": ["Egress"],
                          "egress": [{"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}}]}
    tiered = one("""
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.block-icmp}
spec: {tier: security, selector: all(), ingress: [{action: Deny, protocol: ICMP}]}
""")
    kdd_datastore.create(tiered)
    assert raw(kdd_datastore, "/globalnetworkpolicies/security.block-icmp")["spec"]["tier"] == "security"
    assert [p.name for p in kdd_datastore.list("GlobalNetworkPolicy").items] == ["allow-dns", "security.block-icmp"]


def test_policies_calico_stored_under_tiered_names_read_back(kdd_datastore):
    """Before v3.32 Calico stored default-tier policies as ``default.<name>``: they read
    under their v3 name, and get/update/delete by that name reach them."""
    legacy = {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "default.allow-web",
            "namespace": "production",
            "annotations": {"projectcalico.org/metadata": json.dumps(
                {"name": "allow-web", "creationTimestamp": "2024-05-01T12:00:00Z", "labels": {"app": "web"}})},
        },
        "spec": {"tier": "default", "selector": "app == 'web'", "types": ["Ingress"],
                 "ingress": [{"action": "Allow"}]},
    }
    kdd_datastore.api.request("POST", CRD + "/namespaces/production/networkpolicies", body=legacy)
    got = kdd_datastore.get("NetworkPolicy", "allow-web", "production")
    assert got.name == "allow-web" and got.metadata.creation_timestamp == "2024-05-01T12:00:00Z"
    assert got.metadata.labels == {"app": "web"}
    assert [p.name for p in kdd_datastore.list("NetworkPolicy", "production").items] == ["allow-web"]
    updated = kdd_datastore.update(attrs.evolve(got, spec=attrs.evolve(got.spec, order=5.0)))
    assert updated.spec.order == 5.0 and updated.name == "allow-web"
    assert raw(kdd_datastore, "/namespaces/production/networkpolicies/default.allow-web")["spec"]["order"] == 5.0
    assert kdd_datastore.delete("NetworkPolicy", "allow-web", "production").spec.order == 5.0
    with pytest.raises(NotFound):
        kdd_datastore.get("NetworkPolicy", "allow-web", "production")


def test_ipam_records_are_stored_with_calicos_names_and_go_zero_values(kdd_datastore):
    block = IPAMBlock.new("10.65.0.64/26", affinity="host:node-1")
    assert block.name == names.block_name("10.65.0.64/26") == "10-65-0-64-26"
    kdd_datastore.create(block)
    cr = raw(kdd_datastore, "/ipamblocks/10-65-0-64-26")
    assert cr["spec"]["strictAffinity"] is False  # required, written as Go writes a false bool
    assert cr["spec"]["unallocated"] == list(range(64)) and cr["spec"]["allocations"] == [None] * 64
    # IPAM records get no creationTimestamp from the client (Calico's IPAM bypasses clientv3).
    assert json.loads(cr["metadata"]["annotations"]["projectcalico.org/metadata"]) == {"creationTimestamp": None}
    affinity = one("""
apiVersion: crd.projectcalico.org/v1
kind: BlockAffinity
metadata: {name: node-1-10-65-0-64-26}
spec: {state: pending, node: node-1, cidr: 10.65.0.64/26}
""")
    assert affinity.name == names.affinity_name("node-1", "10.65.0.64/26")
    kdd_datastore.create(affinity)
    assert raw(kdd_datastore, "/blockaffinities/node-1-10-65-0-64-26")["spec"]["deleted"] == "false"
    config = one("""
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata: {name: default}
spec: {strictAffinity: false, autoAllocateBlocks: true}
""")
    kdd_datastore.create(config)
    cr = raw(kdd_datastore, "/ipamconfigs/default")
    assert cr["kind"] == "IPAMConfig" and cr["spec"] == {"strictAffinity": False, "autoAllocateBlocks": True}
    got = kdd_datastore.get("IPAMConfig", "default")
    assert (got.kind, got.api_version) == ("IPAMConfiguration", "projectcalico.org/v3")


def test_as_numbers_are_written_as_integers(kdd_datastore):
    peer = one("""
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 192.0.2.1, asNumber: "1.10"}
""")
    kdd_datastore.create(peer)
    assert raw(kdd_datastore, "/bgppeers/tor")["spec"]["asNumber"] == 65546
    assert kdd_datastore.get("BGPPeer", "tor").spec.as_number == 65546


def test_conversion_round_trips_owner_references_and_unknown_fields():
    owner_uid = str(uuid.uuid4())
    pool = one(f"""
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: p
  ownerReferences: [{{apiVersion: projectcalico.org/v3, kind: Tier, name: t, uid: {owner_uid}}}]
spec: {{cidr: 10.0.0.0/24}}
""")
    cr = to_cr(pool)
    (ref,) = json.loads(cr["metadata"]["annotations"]["projectcalico.org/metadata"])["ownerReferences"]
    assert ref["apiVersion"] == "crd.projectcalico.org/v1" and ref["uid"] == names.convert_uid(owner_uid)
    cr["metadata"].update(resourceVersion="7", uid=str(uuid.uuid4()))
    cr["spec"]["someFutureField"] = {"x": 1}  # written by a newer Calico: pruned on read
    back = from_cr(cr, "IPPool")
    assert back.metadata.owner_references[0].uid == owner_uid
    assert back.metadata.owner_references[0].api_version == "projectcalico.org/v3"
    assert back.spec.cidr == "10.0.0.0/24" and back.metadata.resource_version == "7"


def test_namespaced_resources_need_their_namespace(kdd_datastore):
    netset = one("""
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: nets, namespace: nowhere}
spec: {nets: [192.0.2.0/24]}
""")
    with pytest.raises(NotFound, match="namespace nowhere does not exist"):
        kdd_datastore.create(netset)
    kdd_datastore.create(attrs.evolve(netset, metadata=attrs.evolve(netset.metadata, namespace="staging")))
    with pytest.raises(AlreadyExists, match="NetworkSet staging/nets"):
        kdd_datastore.create(attrs.evolve(netset, metadata=attrs.evolve(netset.metadata, namespace="staging")))
    with pytest.raises(ValueError, match="namespace is required"):
        kdd_datastore.get("NetworkSet", "nets")


def test_a_kind_whose_crd_is_missing(kdd_datastore):
    kdd_datastore.api.request("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/tiers.crd.projectcalico.org")
    assert kdd_datastore.list("Tier").items == ()  # as Calico: an empty list
    with pytest.raises(NotFound, match="is its CRD installed"):
        kdd_datastore.get("Tier", "default")
    tier = one("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t1}\nspec: {order: 10}\n")
    with pytest.raises(NotFound, match="is its CRD installed"):
        kdd_datastore.create(tier)


def test_read_only_kinds_say_so(kdd_datastore):
    with pytest.raises(OperationNotSupported, match="Profile kns.default"):
        kdd_datastore.delete("Profile", "kns.default")
    with pytest.raises(OperationNotSupported, match="Node n1"):
        kdd_datastore.delete("Node", "n1")
