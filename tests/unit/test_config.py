import subprocess
import sys
import tomllib
from pathlib import Path

import attrs
import pytest

from pycalico.core import config as cfg
from pycalico.core.plugins import Plugins, Registry
from pycalico.hooks import hookimpl

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "calico.toml.example"


def errors_of(text):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse(text, "calico.toml")
    return info.value.lines


def test_example_documents_every_key_with_its_default():
    assert tomllib.loads(EXAMPLE.read_text()) == cfg.dump(cfg.Config())
    assert cfg.read(EXAMPLE) == cfg.Config()


def test_example_and_its_commented_plugin_tables_pass_the_installed_plugins():
    from pycalico.core.plugins import Plugins

    Plugins.load(cfg.read(EXAMPLE), str(EXAMPLE), configure=False)
    # Uncommented, each routing plugin's table is valid for that plugin.
    text = EXAMPLE.read_text()
    for name in ("bird", "vxlan", "ipip"):
        lines = []
        for line in text.split(f"# [routing.{name}]", 1)[1].splitlines()[1:]:
            if not line.startswith("# ") or line.startswith("# ["):
                break
            lines.append(line[2:].split("#")[0])
        body = f'[routing]\ntype = "{name}"\n[routing.{name}]\n' + "\n".join(lines) + "\n"
        bound = Plugins.load(cfg.parse(body), "example", configure=False).config
        assert bound.routing.options is not None, name


def test_empty_file_is_all_defaults():
    c = cfg.parse("")
    assert c.datastore.type == "etcd" and c.health.port == 9099 and c.metrics.enabled is False


def test_syntax_error_gives_line_and_column():
    (line,) = errors_of('node_name = "a"\n[health\nport = 1\n')
    assert line.startswith("invalid TOML:") and "line 2" in line and "column" in line


def test_missing_file(tmp_path):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.read(tmp_path / "nope.toml")
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: no such file"


def test_every_problem_is_reported_with_its_path():
    lines = errors_of(
        """
        node_name = "Node_1"
        [intervals]
        resync_second = 5
        [health]
        port = "9099"
        [metrics]
        port = 70000
        [logging]
        level = "verbose"
        """
    )
    assert sorted(lines) == sorted(
        [
            "node_name: 'Node_1' is not a valid node name (lowercase DNS subdomain)",
            "intervals.resync_second: unknown key; did you mean 'resync_seconds'?",
            "health.port: expected an integer, got a string '9099'",
            "metrics.port: must be between 1 and 65535, got 70000",
            "logging.level: must be one of 'debug', 'info', 'warning', 'error', got 'verbose'",
        ]
    )


def test_unknown_top_level_table():
    assert errors_of("[helth]\nport = 1\n") == ["helth: unknown key; did you mean 'health'?"]


def test_slot_needs_a_type_and_tables():
    assert errors_of("[policy]\nmode = 3\n") == ["policy.type: is required: the name of the plugin that fills this slot"]
    assert errors_of('[policy]\ntype = "x"\nmode = 3\n') == ["policy.mode: expected the table of plugin 'mode', got 3"]


def test_booleans_are_not_numbers():
    assert errors_of("[health]\nport = true\n") == ["health.port: expected an integer, got a boolean True"]


# -- plugin tables ---------------------------------------------------------------


@attrs.frozen
class FancyOptions:
    chain_prefix: str = "cali"
    refresh_seconds: int = attrs.field(default=90, validator=lambda *_: None)


class Fancy:
    @hookimpl
    def pycalico_config_schema(self, slot, name):
        if (slot, name) == ("policy", "fancy"):
            return FancyOptions


class Store:
    @hookimpl
    def pycalico_datastore(self, config):
        return None


REGISTRY = Registry({"policy": {"fancy": Fancy()}, "datastore": {"mem": Store()}}, installed=False)


def bind(text):
    return Plugins.load(cfg.parse(text, "calico.toml"), "calico.toml", REGISTRY, configure=False).config


def test_chosen_plugin_table_is_structured_by_its_schema():
    c = bind('[datastore]\ntype = "mem"\n[routing]\ntype = "none"\n[ipam]\ntype = "none"\n'
             '[policy]\ntype = "fancy"\n[policy.fancy]\nchain_prefix = "x"\n')
    assert c.policy.options == FancyOptions(chain_prefix="x")


def test_plugin_errors_carry_toml_paths():
    with pytest.raises(cfg.ConfigError) as info:
        bind('[datastore]\ntype = "mme"\n[routing]\ntype = "bird"\n[ipam]\ntype = "none"\n'
             '[policy]\ntype = "fancy"\n[policy.fancy]\nchain_prefx = "x"\nrefresh_seconds = "1"\n'
             '[policy.fency]\n')
    assert sorted(info.value.lines) == sorted([
        "datastore.type: no datastore plugin named 'mme' is installed (installed: mem); did you mean 'mem'?",
        "routing.type: no routing plugin named 'bird' is installed (installed: none)",
        "policy.fency: no policy plugin of that name is installed (installed: fancy); did you mean 'fancy'?",
        "policy.fancy.chain_prefx: unknown key; did you mean 'chain_prefix'?",
        "policy.fancy.refresh_seconds: expected an integer, got a string '1'",
    ])


def test_none_fills_only_optional_slots():
    with pytest.raises(cfg.ConfigError) as info:
        bind('[datastore]\ntype = "none"\n[routing]\ntype = "none"\n[ipam]\ntype = "none"\n[policy]\ntype = "fancy"\n')
    assert info.value.lines == ["datastore.type: no datastore plugin named 'none' is installed (installed: mem)"]


# -- the command line ------------------------------------------------------------


def check_config(path):
    exe = Path(sys.executable).with_name("calico-node")
    return subprocess.run([exe, "--config", str(path), "--check-config"], capture_output=True, text=True)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[health]\nport = 'x'\n", "health.port: expected an integer, got a string 'x'"),
        ("[health\n", "invalid TOML: "),
        ("nodename = 'a'\n", "nodename: unknown key; did you mean 'node_name'?"),
    ],
)
def test_check_config_prints_one_line_per_error_and_exits_1(tmp_path, text, expected):
    path = tmp_path / "calico.toml"
    path.write_text(text)
    result = check_config(path)
    assert result.returncode == 1
    assert f"{path}: {expected}" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_missing_file(tmp_path):
    result = check_config(tmp_path / "absent.toml")
    assert (result.returncode, result.stderr.strip()) == (1, f"{tmp_path / 'absent.toml'}: no such file")


def test_the_nodename_file_is_an_absolute_path_or_nothing():
    assert errors_of('[node]\nnodename_file = "var/lib/calico/nodename"\n') == [
        "node.nodename_file: must be an absolute path, got 'var/lib/calico/nodename'"]
    assert cfg.parse('[node]\nnodename_file = ""\n', "calico.toml").node.nodename_file == ""
