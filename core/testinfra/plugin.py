"""The suite's pytest plugin, registered as a ``pytest11`` entry point so its options
exist before ``--pyargs pycalico.testinfra`` is collected.

It only adds options and collects the suite's own directory as a plain directory: it
changes nothing for any other test run.

Why the directory hook: ``pycalico`` is a namespace package, so in pytest's default
``prepend`` import mode a module under ``pycalico/testinfra/`` gets a wrong top-level
name (``testinfra``, which is pytest-testinfra's own package, or ``core.testinfra`` in
a source tree) and its root goes on ``sys.path`` (making bare ``core``, ``hooks`` and
``plugins`` importable). So the tests live in ``suite/``, a directory without
``__init__.py`` whose modules pytest imports by their own names, and this hook keeps
pytest from importing the package's ``__init__.py`` to set it up as a test package.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .gather import Settings

HERE = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    defaults = Settings()
    group = parser.getgroup("pycalico-testinfra", "pycalico node checks (pytest --pyargs pycalico.testinfra)")
    group.addoption("--calico-config", default=defaults.calico_config, metavar="PATH",
                    help="the node's calico.toml (default: %(default)s)")
    group.addoption("--calico-bin", default=defaults.calico_bin, metavar="DIR",
                    help="the directory holding calico-node and calicoctl on the node (default: the node's PATH)")
    group.addoption("--cni-bin-dir", default=":".join(defaults.cni_bin_dirs), metavar="DIRS",
                    help="the CNI plugin directories on the node, ':'-separated like CNI_PATH (default: %(default)s)")
    group.addoption("--cni-conf-dir", default=defaults.cni_conf_dir, metavar="DIR",
                    help="the directory holding 10-calico.conflist on the node (default: %(default)s)")


def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if path.resolve() == HERE:
        return pytest.Dir.from_parent(parent, path=path)
    return None
