"""The calico_node Ansible role without a lab: lint, generated files, the TOML filter
and the supervisor. The role run against lab nodes is tests/integration/test_ansible_lab.py."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from pycalico.core import node, rolespec
from waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
ROLE = REPO / rolespec.ROLE
TOOLS = Path(sys.executable).parent


def _filters():
    spec = importlib.util.spec_from_file_location("calico_toml", ROLE / "filter_plugins" / "calico_toml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


calico_toml = _filters()


def _ansible_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "ANSIBLE_HOME": str(tmp_path / "ah"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ah" / "tmp"),
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}


def test_ansible_lint_passes_with_the_production_profile(tmp_path):
    res = subprocess.run([str(TOOLS / "ansible-lint"), "--offline", "--profile", "production", "-f", "pep8", "."],
                         cwd=ANSIBLE_DIR, env=_ansible_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Profile 'production' was required, and it passed" in res.stderr, res.stderr


def test_the_example_playbook_parses(tmp_path):
    res = subprocess.run([str(TOOLS / "ansible-playbook"), "--syntax-check", "-i", "examples/inventory.yml",
                          "examples/site.yml"], cwd=ANSIBLE_DIR, env=_ansible_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_generated_files_are_up_to_date():
    stale = [str(path) for path, text in rolespec.render().items() if (REPO / path).read_text() != text]
    assert not stale, f"{', '.join(stale)} differ from the attrs types: run python -m pycalico.core.rolespec --write"


def test_every_calico_toml_key_has_a_variable_and_a_spec():
    from pycalico.core import configref

    specs = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    for field in configref.fields():
        spec = specs[rolespec.variable(field.path)]
        for key in field.path[1:]:
            spec = spec["options"][key]
        assert spec["type"] == field.type, field.path
        assert spec.get("choices") == (list(field.choices) if field.choices else None), field.path
    bounds = yaml.safe_load((ROLE / "vars/main.yml").read_text())["calico_node_bounds"]
    assert {"var": "calico_toml_node", "key": "as_number", "min": 1, "max": 4294967295} in bounds


def test_the_role_defaults_render_a_calico_toml_that_calico_node_accepts(tmp_path, capsys):
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    template = yaml.safe_load((ROLE / "vars/main.yml").read_text())["calico_node_toml_data"]
    data = {key: defaults[expr.strip("{} ")] for key, expr in template.items()}
    path = tmp_path / "calico.toml"
    path.write_text(calico_toml.calico_node_toml(data))
    assert node.check(path) == 0, capsys.readouterr().err
    assert tomllib.loads(path.read_text()) == data


EVERY_TYPE = {
    "name": "node-1",
    "quoted": 'a "b" \\ c\td\ne\x01f\x7fg é 😀',
    "count": 42,
    "negative": -7,
    "big": 4294967295,
    "ratio": 0.1,
    "whole": 90.0,
    "tiny": 1e-300,
    "yes": True,
    "no": False,
    "empty": "",
    "list": ["a", "b"],
    "numbers": [1, 2.5, -3],
    "nothing": [],
    "nested_list": [[1, 2], ["x"]],
    "inline_tables": [{"k": "v", "n": 1}, {"deep": {"x": True}}],
    "needs quotes.here": "ok",
    "table": {
        "key": "value",
        "sub": {"deeper": {"leaf": 1, "list": [True, False]}, "after": "x"},
        "empty_sub": {},
    },
    "later_scalar": "scalars go before tables in TOML",
}


def test_the_toml_filter_renders_what_tomllib_reads_back():
    text = calico_toml.calico_node_toml(EVERY_TYPE)
    assert tomllib.loads(text) == EVERY_TYPE


def test_the_toml_filter_writes_special_floats_and_leaves_out_null():
    back = tomllib.loads(calico_toml.calico_node_toml(
        {"inf": math.inf, "ninf": -math.inf, "nan": math.nan, "unset": None, "t": {"unset": None, "set": 1}}))
    assert back["inf"] == math.inf and back["ninf"] == -math.inf and math.isnan(back["nan"])
    assert "unset" not in back and back["t"] == {"set": 1}


@pytest.mark.parametrize("data, where", [
    ({"t": {"when": object()}}, "t.when: object has no TOML form"),
    ({"t": {"list": [1, None]}}, "t.list: TOML arrays cannot hold null"),
    ({"t": {"": 1}}, "t: TOML keys must be non-empty strings"),
])
def test_the_toml_filter_names_what_it_cannot_write(data, where):
    with pytest.raises(AnsibleFilterError, match=where):
        calico_toml.calico_node_toml(data)


def test_dig_reads_a_dotted_path_or_none():
    data = {"vxlan": {"vni": 4096}, "type": "vxlan"}
    assert calico_toml.calico_node_dig(data, "vxlan.vni") == 4096
    assert calico_toml.calico_node_dig(data, "") == data
    assert calico_toml.calico_node_dig(data, "vxlan.port") is None
    assert calico_toml.calico_node_dig(data, "type.sub") is None


# --- the supervisor ---------------------------------------------------------------

FAKE_NODE = """#!/bin/sh
echo "calico-node $$ $*"
trap 'echo "stopping $$"; exit 0' TERM
while :; do sleep 0.1; done
"""


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def supervisor(tmp_path):
    """Runs the role's supervisor on a stand-in calico-node; stops it by pid afterwards."""
    fake = tmp_path / "bin" / "calico-node"
    fake.parent.mkdir()
    fake.write_text(FAKE_NODE)
    fake.chmod(0o755)
    pid_file, log = tmp_path / "run" / "sup.pid", tmp_path / "log" / "calico-node.log"

    def run(action: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROLE / "files" / "calico-node-supervisor"), action, "--pid-file", str(pid_file),
                               "--log-file", str(log), "--stop-timeout", "3", "--", str(fake), "--config", "x"],
                              capture_output=True, text=True, timeout=30)

    run.pid_file, run.child_file, run.log = pid_file, pid_file.with_name("calico-node.pid"), log
    yield run
    for path in (run.child_file, pid_file):
        pid = _pid(path)
        if pid and _alive(pid) and "calico-node" in Path(f"/proc/{pid}/cmdline").read_text():
            os.kill(pid, signal.SIGKILL)


def test_supervisor_keeps_calico_node_running_and_stops_it_by_pid(supervisor):
    assert supervisor("status").returncode == 3
    started = supervisor("start")
    assert started.returncode == 0 and "started" in started.stdout, started.stderr
    sup = _pid(supervisor.pid_file)
    first = wait_for(lambda: _pid(supervisor.child_file), 5, "calico-node started")
    assert supervisor("start").stdout.strip() == f"calico-node-supervisor is already running (pid {sup})"
    assert supervisor("status").stdout.strip() == \
        f"calico-node-supervisor is running (pid {sup}); calico-node pid {first}"

    os.kill(first, signal.SIGKILL)  # calico-node dies: it is started again after 1 s
    second = wait_for(lambda: (_pid(supervisor.child_file) or first) != first and _pid(supervisor.child_file),
                      10, "calico-node started again")
    assert _pid(supervisor.pid_file) == sup

    assert supervisor("stop").returncode == 0
    assert not _alive(sup) and not _alive(second) and not _alive(first)
    assert not supervisor.pid_file.exists() and not supervisor.child_file.exists()
    assert supervisor("status").returncode == 3
    log = supervisor.log.read_text()
    assert f"calico-node {first} --config x" in log and f"stopping {second}" in log
    assert f"calico-node (pid {first}) exited with status -9" in log and "starting calico-node again in 1 s" in log


def test_supervisor_restart_runs_a_new_calico_node(supervisor):
    supervisor("start")
    first = wait_for(lambda: _pid(supervisor.child_file), 5, "calico-node started")
    assert supervisor("restart").returncode == 0
    second = wait_for(lambda: _pid(supervisor.child_file), 5, "calico-node started again")
    assert second != first and not _alive(first)
    supervisor("stop")
    assert not _alive(second)


def test_supervisor_kills_a_calico_node_that_ignores_sigterm(supervisor, tmp_path):
    stubborn = tmp_path / "bin" / "calico-node"
    stubborn.write_text("#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 0.1; done\n")
    supervisor("start")
    child = wait_for(lambda: _pid(supervisor.child_file), 5, "calico-node started")
    began = time.monotonic()
    assert supervisor("stop").returncode == 0
    assert not _alive(child) and 3 <= time.monotonic() - began < 10
    assert f"calico-node (pid {child}) ignored SIGTERM for 3 s: SIGKILL" in supervisor.log.read_text()


# --- the checks before any change ---------------------------------------------------
# Only the argument spec and the role's validate tasks run (--tags calico_node_validate),
# against this machine through the local connection: they read facts and nothing else.

VALIDATE_PLAY = """
- name: Validate only
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: calico_node
"""


@pytest.fixture
def validate(tmp_path):
    wheel = tmp_path / f"pycalico-{rolespec.version('pycalico')}-py3-none-any.whl"
    wheel.write_bytes(b"")
    (tmp_path / "site.yml").write_text(VALIDATE_PLAY)

    def run(**variables) -> subprocess.CompletedProcess:
        extra = {"calico_node_service_manager": "supervisor", "calico_node_wheel": str(wheel),
                 "ansible_python_interpreter": sys.executable, **variables}
        (tmp_path / "extra.json").write_text(json.dumps(extra))
        return subprocess.run([str(TOOLS / "ansible-playbook"), "-i", "localhost,", "--tags", "calico_node_validate",
                               "-e", f"@{tmp_path / 'extra.json'}", str(tmp_path / "site.yml")],
                              env=_ansible_env(tmp_path), capture_output=True, text=True, timeout=120)

    return run


def test_valid_variables_pass_the_checks(validate):
    res = validate(calico_toml_node={"as_number": 64512}, calico_toml_routing={"type": "vxlan", "vxlan": {"vni": 1}})
    assert res.returncode == 0, res.stdout[-3000:]
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", res.stdout), res.stdout


@pytest.mark.parametrize("variables, message", [
    ({"calico_toml_node": {"as_number": 4294967296}}, "calico_toml_node.as_number: 4294967296 is outside 1..4294967295"),
    ({"calico_toml_routing": {"type": "vxlan", "vxlan": {"vni": 0}}},
     "calico_toml_routing.vxlan.vni: 0 is outside 1..16777215"),
    ({"calico_toml_typha": {"server": {"health": {"port": 70000}}}},
     "calico_toml_typha.server.health.port: 70000 is outside 1..65535"),
    ({"calico_toml_node": {"as_numbr": 64512}}, "calico_toml_node.as_numbr. Supported parameters include: as_number"),
    ({"calico_toml_logging": {"level": "loud"}},
     "value of level must be one of: debug, info, warning, error, got: loud found in calico_toml_logging"),
    ({"calico_toml_health": {"port": "nine"}}, "argument 'port' is of type str found in 'calico_toml_health'"),
    ({"calico_node_wheel": ""}, "calico_node_wheel and calico_node_source: set exactly one (got neither)"),
    ({"calico_node_version": "9.9.9"}, "-py3-none-any.whl is not a pycalico 9.9.9 wheel"),
])
def test_a_bad_variable_fails_the_checks_naming_it(validate, variables, message):
    res = validate(**variables)
    assert res.returncode != 0
    assert message in res.stdout + res.stderr, res.stdout[-3000:]


def test_a_source_tree_is_built_on_the_controller_and_its_version_checked(validate, tmp_path):
    # The worked plugin's tree builds a wheel, but not pycalico's: the version check says so.
    other = tmp_path / "plugin-example"
    shutil.copytree(REPO / "docs" / "plugin-example", other)
    res = validate(calico_node_wheel="", calico_node_source=str(other))
    assert res.returncode != 0
    assert f"calico_node_source: {other} builds pycalico_hostgw-0.1.0, but calico_node_version pins" in res.stdout
    # pycalico's own tree passes, its wheel left in the tree's dist/ for the install step.
    tree = tmp_path / "pycalico"
    shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                               "__pycache__", "tests", "docs"))
    res = validate(calico_node_wheel="", calico_node_source=str(tree))
    assert res.returncode == 0, res.stdout[-3000:]
    assert [p.name for p in (tree / "dist").glob("*.whl")] == [f"pycalico-{rolespec.version('pycalico')}-py3-none-any.whl"]

