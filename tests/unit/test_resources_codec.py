"""The v3 resources: loading manifests, defaults, round trips, the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pycalico.core.resources import (
    KINDS,
    FelixConfiguration,
    GlobalNetworkPolicy,
    IPPool,
    NetworkPolicy,
    ResourceError,
    dump_resources,
    from_dict,
    kind_info,
    load_resource,
    load_resources,
    to_dict,
)
from pycalico.core.resources.codec import YamlLoader
from pycalico.core.resources.ippool import IPPoolSpec
from pycalico.core.resources.meta import ObjectMeta

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"
FILES = sorted(MANIFESTS.glob("*.yaml"))


def raw_documents(path: Path) -> list[dict]:
    return [d for d in yaml.load_all(path.read_text(), Loader=YamlLoader) if d is not None]


def assert_kept(original, dumped, path="") -> None:
    """Every key of ``original`` is in ``dumped`` with the same value (defaults may be added)."""
    if isinstance(original, dict):
        assert isinstance(dumped, dict), path
        for k, v in original.items():
            assert k in dumped, f"{path}.{k} was dropped"
            assert_kept(v, dumped[k], f"{path}.{k}")
    elif isinstance(original, list):
        assert isinstance(dumped, list) and len(dumped) == len(original), path
        for i, (a, b) in enumerate(zip(original, dumped, strict=True)):
            assert_kept(a, b, f"{path}[{i}]")
    else:
        assert original == dumped, f"{path}: {original!r} became {dumped!r}"


def test_every_kind_has_a_sample_manifest():
    kinds = {r.kind for f in FILES for r in load_resources(f.read_text(), str(f))}
    assert kinds == set(KINDS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_sample_manifest_loads_unchanged(path):
    resources = load_resources(path.read_text(), str(path))
    assert [r.kind for r in resources] == [d["kind"] for d in raw_documents(path)]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_round_trip_keeps_every_field(path):
    resources = load_resources(path.read_text(), str(path))
    text = dump_resources(resources)
    again = load_resources(text)
    assert again == resources
    for original, dumped in zip(raw_documents(path), yaml.load_all(text, Loader=YamlLoader), strict=True):
        assert_kept(original, dumped)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_json_round_trip(path):
    resources = load_resources(path.read_text(), str(path))
    text = dump_resources(resources, fmt="json")
    assert load_resources(text) == resources
    for original, dumped in zip(
        raw_documents(path), [json.loads(dump_resources([r], "json")) for r in resources], strict=True
    ):
        assert_kept(original, dumped)


def test_without_defaults_nothing_is_added():
    path = MANIFESTS / "ippool.yaml"
    resources = load_resources(path.read_text(), defaults=False)
    assert [to_dict(r) for r in resources] == raw_documents(path)


# --- defaults ------------------------------------------------------------------------


def pool(**spec) -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "pool1"}, "spec": spec}


def test_ippool_defaults_ipv4():
    spec = from_dict(pool(cidr="10.0.0.0/16")).spec
    assert spec.block_size == 26
    assert spec.ipip_mode == "Never" and spec.vxlan_mode == "Never"
    assert spec.nat_outgoing is False and spec.disabled is False and spec.disable_bgp_export is False
    assert spec.node_selector == "all()"
    assert spec.allowed_uses == ("Workload", "Tunnel")
    assert spec.assignment_mode == "Automatic"


def test_ippool_defaults_ipv6_block_size():
    assert from_dict(pool(cidr="fd00:1::/48")).spec.block_size == 122


def test_ippool_explicit_values_win_over_defaults():
    spec = from_dict(pool(cidr="10.0.0.0/16", blockSize=24, nodeSelector="zone == 'a'", ipipMode="Always")).spec
    assert (spec.block_size, spec.node_selector, spec.ipip_mode) == (24, "zone == 'a'", "Always")


def test_defaults_are_idempotent():
    for path in FILES:
        for r in load_resources(path.read_text()):
            assert r.with_defaults() == r


def gnp(**spec) -> dict:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "p"},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("rules", "types"),
    [
        ({}, ("Ingress",)),
        ({"ingress": [{"action": "Allow"}]}, ("Ingress",)),
        ({"egress": [{"action": "Allow"}]}, ("Egress",)),
        ({"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}, ("Ingress", "Egress")),
    ],
)
def test_policy_types_default(rules, types):
    assert from_dict(gnp(**rules)).spec.types == types
    np = {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "p"}, "spec": rules}
    assert from_dict(np).spec.types == types


def test_explicit_policy_types_are_kept():
    assert from_dict(gnp(types=["Egress"], ingress=[{"action": "Allow"}])).spec.types == ("Egress",)


def test_policy_tier_defaults_to_default():
    assert from_dict(gnp()).spec.tier == "default"


def test_namespaced_kind_defaults_to_namespace_default():
    np = from_dict({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "p"}})
    assert np.metadata.namespace == "default"
    assert np.key == ("default", "p")


def test_tier_default_action_defaults_to_deny():
    tier = from_dict(
        {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"}, "spec": {"order": 5}}
    )
    assert tier.spec.default_action == "Deny"


def test_felix_write_defaults():
    spec = from_dict(
        {"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration", "metadata": {"name": "default"}}
    ).spec
    assert (spec.floating_ips, spec.bpf_connect_time_load_balancing, spec.bpf_host_networked_nat_without_ctlb) == (
        "Disabled",
        "TCP",
        "Enabled",
    )
    assert spec.reporting_interval is None  # everything else stays unset


# --- inputs --------------------------------------------------------------------------

TWO_POOLS = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: a}
spec: {cidr: 10.1.0.0/16}
---
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: b}
spec: {cidr: 10.2.0.0/16}
"""


def test_multi_document_yaml_skips_empty_documents():
    assert [r.name for r in load_resources(TWO_POOLS)] == ["a", "b"]


def test_list_kind_with_items():
    text = """
apiVersion: v1
kind: List
items:
  - apiVersion: projectcalico.org/v3
    kind: IPPool
    metadata: {name: a}
    spec: {cidr: 10.1.0.0/16}
  - apiVersion: projectcalico.org/v3
    kind: HostEndpoint
    metadata: {name: h}
    spec: {node: n1, interfaceName: eth0}
"""
    assert [r.kind for r in load_resources(text)] == ["IPPool", "HostEndpoint"]


def test_typed_list_items_inherit_the_kind():
    text = json.dumps(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPoolList",
            "metadata": {},
            "items": [{"metadata": {"name": "a"}, "spec": {"cidr": "10.1.0.0/16"}}],
        }
    )
    (res,) = load_resources(text)
    assert isinstance(res, IPPool) and res.api_version == "projectcalico.org/v3"


def test_json_array_of_resources():
    docs = [pool(cidr="10.1.0.0/16"), gnp()]
    assert [r.kind for r in load_resources(json.dumps(docs))] == ["IPPool", "GlobalNetworkPolicy"]


def test_json_object():
    (res,) = load_resources(json.dumps(pool(cidr="10.1.0.0/16")))
    assert res.spec.cidr == "10.1.0.0/16"


def test_errors_of_a_list_name_the_item():
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": [pool(cidr="10.1.0.0/16"), pool(cidr="x")]})
    with pytest.raises(ResourceError) as err:
        load_resources(text, "pools.json")
    assert err.value.lines == ["pools.json item 2, IPPool \"pool1\": spec.cidr: 'x' is not a valid IP address or CIDR"]


def test_timestamps_stay_strings():
    (info,) = load_resources((MANIFESTS / "clusterinformation.yaml").read_text())
    assert info.metadata.creation_timestamp == "2024-05-01T12:00:00Z"


def test_port_ranges_are_not_base_60_numbers():
    text = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  ingress:
    - action: Allow
      protocol: TCP
      destination: {ports: [8000:8050]}
"""
    (p,) = load_resources(text)
    assert p.spec.ingress[0].destination.ports == ("8000:8050",)


def test_dump_yaml_is_multi_document_and_json_a_list():
    resources = load_resources(TWO_POOLS)
    assert dump_resources(resources).count("---") == 1
    body = json.loads(dump_resources(resources, "json"))
    assert body["kind"] == "List" and len(body["items"]) == 2
    assert dump_resources([]) == ""
    with pytest.raises(ValueError):
        dump_resources(resources, "toml")


def test_load_resource_and_to_dict():
    res = load_resource(pool(cidr="10.3.0.0/16"))
    assert to_dict(res)["spec"]["blockSize"] == 26
    assert list(to_dict(res)) == ["apiVersion", "kind", "metadata", "spec"]


def test_objects_built_in_python_dump_with_calico_keys():
    res = IPPool(metadata=ObjectMeta(name="p"), spec=IPPoolSpec(cidr="10.0.0.0/8", disable_bgp_export=True))
    assert to_dict(res) == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": "p"},
        "spec": {"cidr": "10.0.0.0/8", "disableBGPExport": True},
    }
    assert res.problems() == []


def test_a_bad_value_built_in_python_raises_at_once():
    with pytest.raises(ValueError, match="must be one of Always, CrossSubnet, Never"):
        IPPoolSpec(cidr="10.0.0.0/8", ipip_mode="sometimes")


# --- the registry ---------------------------------------------------------------------

EXPECTED = {
    "IPPool": ("ippools", False),
    "IPReservation": ("ipreservations", False),
    "BGPConfiguration": ("bgpconfigurations", False),
    "BGPPeer": ("bgppeers", False),
    "Node": ("nodes", False),
    "WorkloadEndpoint": ("workloadendpoints", True),
    "HostEndpoint": ("hostendpoints", False),
    "NetworkPolicy": ("networkpolicies", True),
    "GlobalNetworkPolicy": ("globalnetworkpolicies", False),
    "Tier": ("tiers", False),
    "Profile": ("profiles", False),
    "NetworkSet": ("networksets", True),
    "GlobalNetworkSet": ("globalnetworksets", False),
    "FelixConfiguration": ("felixconfigurations", False),
    "ClusterInformation": ("clusterinformations", False),
    "KubeControllersConfiguration": ("kubecontrollersconfigurations", False),
    "CalicoNodeStatus": ("caliconodestatuses", False),
    "IPAMBlock": ("ipamblocks", False),
    "BlockAffinity": ("blockaffinities", False),
    "IPAMHandle": ("ipamhandles", False),
    "IPAMConfiguration": ("ipamconfigs", False),
    "IPAMConfig": ("ipamconfigs", False),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_registry(kind):
    info = kind_info(kind)
    assert (info.plural, info.namespaced) == EXPECTED[kind]
    assert kind in info.aliases


def test_registry_api_versions():
    assert kind_info("IPPool").api_version == "projectcalico.org/v3"
    assert "crd.projectcalico.org/v1" in kind_info("IPPool").api_versions
    assert kind_info("IPAMBlock").api_version == "crd.projectcalico.org/v1"
    assert kind_info("IPAMHandle").api_version == "crd.projectcalico.org/v1"
    assert kind_info("Node").api_versions == ("projectcalico.org/v3",)
    assert kind_info(FelixConfiguration).cls is FelixConfiguration
    assert kind_info("IPAMConfig").cls is kind_info("IPAMConfiguration").cls


def test_registry_unknown_kind():
    with pytest.raises(ResourceError, match="unknown kind 'Pool'"):
        kind_info("Pool")


def test_crd_api_version_is_accepted_and_kept():
    doc = pool(cidr="10.0.0.0/16") | {"apiVersion": "crd.projectcalico.org/v1"}
    res = from_dict(doc)
    assert res.api_version == "crd.projectcalico.org/v1"
    assert to_dict(res)["apiVersion"] == "crd.projectcalico.org/v1"


def test_resource_identity_helpers():
    (np,) = [r for r in load_resources((MANIFESTS / "networkpolicy.yaml").read_text()) if r.name == "web-ingress"]
    assert isinstance(np, NetworkPolicy)
    assert (np.kind, np.name, np.namespace, np.key) == ("NetworkPolicy", "web-ingress", "web", ("web", "web-ingress"))
    (g, _) = load_resources((MANIFESTS / "globalnetworkpolicy.yaml").read_text())
    assert isinstance(g, GlobalNetworkPolicy) and g.key == ("", "allow-tcp-6379")
