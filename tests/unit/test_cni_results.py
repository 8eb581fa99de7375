"""CNI results in every version the plugin speaks, errors, VERSION, and the executable's
light start-up path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pycalico.core.cni import spec
from pycalico.core.cni.main import decode_request, encode_reply, encode_request, socket_path
from pycalico.core.cni.spec import CniError, Interface, IPConfig, Result, Route

RESULT = Result(
    interfaces=[Interface("cali0d7763386da", "ee:ee:ee:ee:ee:ee"),
                Interface("eth0", "36:de:83:4b:e1:77", 1440, "/var/run/netns/p")],
    ips=[IPConfig("10.65.16.64/32", interface=1), IPConfig("fd00::5/128", interface=1)],
    routes=[Route("0.0.0.0/0", "169.254.1.1"), Route("::/0", "fe80::ecee:eeff:feee:eeee")],
)


def test_render_1_0_0():
    assert spec.render(RESULT, "1.0.0") == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "cali0d7763386da", "mac": "ee:ee:ee:ee:ee:ee"},
                       {"name": "eth0", "mac": "36:de:83:4b:e1:77", "sandbox": "/var/run/netns/p"}],
        "ips": [{"address": "10.65.16.64/32", "interface": 1}, {"address": "fd00::5/128", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"}],
        "dns": {},
    }


def test_render_1_1_0_carries_the_mtu():
    out = spec.render(RESULT, "1.1.0")
    assert out["interfaces"][1] == {"name": "eth0", "mac": "36:de:83:4b:e1:77", "mtu": 1440,
                                    "sandbox": "/var/run/netns/p"}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_render_0_3_and_0_4_have_ip_versions(version):
    out = spec.render(RESULT, version)
    assert out["cniVersion"] == version
    assert out["ips"] == [{"version": "4", "address": "10.65.16.64/32", "interface": 1},
                          {"version": "6", "address": "fd00::5/128", "interface": 1}]
    assert out["interfaces"][0]["name"] == "cali0d7763386da"


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_render_legacy_ip4_ip6(version):
    assert spec.render(RESULT, version) == {
        "cniVersion": version,
        "ip4": {"ip": "10.65.16.64/32", "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]},
        "ip6": {"ip": "fd00::5/128", "routes": [{"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"}]},
        "dns": {},
    }


@pytest.mark.parametrize("version", spec.SUPPORTED_VERSIONS)
def test_every_version_parses_back(version):
    back = spec.parse_result(spec.render(RESULT, version))
    assert [ip.address for ip in back.ips] == ["10.65.16.64/32", "fd00::5/128"]
    assert [(r.dst, r.gw) for r in back.routes] == [(r.dst, r.gw) for r in RESULT.routes]


def test_ipam_plugin_result_without_interfaces():
    # what calico-ipam prints: the block-masked address and nothing else
    out = spec.render(Result(ips=[IPConfig("10.65.16.64/26")]), "1.0.0")
    assert out == {"cniVersion": "1.0.0", "ips": [{"address": "10.65.16.64/26"}], "dns": {}}


def test_bad_results_name_the_field():
    with pytest.raises(CniError) as info:
        spec.parse_result({"ips": [{"address": "10.0.0.1"}, {"address": "x"}]}, "prevResult")
    assert info.value.code == spec.DECODE_FAILURE and "prevResult.ips[1].address" in info.value.msg
    with pytest.raises(CniError) as info:
        spec.parse_result({"routes": [{"gw": "1.1.1.1"}]}, "prevResult")
    assert "prevResult.routes[0].dst" in info.value.msg
    with pytest.raises(CniError):
        spec.parse_result("nope")


def test_error_json_and_versions():
    err = CniError(spec.INVALID_NETCONF, "mtu: must be an integer", "details")
    assert err.to_dict("0.4.0") == {"cniVersion": "0.4.0", "code": 7, "msg": "mtu: must be an integer",
                                    "details": "details"}
    assert spec.check_version("") == "0.2.0"
    assert spec.check_version("0.3.1") == "0.3.1"
    with pytest.raises(CniError) as info:
        spec.check_version("1.2.0")
    assert info.value.code == spec.INCOMPATIBLE_VERSION
    assert spec.version_reply("1.0.0") == {"cniVersion": "1.0.0", "supportedVersions": list(spec.SUPPORTED_VERSIONS)}
    assert spec.at_least("1.1.0", "1.0.0") and not spec.at_least("0.3.1", "0.4.0")


def test_socket_path_choice():
    assert socket_path({}, b'{"name": "n"}') == "/var/run/calico/cni.sock"
    assert socket_path({}, b'{"socket_path": "/run/x.sock"}') == "/run/x.sock"
    assert socket_path({}, b'{"socket_path" :\n "/run/x y.sock", "a": 1}') == "/run/x y.sock"
    assert socket_path({}, b'{"socket_path": ""}') is None
    assert socket_path({"CALICO_CNI_SOCKET": "/e.sock"}, b'{"socket_path": "/run/x.sock"}') == "/e.sock"
    assert socket_path({"CALICO_CNI_SOCKET": ""}, b"{}") is None
    # what the scanner does not read plainly goes through the JSON parser
    assert socket_path({}, b'{"socket_path": "/run/a\\u0062.sock"}') == "/run/ab.sock"
    assert socket_path({}, b'{"socket_path": null}') is None
    assert socket_path({}, b'{"socket_path": "/x", "args": {"socket_path": "/y"}}') == "/x"
    assert socket_path({}, b'{"socket_path": broken') is None


def test_wire_format_round_trips():
    env = {b"CNI_COMMAND": b"ADD", b"CNI_ARGS": b"A=1;B=2", b"WEIRD": b"x\xff=y"}
    data = encode_request("calico-ipam", env, b'{"name": "n"}')
    plugin, got, stdin = decode_request(data)
    assert plugin == "calico-ipam" and stdin == b'{"name": "n"}'
    assert got["CNI_ARGS"] == "A=1;B=2" and got["WEIRD"].encode("utf-8", "surrogateescape") == b"x\xff=y"
    assert encode_reply(1, "{}\n", "oops") == b"1 3\n{}\noops"
    with pytest.raises(ValueError):
        decode_request(b'{"v": 1}')


HEAVY = ("pyroute2", "etcd3gw", "requests", "pluggy", "attrs", "cattrs", "pycalico.core.resources",
         "pycalico.plugins", "pycalico.core.cni.handler", "pycalico.core.cni.dataplane", "json", "socket")


def test_the_executable_fast_path_imports_only_the_standard_library():
    code = ("import sys; import pycalico.core.cni.main; "
            "print([m for m in sys.modules if m.startswith(%r)])" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version_and_flags_of_the_executable(tmp_path):
    exe = tmp_path / "calico-ipam"
    exe.write_text(f"#!{sys.executable}\nimport sys\nfrom pycalico.core.cni.main import main\nsys.exit(main())\n")
    exe.chmod(0o755)
    out = subprocess.run([str(exe)], input=b'{"cniVersion": "0.4.0"}', env={"CNI_COMMAND": "VERSION"},
                         capture_output=True, check=True)
    reply = json.loads(out.stdout)
    assert reply["cniVersion"] == "0.4.0" and "1.1.0" in reply["supportedVersions"]
    assert subprocess.run([str(exe), "-v"], capture_output=True, text=True).stdout.startswith("pycalico")
    bad = subprocess.run([str(exe), "-x"], capture_output=True, text=True)
    assert bad.returncode == 1 and json.loads(bad.stdout)["code"] == 100
    # no CNI_COMMAND: an error that names the variable (served in process: no agent)
    none = subprocess.run([str(exe)], input="{}", env={"CALICO_CNI_SOCKET": ""}, capture_output=True, text=True)
    assert none.returncode == 1
    assert json.loads(none.stdout)["code"] == 4 and "CNI_COMMAND" in json.loads(none.stdout)["msg"]
