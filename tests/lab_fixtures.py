"""pytest fixtures for tests that build a calico-lab (namespaces + etcd).

Loaded as a plugin from tests/conftest.py (`pytest_plugins`). Every lab gets
a name unique to this test process and a state root in pytest's tmp dir, and
every lab under that root is torn down when the fixture ends, also when the
test failed or built the lab through the CLI.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycalico.core.lab import Lab, LabError, LabNotFound
from pycalico.core.lab import netns as lab_netns

_counter = itertools.count(1)


def unique_lab_name(prefix: str = "t") -> str:
    # Short on purpose: the name prefixes every namespace of the lab.
    return f"{prefix}{os.getpid()}-{next(_counter)}"


def require_lab() -> None:
    ok, why = lab_netns.available()
    if not ok:
        pytest.skip(f"lab tests need root and `ip netns`: {why}")


def down_all(state_root: Path) -> list[str]:
    """Tear down every lab under state_root; returns error messages."""
    errors = []
    for name in Lab.list(state_root):
        try:
            Lab.load(name, state_root).down()
        except LabNotFound:
            pass
        except LabError as e:
            errors.append(f"{name}: {e}")
    return errors


@pytest.fixture
def lab_state_root(tmp_path: Path) -> Iterator[Path]:
    """A private state root; whatever lab is left in it is torn down afterwards."""
    require_lab()
    root = tmp_path / "labs"
    root.mkdir()
    yield root
    errors = down_all(root)
    if errors:
        pytest.fail("lab teardown failed: " + "; ".join(errors))


@pytest.fixture
def lab_name() -> str:
    """A lab name unique to this test (for labs built by hand or via the CLI)."""
    return unique_lab_name()


@pytest.fixture
def make_lab(lab_state_root: Path) -> Callable[..., Lab]:
    """Factory: make_lab(nodes=2, subnets=1, name=None) -> a running Lab."""

    def make(nodes: int = 2, subnets: int = 1, name: str | None = None, **kw) -> Lab:
        return Lab.up(name or unique_lab_name(), nodes=nodes, subnets=subnets,
                      state_root=lab_state_root, **kw)

    return make


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    """A fresh 2-node lab for one test."""
    return make_lab()


@contextlib.contextmanager
def lab_for(tmp_path_factory: pytest.TempPathFactory, prefix: str, **kw) -> Iterator[Lab]:
    """A lab for a module- or session-scoped fixture (``Lab.up(**kw)`` in a state root
    of its own), and every lab in that root torn down afterwards, also on failure."""
    require_lab()
    root = tmp_path_factory.mktemp(prefix)
    try:
        yield Lab.up(unique_lab_name(prefix[0]), state_root=root, **kw)
    finally:
        errors = down_all(root)
        if errors:
            pytest.fail(f"{prefix} lab teardown failed: " + "; ".join(errors))


@pytest.fixture(scope="session")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One 2-node lab for the whole session; tests must leave it as they found it."""
    with lab_for(tmp_path_factory, "shared-lab", nodes=2, subnets=1) as lab:
        yield lab
