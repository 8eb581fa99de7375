import sys
from pathlib import Path

import pytest

# Test helpers (doubles, lab fixtures) import by bare name; the repo root stays off
# sys.path so that only the installed `pycalico` namespace is importable.
sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["lab_fixtures", "etcd_fixtures", "kdd_fixtures"]


# What calico-node writes on a real host; lab agents and tests write theirs elsewhere.
HOST_PATHS = ("/var/lib/calico", "/var/run/calico", "/etc/calico", "/opt/cni/bin/calico")


@pytest.fixture(scope="session", autouse=True)
def host_left_alone():
    """The run leaves none of calico-node's host paths behind that it did not find."""
    before = {p for p in HOST_PATHS if Path(p).exists()}
    yield
    made = sorted(p for p in HOST_PATHS if Path(p).exists() and p not in before)
    assert not made, f"the tests created {made} on the host"
