"""`calico-lab demo`, the README's first command, end to end."""

import subprocess
import sys
from pathlib import Path

import pytest

from pycalico.core.lab import netns

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(not netns.available()[0], reason=netns.available()[1])


def test_demo_builds_shows_and_tears_down(tmp_path):
    name = "tdemo"
    result = subprocess.run(
        [BIN / "calico-lab", "demo", "--name", name, "--state-dir", tmp_path],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "healthy" in out and "NOT healthy" not in out
    matrix = out.split("ping from row to column):\n")[1].split("\n\n")[0].splitlines()
    assert len(matrix) == 4 and "FAIL" not in "\n".join(matrix)
    assert sum(row.split().count("ok") for row in matrix[1:]) == 6
    # Resources applied on node1 with calicoctl are read back on node3 from the lab's etcd.
    assert "Successfully applied 3 resource(s)" in out
    assert "default-ipv4-ippool   10.65.0.0/16   true" in out
    assert "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/allow-dns" in out
    # Pods wired by the CNI executable, addresses from node-affine /26 blocks.
    assert out.count("/32") >= 3 and "| Block    |" in out
    assert "on the same node: reachable" in out
    assert f"Lab {name!r} torn down" in out
    assert not [ns for ns in netns.list_netns() if ns.startswith(f"{name}-")]
