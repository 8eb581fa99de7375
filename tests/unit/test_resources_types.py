"""Value types (numorstring), the checks, the JSON key registry and FelixConfiguration's fields."""

from __future__ import annotations

import attrs
import pytest

from pycalico.core.resources import FelixConfiguration, from_dict, to_dict
from pycalico.core.resources.base import KEYS, key
from pycalico.core.resources.felix import FIELDS, FelixConfigurationSpec, snake_name
from pycalico.core.resources.types import (
    as_number_value,
    check_net,
    duration_seconds,
    is_named_port,
    parse_cidr,
    parse_port,
    protocol_is,
    split_ip_port,
    supports_ports,
)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [(80, (80, 80)), ("80", (80, 80)), ("8000:8080", (8000, 8080)), ("http", "http"), ("my_port.1", "my_port.1")],
)
def test_ports(value, parsed):
    assert parse_port(value) == parsed


@pytest.mark.parametrize("value", [0, 65536, "0", "70000", "10:5", "0:5", "a b", "x" * 129])
def test_bad_ports(value):
    with pytest.raises(ValueError):
        parse_port(value)


def test_named_ports():
    assert is_named_port("http") and not is_named_port(80) and not is_named_port("80") and not is_named_port("1:2")


def test_protocols():
    assert supports_ports("TCP") and supports_ports(17) and supports_ports("132") and not supports_ports("ICMP")
    assert not supports_ports(None)
    assert protocol_is(1, "ICMP") and protocol_is("ICMPv6", "ICMPv6") and not protocol_is("tcp", "TCP")


@pytest.mark.parametrize(
    ("value", "number"), [(64512, 64512), ("64512", 64512), ("1.10", 65546), ("0.0", 0), (4294967295, 4294967295)]
)
def test_as_numbers(value, number):
    assert as_number_value(value) == number


@pytest.mark.parametrize("value", [-1, 4294967296, "1.65536", "1.2.3", "x"])
def test_bad_as_numbers(value):
    with pytest.raises(ValueError):
        as_number_value(value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("1m30s", 90), ("1.5h", 5400), ("250ms", 0.25), ("0", 0), ("0s", 0), ("-1s", -1), ("10us", 1e-5)],
)
def test_durations(text, seconds):
    assert duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "90", "1 m", "s", "1d", "1m30"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        duration_seconds(text)


def test_cidrs():
    addr, net = parse_cidr("10.0.0.5/24")
    assert str(addr) == "10.0.0.5" and str(net) == "10.0.0.0/24"
    assert str(parse_cidr("fd00::1")[1]) == "fd00::1/128"
    check_net("10.0.0.0/24")
    for bad in ("10.0.0.5/24", "fe80::1%eth0", "10.0.0.0/255.255.255.0", "10.0.0.0/"):
        with pytest.raises(ValueError):
            check_net(bad)


def test_peer_ip_with_port():
    assert split_ip_port("10.0.0.1:179") == ("10.0.0.1", 179)
    assert split_ip_port("[fd00::1]:1179") == ("fd00::1", 1179)
    assert split_ip_port("fd00::1") == ("fd00::1", None)


def test_calico_json_keys():
    assert key("peer_ip") == "peerIP"
    assert key("disable_bgp_export") == "disableBGPExport"
    assert key("not_icmp") == "notICMP"
    assert key("block_size") == "blockSize"
    assert key("nat_outgoing_v1") == "nat-outgoing"
    assert key("handle") == "handle_id"
    assert all(KEYS[name] != name for name in KEYS)


# --- FelixConfiguration -----------------------------------------------------------------


def test_felix_has_every_field_optional():
    fields = attrs.fields(FelixConfigurationSpec)
    assert len(fields) == len(FIELDS) >= 150
    assert all(f.default is None for f in fields)
    assert FelixConfigurationSpec() == FelixConfigurationSpec()


@pytest.mark.parametrize(
    ("json_key", "name"),
    [
        ("ipipMTU", "ipip_mtu"),
        ("vxlanMTUV6", "vxlan_mtu_v6"),
        ("bpfDSROptoutCIDRs", "bpf_dsr_optout_cidrs"),
        ("deviceRouteSourceAddressIPv6", "device_route_source_address_ipv6"),
        ("bpfMapSizeIPSets", "bpf_map_size_ip_sets"),
        ("bpfL3IfacePattern", "bpf_l3_iface_pattern"),
        ("cgroupV2Path", "cgroup_v2_path"),
        ("floatingIPs", "floating_ips"),
        ("bpfExcludeCIDRsFromNAT", "bpf_exclude_cidrs_from_nat"),
    ],
)
def test_felix_attribute_names(json_key, name):
    assert snake_name(json_key) == name
    assert key(name) == json_key


def test_every_felix_field_round_trips_through_its_key():
    samples = {bool: True, int: 7, str: "x"}
    spec = {}
    for json_key, typ, *_ in FIELDS:
        if typ in samples and json_key not in ("featureDetectOverride", "featureGates"):
            spec[json_key] = samples[typ]
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "FelixConfiguration",
        "metadata": {"name": "default"},
        "spec": spec,
    }
    res = from_dict(doc, validate=False, defaults=False)
    assert isinstance(res, FelixConfiguration)
    assert to_dict(res)["spec"] == spec
