"""What ``calicoctl get`` prints (``calicoctl/calicoctl/commands/common/printer.go``).

* ``-o yaml`` / ``-o json``: one result is printed bare, several as a sequence. A get
  without a name has one result, the ``<Kind>List`` (``apiVersion``, ``kind``,
  ``metadata.resourceVersion``, ``items``). No result at all prints ``null``, as Go
  marshals an empty result slice. YAML keys are sorted, as Calico's YAML (made from
  JSON) has them; JSON keeps the field order of the Go types, ``kind`` first.
* ``-o ps`` / ``-o wide`` / ``-o custom-columns=A,B``: one table per result, laid out
  like Go's tabwriter (minimum width 5, padding 3, every cell padded, trailing spaces
  included), each followed by an empty line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pycalico.core.ctl import kinds

V3 = "projectcalico.org/v3"


@dataclass(frozen=True)
class ResourceList:
    """The result of a get without a name: every ``kind`` resource at ``revision``."""

    kind: str
    items: tuple = ()
    revision: Any = None


class PrintError(Exception):
    pass


def kind_of(obj: Any) -> str:
    if isinstance(obj, ResourceList):
        return obj.kind
    from pycalico.core.resources.codec import kind_info

    return kind_info(obj).kind


def document(obj: Any) -> dict:
    """The JSON document of a resource or of a ``<Kind>List``."""
    if isinstance(obj, ResourceList):
        meta = {"resourceVersion": str(obj.revision)} if obj.revision not in (None, "") else {}
        return {
            "kind": f"{obj.kind}List",
            "apiVersion": V3,
            "metadata": meta,
            "items": [document(item) for item in obj.items],
        }
    from pycalico.core.resources.codec import to_dict

    doc = to_dict(obj)
    first = {k: doc[k] for k in ("kind", "apiVersion", "metadata") if k in doc}
    return {**first, **doc}


def go_numbers(value: Any) -> Any:
    """Whole floats as Go's JSON writes float64 (``100``, not ``100.0``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: go_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [go_numbers(v) for v in value]
    return value


def _body(objs: Sequence[Any]) -> Any:
    if not objs:
        return None
    if len(objs) == 1:
        return go_numbers(document(objs[0]))
    return [go_numbers(document(o)) for o in objs]


# --- YAML -------------------------------------------------------------------------------


def _dumper():
    import yaml

    class GoYamlDumper(yaml.SafeDumper):
        """Quote like Go's yaml: double quotes for strings that would read back as
        another type ("123", "true", ""), literal blocks for multi-line strings."""

    def represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
        style = None
        if "\n" in data:
            style = "|"
        elif dumper.resolve(yaml.ScalarNode, data, (True, False)) != "tag:yaml.org,2002:str":
            style = '"'
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    GoYamlDumper.add_representer(str, represent_str)
    return GoYamlDumper


def render_yaml(objs: Sequence[Any]) -> str:
    import yaml

    return yaml.dump(_body(objs), Dumper=_dumper(), sort_keys=True, default_flow_style=False, allow_unicode=True)


# --- JSON -------------------------------------------------------------------------------

_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def render_json(objs: Sequence[Any]) -> str:
    text = json.dumps(_body(objs), indent=2, ensure_ascii=False)
    # Go's encoder escapes these for HTML safety; outside strings they cannot occur.
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)
    return text + "\n"


# --- tables -----------------------------------------------------------------------------


def headings_for(kind: str, headings: Sequence[str] | None, wide: bool, print_namespace: bool) -> list[str]:
    spec = kinds.managed(kind)
    if spec is None:
        raise PrintError(f"no table format for {kind}")
    heads = list(headings) if headings is not None else list(spec.wide if wide else spec.headings)
    if print_namespace and "NAMESPACE" in spec.columns:
        heads.insert(0, "NAMESPACE")
    for heading in heads:
        if heading not in spec.columns:
            raise PrintError(f"Unknown heading {heading}, valid values are: {', '.join(sorted(spec.columns))}")
    return heads


def tabulate(rows: Iterable[Sequence[str]]) -> str:
    """Go's tabwriter (minwidth 5, padding 3, padchar ' ') over tab-terminated cells."""
    rows = [list(r) for r in rows]
    if not rows:
        return ""
    widths = [max(5, *(len(r[i]) + 3 for r in rows)) for i in range(len(rows[0]))]
    return "".join("".join(cell.ljust(w) for cell, w in zip(row, widths)) + "\n" for row in rows)


def render_tables(
    objs: Sequence[Any],
    headings: Sequence[str] | None = None,
    wide: bool = False,
    print_namespace: bool = False,
    config: Callable[[str], str] | None = None,
) -> Iterable[str]:
    """One table (and an empty line) per result; raises PrintError on an unknown heading
    before that table is printed."""
    cfg = config or (lambda name: "64512")
    for obj in objs:
        kind = kind_of(obj)
        heads = headings_for(kind, headings, wide, print_namespace)
        columns = kinds.managed(kind).columns
        items = obj.items if isinstance(obj, ResourceList) else (obj,)
        docs = [document(item) for item in items]
        rows = [heads] + [[columns[h](doc, cfg) for h in heads] for doc in docs]
        yield tabulate(rows) + "\n"
