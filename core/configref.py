"""The calico.toml reference, read from the attrs types that structure the file.

Every key of calico.toml is a field of an attrs class: :class:`~pycalico.core.config.Config`
and its tables for the file's own keys, and for each slot the options class that each
built-in plugin declares (``pycalico_config_schema``) for its table. A key's text is its
field's ``metadata["doc"]``; a key unset by default also gives ``metadata["example"]``, the
value the example file shows for it. Bounds come from the field's
:class:`~pycalico.core.schema.Range` validator and choices from its ``Literal`` type, so
nothing here restates them.

:func:`markdown` and :func:`example` render docs/calico-toml-reference.md and
calico.toml.example; a test keeps the committed files equal to them::

    python -m pycalico.core.configref markdown|example [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import types
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import attrs

from pycalico.core import config as cfg
from pycalico.core.plugins import Registry, group
from pycalico.core.schema import Range

# Slot -> plugin name -> its options class (None: the plugin takes no options).
Schemas = Mapping[str, Mapping[str, "type | None"]]

_KINDS = {str: "str", int: "int", float: "float", bool: "bool"}
_WORDS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


@attrs.frozen
class Field:
    """One key of calico.toml.

    ``default`` is a plain TOML value (lists, not tuples), or None when the key is unset
    by default; ``elements`` is the element type of a ``list``; ``choices``, ``minimum``
    and ``maximum`` are None where the type does not restrict the value so.
    """

    path: tuple[str, ...]
    type: str
    elements: str | None
    default: Any
    choices: tuple | None
    minimum: int | float | None
    maximum: int | float | None
    doc: str


@attrs.frozen
class Table:
    """One TOML table (``path`` () for the top level) and its own keys.

    ``plugin`` names the plugin whose options the table holds (None for the file's own
    tables): such a table is read only when its plugin is chosen, so the example file
    shows it commented out. ``examples`` maps a key unset by default to the value shown.
    """

    path: tuple[str, ...]
    doc: str
    keys: tuple[Field, ...]
    examples: Mapping[str, Any]
    plugin: str | None = None

    @property
    def header(self) -> str:
        return f"[{'.'.join(self.path)}]" if self.path else "top level"


class UndocumentedField(ValueError):
    """A field of a calico.toml type without ``metadata["doc"]`` (or, unset by default,
    without ``metadata["example"]``)."""


def builtin_schemas() -> dict[str, dict[str, type | None]]:
    """The options class of every plugin pycalico itself ships, by slot and name.

    Plugins installed by other packages are left out, so the reference is the same
    wherever it is generated.
    """
    registry = Registry()
    schemas: dict[str, dict[str, type | None]] = {}
    for slot in cfg.SLOTS:
        names = sorted(ep.name for ep in entry_points(group=group(slot)) if ep.dist and ep.dist.name == "pycalico")
        schemas[slot] = {name: _schema(registry.load(slot, name), slot, name) for name in names}
    return schemas


def _schema(plugin: object, slot: str, name: str) -> type | None:
    hook = getattr(plugin, "pycalico_config_schema", None)
    return hook(slot=slot, name=name) if hook else None


def tables(schemas: Schemas | None = None) -> list[Table]:
    """Every table of calico.toml in file order: the top level, then each table
    followed by its sub-tables; a slot's table by the tables of its plugins
    (``schemas``, the built-in plugins by default).

    Raises UndocumentedField naming the first key without a doc.
    """
    return list(_tables(cfg.Config, cfg.Config(), (), "", schemas if schemas is not None else builtin_schemas()))


def fields(schemas: Schemas | None = None) -> list[Field]:
    """Every key of calico.toml, in file order: each table's own keys before its
    sub-tables' keys."""
    return [field for table in tables(schemas) for field in table.keys]


def _tables(cls: type, value: Any, path: tuple[str, ...], doc: str, schemas: Schemas) -> Iterator[Table]:
    attrs.resolve_types(cls)
    keys, examples, below = [], {}, []
    for attribute in attrs.fields(cls):
        sub = (*path, attribute.name)
        text = _doc(cls, attribute, sub)
        inner = _strip_none(attribute.type)
        if inner is cfg.Slot:
            below.append(_slot(attribute.name, getattr(value, attribute.name), text, schemas))
        elif attrs.has(inner):
            below.append(_tables(inner, getattr(value, attribute.name), sub, text, schemas))
        else:
            field = _field(cls, attribute, sub, getattr(value, attribute.name), text)
            if field.default is None:
                examples[attribute.name] = _example(cls, attribute, sub)
            keys.append(field)
    yield Table(path, doc, tuple(keys), examples)
    for tables_below in below:
        yield from tables_below


def _slot(name: str, slot: cfg.Slot, doc: str, schemas: Schemas) -> Iterator[Table]:
    """A slot's table: its ``type`` key, then one table per plugin that takes options."""
    plugins = schemas.get(name, {})
    type_attr = attrs.fields(cfg.Slot).type
    builtin = ", ".join(f"`{p}`" for p in plugins)
    empty = f"; `{cfg.NONE}` leaves the slot empty" if name in cfg.OPTIONAL_SLOTS else ""
    kind = Field(
        path=(name, "type"),
        type="str",
        elements=None,
        default=slot.type,
        # Not choices: any installed plugin may fill the slot.
        choices=None,
        minimum=None,
        maximum=None,
        doc=f"{_doc(cfg.Slot, type_attr, (name, 'type'))} Built in: {builtin}{empty}.",
    )
    yield Table((name,), doc, (kind,), {})
    for plugin, options in plugins.items():
        if options is None:
            continue
        what = f"Options of the `{plugin}` {name} plugin, read when `{name}.type = \"{plugin}\"`."
        for table in _tables(options, options(), (name, plugin), what, schemas):
            yield attrs.evolve(table, plugin=plugin)


def _doc(cls: type, attribute: attrs.Attribute, path: tuple[str, ...]) -> str:
    doc = attribute.metadata.get("doc")
    if not doc:
        raise UndocumentedField(f"{'.'.join(path)} ({cls.__qualname__}.{attribute.name}) has no metadata doc")
    return doc


def _example(cls: type, attribute: attrs.Attribute, path: tuple[str, ...]) -> Any:
    if "example" not in attribute.metadata:
        raise UndocumentedField(
            f"{'.'.join(path)} ({cls.__qualname__}.{attribute.name}) is unset by default and has no metadata example"
        )
    return attribute.metadata["example"]


def _field(cls: type, attribute: attrs.Attribute, path: tuple[str, ...], default: Any, doc: str) -> Field:
    kind, elements, choices = _kind(attribute.type, f"{'.'.join(path)} ({cls.__qualname__}.{attribute.name})")
    bounds = attribute.validator if isinstance(attribute.validator, Range) else None
    return Field(
        path=path,
        type=kind,
        elements=elements,
        default=_plain(default),
        choices=choices,
        minimum=bounds.minimum if bounds else None,
        maximum=bounds.maximum if bounds else None,
        doc=doc,
    )


def _strip_none(tp: Any) -> Any:
    """``X | None`` as ``X``."""
    if get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _kind(tp: Any, where: str) -> tuple[str, str | None, tuple | None]:
    """(type, element type, choices) of a key's Python type."""
    tp = _strip_none(tp)
    if get_origin(tp) is Literal:
        choices = get_args(tp)
        return _KINDS[type(choices[0])], None, choices
    if tp in _KINDS:
        return _KINDS[tp], None, None
    if get_origin(tp) in (tuple, list):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        if len(args) == 1 and args[0] in _KINDS:
            return "list", _KINDS[args[0]], None
    raise TypeError(f"{where}: calico.toml has no way to write {tp!r}")


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


# --- rendering ----------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """``value`` (str, int, float, bool or a list of them) as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string: the same escapes, \uXXXX included.
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def _comment(text: str, prefix: str) -> list[str]:
    return textwrap.wrap(text, 88, initial_indent=prefix, subsequent_indent=prefix,
                         break_on_hyphens=False, break_long_words=False)


_EXAMPLE_HEAD = """\
# calico.toml: the configuration of one pycalico node.
# Every key is shown with its default value; a key unset by default is commented out
# with an example value, as is each plugin's table (read only when its plugin is chosen).
# `calico-node --check-config --config FILE` validates a file and names each bad key
# with its TOML path. Generated by `python -m pycalico.core.configref example --write`
# from the attrs types: edit the fields' docs in core/config.py and the plugins' options.py.
"""


def example(schemas: Schemas | None = None) -> str:
    """calico.toml.example: every key with its default and its doc as a comment."""
    out = [_EXAMPLE_HEAD]
    for table in tables(schemas):
        # A plugin's table is commented out whole; its docs get a second "#".
        lead = "# " if table.plugin else ""
        if table.path:
            out += ["", *_comment(table.doc, "# "), f"{lead}[{'.'.join(table.path)}]"]
        for field in table.keys:
            out += _comment(field.doc, f"{lead}# ")
            if field.default is None:
                out.append(f"# {field.path[-1]} = {toml_value(table.examples[field.path[-1]])}")
            else:
                out.append(f"{lead}{field.path[-1]} = {toml_value(field.default)}")
    return "\n".join(out) + "\n"


_MARKDOWN_HEAD = """\
# calico.toml reference

<!-- Generated from the attrs types by `python -m pycalico.core.configref markdown --write`;
edit the fields' docs in core/config.py and the plugins' options.py, not this page. -->

calico.toml configures one node: calico-node reads `--config FILE`, else
`$CALICO_CONFIG`, else `/etc/calico/calico.toml`, and calico-typha the same; calicoctl
reads `--config` or `$CALICO_CONFIG` (else Calico's environment variables), the CNI plugin
the file its netconf's `calico_config` names. Every key is optional. Values are never coerced (`"9099"` is
not a port), unknown keys are refused, and `calico-node --check-config --config FILE`
names each bad key with its TOML path. How slots and plugin tables work:
[configuration.md](configuration.md); every key with its default, as a file:
[calico.toml.example](../calico.toml.example).

Each slot (`datastore`, `ipam`, `routing`, `policy`) names its plugin with `type`; the
tables below for the built-in plugins are read only when their plugin is chosen. A
third-party plugin documents its own table.
"""


def markdown(schemas: Schemas | None = None) -> str:
    """docs/calico-toml-reference.md: one section per table, one row per key."""
    out = [_MARKDOWN_HEAD]
    for table in tables(schemas):
        level = "##" if len(table.path) <= 1 else "###"
        out += [f"{level} {f'`{table.header}`' if table.path else 'Top-level keys'}", ""]
        if table.path:
            out += [table.doc, ""]
        out += ["| Key | Type | Default | Allowed | Description |", "|---|---|---|---|---|"]
        for field in table.keys:
            default = (f"unset (e.g. `{toml_value(table.examples[field.path[-1]])}`)"
                       if field.default is None else f"`{toml_value(field.default)}`")
            cells = [f"`{field.path[-1]}`", _type_words(field), default, _allowed(field), field.doc]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def _type_words(field: Field) -> str:
    return f"list of {_WORDS[field.elements]}s" if field.type == "list" else _WORDS[field.type]


def _allowed(field: Field) -> str:
    if field.choices is not None:
        return ", ".join(f"`{toml_value(c)}`" for c in field.choices)
    if field.minimum is not None:
        return f"{field.minimum} to {field.maximum}"
    return ""


# --- command line -------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"markdown": Path("docs/calico-toml-reference.md"), "example": Path("calico.toml.example")}
RENDER = {"markdown": markdown, "example": example}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pycalico.core.configref", description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=sorted(RENDER), help="the reference page or the example file")
    parser.add_argument("--write", action="store_true",
                        help=f"update the file in the source checkout ({', '.join(map(str, TARGETS.values()))})")
    args = parser.parse_args(argv)
    text = RENDER[args.what]()
    if not args.write:
        sys.stdout.write(text)
        return 0
    if not (REPO / "pyproject.toml").is_file():
        parser.error(f"--write needs a source checkout; {REPO} is not one")
    target = REPO / TARGETS[args.what]
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
