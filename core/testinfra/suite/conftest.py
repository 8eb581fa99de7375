"""Fixtures of the suite: the options, and each host's outputs gathered once per run."""

from __future__ import annotations

import pytest

from pycalico.testinfra.gather import Settings, gather
from pycalico.testinfra.view import NodeView


@pytest.fixture(scope="session")
def calico_settings(pytestconfig: pytest.Config) -> Settings:
    option = pytestconfig.getoption
    return Settings(
        calico_config=option("calico_config"),
        calico_bin=option("calico_bin"),
        cni_bin_dirs=tuple(d for d in option("cni_bin_dir").split(":") if d),
        cni_conf_dir=option("cni_conf_dir"),
    )


@pytest.fixture(scope="session")
def _calico_gathered() -> dict:
    """Host id -> its NodeView, or the error that kept the probes from running."""
    return {}


@pytest.fixture
def calico_node(host, calico_settings: Settings, _calico_gathered: dict) -> NodeView:
    """The node behind testinfra's ``host``, its probes run once for every check."""
    key = host.backend.get_pytest_id()
    if key not in _calico_gathered:
        try:
            _calico_gathered[key] = NodeView(calico_settings, gather(host, calico_settings))
        except RuntimeError as exc:
            _calico_gathered[key] = exc
    found = _calico_gathered[key]
    if isinstance(found, RuntimeError):
        pytest.fail(f"{key}: {found}", pytrace=False)
    return found
