"""The vxlan and ipip plugins' calico.toml tables, and the VTEP MAC Calico derives from a
node name."""

import pytest

from pycalico.core import config as cfg
from pycalico.core.resources import load_resource
from pycalico.plugins.routing import ipip, vxlan


def bind(text):
    plugins = {"vxlan": vxlan.plugin, "ipip": ipip.plugin}
    return cfg.bind_plugins(
        cfg.parse(text, "calico.toml"),
        installed=lambda slot: sorted(plugins) if slot == "routing" else [],
        schema=lambda slot, name: plugins[name].pycalico_config_schema(slot=slot, name=name),
        source="calico.toml",
        slots=("routing",),
    ).routing.options


def errors(text):
    with pytest.raises(cfg.ConfigError) as info:
        bind(text)
    return info.value.lines


def test_tables_default_to_felix_configuration_and_take_what_is_set():
    assert bind('[routing]\ntype = "vxlan"\n') == vxlan.Options(mtu=None, vni=None, port=None)
    assert bind('[routing]\ntype = "vxlan"\n[routing.vxlan]\nmtu = 0\nvni = 4097\nport = 8472\n') == vxlan.Options(
        mtu=0, vni=4097, port=8472
    )
    assert bind('[routing]\ntype = "ipip"\n[routing.ipip]\nmtu = 1400\n') == ipip.Options(mtu=1400)


def test_bad_values_are_named_by_their_toml_path():
    assert sorted(errors('[routing]\ntype = "vxlan"\n[routing.vxlan]\nvni = 0\nport = 70000\nmtu = 40\nvnid = 1\n')) == [
        "routing.vxlan.mtu: must be 0 (auto) or between 68 and 65535, got 40",
        "routing.vxlan.port: must be between 1 and 65535, got 70000",
        "routing.vxlan.vni: must be between 1 and 16777215, got 0",
        "routing.vxlan.vnid: unknown key; did you mean 'vni'?",
    ]
    assert errors('[routing]\ntype = "ipip"\n[routing.ipip]\nmtu = "auto"\n') == [
        "routing.ipip.mtu: expected an integer, got a string 'auto'"
    ]


def node(name, mac=None):
    spec = {"vxlanTunnelMACAddr": mac} if mac else {}
    return load_resource({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name}, "spec": spec})


def test_vtep_mac_is_calicos():
    # Felix's calculation graph tests expect this MAC for the node "remotehostname2".
    assert vxlan.vtep_mac(node("remotehostname2")) == "66:40:18:59:1f:16"
    assert vxlan.vtep_mac(node("node1", "AA:BB:CC:00:11:22")) == "aa:bb:cc:00:11:22"
