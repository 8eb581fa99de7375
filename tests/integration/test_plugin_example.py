"""The worked third-party plugin of docs/plugins.md (docs/plugin-example, ``host-gw``):
built into a wheel and pip-installed outside pycalico's tree, found by calico-node
through its ``pycalico.routing`` entry point, its ``[routing.host-gw]`` table checked by
pycalico's loader, and, on a 2-node lab, routing pods of the two nodes to each other
with no encapsulation and no BGP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pycalico.core.lab.config import node_config_text
from pycalico.core.lab.pods import add_pod, exec_in_pod, with_datastore

from waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "plugin-example"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A directory holding the installed example, for PYTHONPATH. Built from a copy, so
    that setuptools' build/ and egg-info never land in docs/."""
    tmp = tmp_path_factory.mktemp("hostgw")
    source = shutil.copytree(EXAMPLE, tmp / "source")
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "wheels", source],
                   check=True, capture_output=True)
    (wheel,) = (tmp / "wheels").glob("pycalico_hostgw-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert {"pycalico_hostgw/__init__.py", "pycalico_hostgw/options.py"} <= names
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "[pycalico.routing]\nhost-gw = pycalico_hostgw:plugin" in z.read(entry_points).decode()
    subprocess.run([*pip, "install", "-q", "--no-deps", "--target", tmp / "site", wheel],
                   check=True, capture_output=True)
    return tmp / "site"


def check_config(text: str, tmp_path: Path, site: Path | None) -> subprocess.CompletedProcess:
    path = tmp_path / "calico.toml"
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if site:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-m", "pycalico.core.node", "--check-config", "--config", path],
                          capture_output=True, text=True, env=env)


def test_calico_node_finds_the_plugin_through_its_entry_point_once_installed(site, tmp_path):
    text = '[routing]\ntype = "host-gw"\n\n[routing.host-gw]\ninterface = "eth0"\n'
    missing = check_config(text, tmp_path, None)
    assert missing.returncode == 1
    assert "routing.type: no routing plugin named 'host-gw' is installed" in missing.stdout + missing.stderr
    found = check_config(text, tmp_path, site)
    assert found.returncode == 0, found.stdout + found.stderr
    assert found.stdout.strip() == f"{tmp_path / 'calico.toml'}: ok"


def test_its_table_is_checked_by_pycalicos_loader(site, tmp_path):
    bad = check_config('[routing]\ntype = "host-gw"\n\n[routing.host-gw]\ninterface = "eth/0"\nmtu = 1400\n',
                       tmp_path, site)
    assert bad.returncode == 1
    assert sorted(bad.stderr.splitlines()) == [
        f"{tmp_path / 'calico.toml'}: routing.host-gw.interface: 'eth/0' is not an interface name "
        "(at most 15 bytes, no '/' or spaces)",
        f"{tmp_path / 'calico.toml'}: routing.host-gw.mtu: unknown key; valid keys: interface",
    ]


def kernel_routes(lab, node) -> set[tuple]:
    argv = ["ip", "-j", "route", "show", "proto", "80"]
    out = lab.exec(node, argv, capture_output=True, text=True, check=True).stdout
    return {("blackhole", r["dst"]) if r.get("type") == "blackhole" else (r["dst"], r.get("gateway"), r["dev"])
            for r in json.loads(out or "[]")}


def expected_routes(lab, node) -> set[tuple]:
    """host-gw's routes for ``node``, from the blocks in etcd: each other node's block
    via that node's underlay address, a blackhole for each of its own."""
    blocks = with_datastore(lab, lab.nodes[0], lambda ds: ds.list("IPAMBlock").items)
    ips = {n.name: n.ip for n in lab.nodes}
    return {("blackhole", b.spec.cidr) if b.host == node else (b.spec.cidr, ips[b.host], "eth0") for b in blocks}


def pings(lab, src, dst_ip) -> bool:
    return exec_in_pod(lab, src, ["ping", "-c", "1", "-W", "1", dst_ip], capture_output=True).returncode == 0


@pytest.mark.lab
def test_pods_on_two_nodes_reach_each_other_through_host_gw(site, make_lab, monkeypatch):
    lab = make_lab(nodes=2)
    # node1 finds its interface from its address, node2 is told it.
    tables = {"node1": "", "node2": '\n[routing.host-gw]\ninterface = "eth0"\n'}
    for n in lab.nodes:
        text = node_config_text(n.name, lab.etcd_endpoints, "host-gw", node_dir=Path(n.config_path).parent)
        Path(n.config_path).write_text(text + tables[n.name])
    a = add_pod(lab, "node1", "default/a")
    b = add_pod(lab, "node2", "default/b")
    b_ip = b.ips[0].split("/")[0]
    # No agent yet: nothing routes node2's block from node1.
    assert not pings(lab, "default/a", b_ip)

    monkeypatch.setenv("PYTHONPATH", str(site))  # the agents' environment, as pip install would give
    for n in lab.nodes:
        lab.start_agent(n)
    lab.wait_registered(lab.nodes, timeout=60)
    for n in lab.nodes:
        want = expected_routes(lab, n.name)
        assert len(want) == 2
        wait_for(lambda n=n, want=want: kernel_routes(lab, n.name) == want, 30, f"host-gw routes on {n.name}")
    a_ip = a.ips[0].split("/")[0]
    wait_for(lambda: pings(lab, "default/a", b_ip), 15, f"a ping from node1's pod to node2's ({b_ip})")
    wait_for(lambda: pings(lab, "default/b", a_ip), 15, f"a ping from node2's pod to node1's ({a_ip})")


def test_the_reference_generator_documents_its_table(site):
    """The table's docs live in its attrs fields, so configref renders them as it does
    the built-in plugins' (whose reference leaves third-party plugins out)."""
    script = (
        "from pycalico.core import configref\n"
        "from pycalico_hostgw import Options\n"
        "assert 'host-gw' not in configref.builtin_schemas()['routing']\n"
        "print(configref.markdown({'routing': {'host-gw': Options}}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(site)}).stdout
    assert "### `[routing.host-gw]`" in out
    assert "| `interface` | string | `\"\"` |  | The interface that faces the other nodes' subnet;" in out
