"""The one plugin runner (libcni's invoke) and how the ``calico`` executable maps its
errors to CNI codes, against small plugin scripts written to the test's tmp dir."""

from __future__ import annotations

import json
import os
import sys

import pytest

from pycalico.core.cni import invoke, spec
from pycalico.core.cni.ipam import delegate
from pycalico.core.cni.spec import CniError


def plugin(tmp_path, name: str, body: str) -> str:
    """An executable ``name`` in ``tmp_path``: a Python script that records its stdin
    and environment next to itself, then runs ``body``."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"seen = {{'stdin': json.load(sys.stdin), 'env': dict(os.environ)}}\n"
                    f"open({str(tmp_path / (name + '.seen'))!r}, 'w').write(json.dumps(seen))\n{body}\n")
    path.chmod(0o755)
    return str(path)


def seen(tmp_path, name: str) -> dict:
    return json.loads((tmp_path / f"{name}.seen").read_text())


def env(tmp_path, command: str = "ADD", **extra) -> dict:
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0",
            "CNI_PATH": f"/nonexistent{os.pathsep}{tmp_path}", "CNI_ARGS": "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
            **extra}


NETCONF = {"cniVersion": "1.0.0", "name": "net", "type": "calico", "ipam": {"type": "fake", "opt": 1}}
RESULT = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24", "gateway": "10.1.2.1"}],
          "routes": [{"dst": "10.0.0.0/8"}]}


def test_find_in_path_is_libcnis(tmp_path):
    exe = plugin(tmp_path, "fake", "")
    (tmp_path / "plain").write_text("not executable")
    assert invoke.find_in_path("fake", f"/nonexistent:{tmp_path}") == exe
    assert invoke.find_in_path("fake", ["/nonexistent", str(tmp_path)]) == exe
    with pytest.raises(invoke.PluginError) as err:
        invoke.find_in_path("plain", str(tmp_path))
    assert err.value.missing and err.value.msg == f'failed to find plugin "plain" in path [{tmp_path}]'
    with pytest.raises(invoke.PluginError, match="^no paths provided$"):
        invoke.find_in_path("fake", "")


def test_run_ipam_passes_netconf_and_environment(tmp_path):
    plugin(tmp_path, "fake", f"print(json.dumps({RESULT!r}))")
    assert invoke.run_ipam(NETCONF, env(tmp_path)) == RESULT
    got = seen(tmp_path, "fake")
    assert got["stdin"] == NETCONF
    assert got["env"]["CNI_COMMAND"] == "ADD"
    assert got["env"]["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"  # Calico's AddIgnoreUnknownArgs
    assert invoke.ignore_unknown("IgnoreUnknown=1;A=b") == "IgnoreUnknown=1;A=b"
    assert invoke.ignore_unknown("") == "IgnoreUnknown=1"
    plugin(tmp_path, "fake", "")  # DEL prints nothing
    assert invoke.run_ipam(NETCONF, env(tmp_path, "DEL")) == {}
    with pytest.raises(invoke.PluginError, match="^IPAM config missing 'type' key$"):
        invoke.run_ipam({"ipam": {}}, env(tmp_path))


def test_failures_keep_libcnis_messages_and_codes(tmp_path):
    plugin(tmp_path, "fake", "print(json.dumps({'code': 11, 'msg': 'busy', 'details': 'later'})); sys.exit(1)")
    with pytest.raises(invoke.PluginError) as err:
        invoke.run_ipam(NETCONF, env(tmp_path))
    assert (err.value.code, err.value.msg, err.value.details) == (11, "busy", "later")
    assert err.value.result("0.4.0") == {"cniVersion": "0.4.0", "code": 11, "msg": "busy", "details": "later"}
    plugin(tmp_path, "fake", "sys.stderr.write('boom'); sys.exit(2)")
    with pytest.raises(invoke.PluginError) as err:
        invoke.run_ipam(NETCONF, env(tmp_path))
    assert (err.value.code, err.value.msg) == (0, 'netplugin failed: "boom"')
    plugin(tmp_path, "fake", "sys.exit(3)")
    with pytest.raises(invoke.PluginError, match="^netplugin failed with no error message: exit status 3$"):
        invoke.run_ipam(NETCONF, env(tmp_path))
    plugin(tmp_path, "fake", "print('garbage'); sys.exit(1)")
    with pytest.raises(invoke.PluginError, match="^netplugin failed but error parsing its diagnostic message"):
        invoke.run_ipam(NETCONF, env(tmp_path))
    plugin(tmp_path, "fake", "import time; time.sleep(5)")
    with pytest.raises(invoke.PluginError, match="did not finish within 0.3 s$"):
        invoke.run_ipam(NETCONF, env(tmp_path), timeout=0.3)


def test_the_cni_maps_errors_to_cni_codes(tmp_path):
    plugin(tmp_path, "fake", "print(json.dumps({'code': 11, 'msg': 'busy'})); sys.exit(1)")
    with pytest.raises(CniError) as err:
        delegate("ADD", NETCONF, env(tmp_path), None, "node1")
    assert (err.value.code, err.value.msg) == (11, "IPAM plugin fake: busy")  # the plugin's own code
    plugin(tmp_path, "fake", "sys.stderr.write('boom'); sys.exit(2)")
    with pytest.raises(CniError) as err:
        delegate("ADD", NETCONF, env(tmp_path), None, "node1")
    assert (err.value.code, err.value.msg) == (spec.GENERIC, 'IPAM plugin fake: netplugin failed: "boom"')
    with pytest.raises(CniError) as err:
        delegate("ADD", {**NETCONF, "ipam": {"type": "absent"}}, env(tmp_path), None, "node1")
    assert err.value.code == spec.INVALID_ENVIRONMENT
    assert err.value.msg == f'CNI_PATH: failed to find plugin "absent" in path [/nonexistent {tmp_path}]'
    plugin(tmp_path, "fake", "print(json.dumps({'cniVersion': '1.0.0', 'ips': []}))")
    with pytest.raises(CniError, match="^IPAM plugin returned missing IP config$"):  # Calico's AddIPAM
        delegate("ADD", NETCONF, env(tmp_path), None, "node1")


def test_the_cni_reads_the_result_and_sends_its_command(tmp_path):
    plugin(tmp_path, "fake", f"print(json.dumps({RESULT!r}))")
    result = delegate("ADD", NETCONF, env(tmp_path, "DEL"), None, "node1")
    assert [ip.address for ip in result.ips] == ["10.1.2.3/24"] and [r.dst for r in result.routes] == ["10.0.0.0/8"]
    assert seen(tmp_path, "fake")["env"]["CNI_COMMAND"] == "ADD"  # the command asked for, not the request's
    plugin(tmp_path, "fake", "")
    assert delegate("DEL", NETCONF, env(tmp_path), None, "node1") is None
    assert seen(tmp_path, "fake")["env"]["CNI_COMMAND"] == "DEL"
