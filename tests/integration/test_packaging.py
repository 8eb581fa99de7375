"""The built wheel ships one import namespace, `pycalico`, and nothing called bare
`core`, `hooks` or `plugins`."""

import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, REPO],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("pycalico-*.whl")
    return path


def test_wheel_holds_every_source_package_under_pycalico(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    code = [n for n in names if not n.startswith("pycalico-") and not n.endswith("dist-info/")]
    assert all(n.startswith("pycalico/") for n in code), [n for n in code if not n.startswith("pycalico/")]
    # Every source package of the tree is in the wheel, where pyproject's package-dir
    # puts it (a package missing from pyproject's list would still import in an
    # editable install).
    dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for top in set(dirs.values()):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.relative_to(REPO)
            # The most specific mapping holding the file decides its package.
            package, source = max(((p, Path(d)) for p, d in dirs.items() if Path(d) in rel.parents),
                                  key=lambda pair: len(pair[1].parts))
            assert f"{package.replace('.', '/')}/{rel.relative_to(source).as_posix()}" in names, \
                f"{rel} is not in the wheel"
    assert "pycalico/__init__.py" not in names  # an implicit namespace


def test_fresh_venv_imports_pycalico_and_not_core(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # Dependencies come from the test venv's site-packages as a plain path, which
    # does not bring its editable finder for pycalico along.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel], check=True, capture_output=True
    )
    python = venv / "bin" / "python"
    check = "import pycalico.core.config, pycalico.hooks.spec, pycalico.plugins.policy; import pycalico.core.config as c; print(c.__file__)"
    ok = subprocess.run([python, "-c", check], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(str(site))
    for bare in ("core", "hooks", "plugins"):
        bad = subprocess.run([python, "-c", f"import {bare}"], cwd=tmp_path, capture_output=True, text=True)
        assert bad.returncode != 0 and "ModuleNotFoundError" in bad.stderr, bare
