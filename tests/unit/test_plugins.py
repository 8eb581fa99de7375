"""Plugins from outside the repo: a separate package, built and pip-installed, fills
the datastore and policy slots and adds an observer, with no change to pycalico."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pycalico.core.plugins import Registry
from pycalico.hooks import spec

HERE = Path(__file__).resolve().parent
EXTPKG = HERE.parent / "data" / "extpkg"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [BIN / "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", target, EXTPKG],
        check=True,
        capture_output=True,
    )
    return target


def node(site, *args, **kw):
    env = {**os.environ, "PYTHONPATH": str(site), "DEMO_OBSERVER_LOG": str(site / "observer.log")}
    return subprocess.run([BIN / "calico-node", *args], env=env, capture_output=True, text=True, timeout=60, **kw)


def write_config(tmp_path, site, policy_table='output = "{out}"'):
    resources = tmp_path / "resources.yaml"
    resources.write_text(
        """
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node1-k8s-web-eth0, namespace: shop}
spec: {node: node1, orchestrator: k8s, pod: web, endpoint: eth0, interfaceName: cali0123456789a}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: node2-k8s-db-eth0, namespace: shop}
spec: {node: node2, orchestrator: k8s, pod: db, endpoint: eth0, interfaceName: cali0123456789b}
"""
    )
    out = tmp_path / "verdicts.txt"
    path = tmp_path / "calico.toml"
    path.write_text(
        f"""
node_name = "node1"
[datastore]
type = "static-file"
[datastore.static-file]
path = "{resources}"
[ipam]
type = "none"
[node]
nodename_file = "{tmp_path / 'lib' / 'nodename'}"
[routing]
type = "none"
[policy]
type = "demo-policy"
[policy.demo-policy]
{policy_table.format(out=out)}
"""
    )
    return path, out


def test_installed_package_fills_slots_and_observes(tmp_path, site):
    path, out = write_config(tmp_path, site)
    assert node(site, "--config", str(path), "--check-config").returncode == 0
    result = node(site, "--config", str(path), "--once")
    assert result.returncode == 0, result.stderr
    assert out.read_text() == "node1-k8s-web-eth0 allow\n"
    assert (site / "observer.log").read_text() == "1 sync 1 1\n"
    # As Calico's startup does, for the CNI plugin.
    assert (tmp_path / "lib" / "nodename").read_text() == "node1"


def test_third_party_table_errors_use_toml_paths(tmp_path, site):
    path, _ = write_config(tmp_path, site, policy_table='outptu = "x"')
    result = node(site, "--config", str(path), "--check-config")
    assert result.returncode == 1
    assert f"{path}: policy.demo-policy.outptu: unknown key; did you mean 'output'?" in result.stderr
    assert f"{path}: policy.demo-policy.output: is required" in result.stderr


def test_unknown_plugin_lists_what_is_installed(tmp_path, site):
    path, _ = write_config(tmp_path, site)
    path.write_text(path.read_text().replace('type = "demo-policy"', 'type = "demo-polcy"'))
    result = node(site, "--config", str(path), "--check-config")
    assert result.returncode == 1
    assert "policy.type: no policy plugin named 'demo-polcy' is installed (installed: demo-policy" in result.stderr
    assert "did you mean 'demo-policy'?" in result.stderr


def test_sigterm_stops_the_agent_cleanly(tmp_path, site):
    path, out = write_config(tmp_path, site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.Popen([BIN / "calico-node", "--config", str(path)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_every_hook_is_called_by_the_plugin_manager():
    # Each hookspec has exactly one caller in core/plugins.py or core/config binding.
    source = (Path(spec.__file__).parents[1] / "core" / "plugins.py").read_text()
    hooks = [name for name in dir(spec) if name.startswith("pycalico_")]
    for name in hooks:
        called = name in source or name.replace("reconcile_routing", "reconcile_").replace("reconcile_policy", "reconcile_") in source
        assert called, f"{name} has no caller"


def test_registry_lists_entry_points_and_handed_in_plugins():
    registry = Registry({"policy": {"mine": object()}})
    assert "mine" in registry.names("policy")


def test_every_hook_has_a_contract_and_is_documented_for_plugin_authors():
    guide = (Path(spec.__file__).parents[1] / "docs" / "plugins.md").read_text()
    for name in (n for n in dir(spec) if n.startswith("pycalico_")):
        doc = getattr(spec, name).__doc__ or ""
        assert len(doc.split()) >= 15, f"{name}: the docstring is the contract; it is missing"
        assert f"`{name}(" in guide, f"{name} is not in docs/plugins.md"
