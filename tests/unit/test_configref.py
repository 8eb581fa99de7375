import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Literal

import attrs
import pytest

from pycalico.core import config as cfg
from pycalico.core import configref
from pycalico.core.plugins import Plugins

REPO = Path(__file__).resolve().parents[2]
BOUND_DEFAULTS = Plugins.load(cfg.Config(), configure=False).config


@pytest.mark.parametrize("what", ["markdown", "example"])
def test_committed_files_are_what_the_types_generate(what):
    target = REPO / configref.TARGETS[what]
    assert target.read_text() == configref.RENDER[what](), (
        f"{configref.TARGETS[what]} is out of date: run `python -m pycalico.core.configref {what} --write`"
    )


def test_the_command_prints_what_it_would_write():
    out = subprocess.run(
        [sys.executable, "-m", "pycalico.core.configref", "example"], capture_output=True, text=True, check=True
    ).stdout
    assert out == configref.example()


def _attrs_paths(cls, path=()):
    """Every key below ``cls`` found by walking attrs fields directly, slots aside."""
    for a in attrs.fields(attrs.resolve_types(cls)):
        if a.type is cfg.Slot:
            continue
        if attrs.has(a.type):
            yield from _attrs_paths(a.type, (*path, a.name))
        else:
            yield (*path, a.name)


def _options_classes():
    """(slot, plugin) -> options class, as the real loader binds each plugin's table."""
    classes = {}
    for slot, names in configref.builtin_schemas().items():
        for name in names:
            config = attrs.evolve(cfg.Config(), **{slot: cfg.Slot(type=name)})
            options = Plugins.load(config, configure=False).config.slot(slot).options
            if options is not None:
                classes[slot, name] = type(options)
    return classes


def test_every_field_of_every_type_is_in_the_reference():
    expected = set(_attrs_paths(cfg.Config)) | {(slot, "type") for slot in cfg.SLOTS}
    classes = _options_classes()
    assert {"bird", "vxlan", "ipip", "etcd", "kubernetes", "iptables", "nftables"} == {n for _, n in classes}
    for (slot, name), cls in classes.items():
        expected |= {(slot, name, *p) for p in _attrs_paths(cls)}
    paths = [f.path for f in configref.fields()]
    assert len(paths) == len(set(paths))
    assert set(paths) == expected


def test_fields_are_in_file_order_scalars_before_tables():
    fields = configref.fields()
    assert fields[0].path == ("node_name",)
    tables = [f.path[:-1] for f in fields]
    # Each table's keys are together, and a table comes before the tables under it.
    seen = []
    for table in tables:
        if not seen or seen[-1] != table:
            assert table not in seen
            seen.append(table)
    assert seen.index(("typha",)) < seen.index(("typha", "server")) < seen.index(("typha", "server", "health"))
    assert seen.index(("routing",)) < seen.index(("routing", "bird")) < seen.index(("policy",))


def test_fields_state_types_defaults_choices_and_bounds():
    by_path = {f.path: f for f in configref.fields()}
    assert by_path["health", "port"] == configref.Field(
        ("health", "port"), "int", None, 9099, None, 1, 65535, by_path["health", "port"].doc
    )
    assert by_path["metrics", "port"].default == 9091
    assert by_path["logging", "level"].choices == ("debug", "info", "warning", "error")
    assert by_path["routing", "type"].default == "bird" and by_path["routing", "type"].choices is None
    inbound = by_path["policy", "iptables", "failsafe_inbound"]
    assert (inbound.type, inbound.elements, inbound.default) == ("list", "str", None)
    assert by_path["datastore", "etcd", "endpoints"].default == ["http://127.0.0.1:2379"]
    vni = by_path["routing", "vxlan", "vni"]
    assert (vni.type, vni.default, vni.minimum, vni.maximum) == ("int", None, 1, 0xFFFFFF)
    assert by_path["policy", "nftables", "deny_action"].choices == ("drop", "reject")
    for field in by_path.values():
        assert field.doc.endswith(".") and field.type in ("str", "int", "float", "bool", "list"), field
        if field.default is not None and field.type != "list":
            kind = {"str": str, "int": int, "float": float, "bool": bool}[field.type]
            assert type(field.default) is kind, field


def _document(field: configref.Field, table: configref.Table, value) -> str:
    """The smallest calico.toml that sets ``field`` to ``value``."""
    head = f'[{field.path[0]}]\ntype = "{table.plugin}"\n' if table.plugin else ""
    where = f"[{'.'.join(field.path[:-1])}]\n" if len(field.path) > 1 else ""
    return f"{head}{where}{field.path[-1]} = {configref.toml_value(value)}\n"


def _problems(text: str) -> list[str]:
    try:
        Plugins.load(cfg.parse(text, "calico.toml"), "calico.toml", configure=False)
    except cfg.ConfigError as exc:
        return exc.lines
    return []


def test_the_stated_bounds_and_choices_are_the_ones_the_loader_enforces():
    checked = 0
    for table in configref.tables():
        for field in table.keys:
            if field.minimum is not None:
                for value, ok in ((field.minimum, True), (field.maximum, True), (field.maximum + 1, False)):
                    value = float(value) if field.type == "float" else value
                    lines = _problems(_document(field, table, value))
                    bad = [line for line in lines if line.startswith(f"{'.'.join(field.path)}: must be between")]
                    # A key checked against another (pong > 2 pings) may complain alone.
                    assert bool(bad) != ok, (field.path, value, lines)
                checked += 1
            if field.choices is not None:
                assert _problems(_document(field, table, field.choices[-1])) == []
                assert f"{'.'.join(field.path)}: must be one of" in "\n".join(
                    _problems(_document(field, table, "not-a-choice"))
                )
                checked += 1
    assert checked >= 30


def test_the_example_loads_to_the_defaults():
    text = configref.example()
    assert tomllib.loads(text) == cfg.dump(cfg.Config())
    config = cfg.parse(text, "calico.toml.example")
    assert config == cfg.Config()
    assert Plugins.load(config, configure=False).config == BOUND_DEFAULTS


def test_each_commented_plugin_table_loads_with_its_plugin():
    text = configref.example()
    for table in configref.tables():
        if table.plugin is None:
            continue
        block = text.split(f"# [{'.'.join(table.path)}]\n", 1)[1].split("\n\n", 1)[0]
        body = "\n".join(line[2:] for line in block.splitlines())
        slot = table.path[0]
        document = f'[{slot}]\ntype = "{table.plugin}"\n[{slot}.{table.plugin}]\n{body}\n'
        options = Plugins.load(cfg.parse(document), configure=False).config.slot(slot).options
        # Every key as its default, but those unset by default as their example.
        expected = {**attrs.asdict(type(options)()), **table.examples}
        assert json.loads(json.dumps(attrs.asdict(options))) == json.loads(json.dumps(expected)), table.path


@attrs.frozen
class Undocumented:
    mtu: int = attrs.field(default=0, metadata={"doc": "Documented."})
    vni: int = 4096


@attrs.frozen
class NoExample:
    mode: Literal["a", "b"] | None = attrs.field(default=None, metadata={"doc": "Unset: a."})


@pytest.mark.parametrize(
    "cls, message",
    [
        (Undocumented, "routing.thirdparty.vni (Undocumented.vni) has no metadata doc"),
        (NoExample, "routing.thirdparty.mode (NoExample.mode) is unset by default and has no metadata example"),
    ],
)
def test_a_field_without_its_doc_fails(cls, message):
    schemas = {**configref.builtin_schemas(), "routing": {"thirdparty": cls}}
    with pytest.raises(configref.UndocumentedField) as info:
        configref.fields(schemas)
    assert str(info.value) == message
