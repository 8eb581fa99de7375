"""Filters the calico_node role renders calico.toml with.

``calico_node_toml``: role variables (one dict per top-level table) to TOML text.
``calico_node_dig``: a value inside nested dicts, for the role's bounds checks.

Ansible ships no TOML writer and the role may use ``ansible.builtin`` only, so the
writer is here: strings, integers, floats, booleans, lists (inline arrays, which may
hold inline tables) and nested tables. ``None`` means "unset": the key is left out,
so calico-node applies its own default. Kept to the standard library, since it runs
on the controller.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# TOML's basic strings: these escapes, every other control character (and DEL) as \uXXXX.
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _key(name: Any, path: str) -> str:
    if not isinstance(name, str) or not name:
        raise AnsibleFilterError(f"{path}: TOML keys must be non-empty strings, got {name!r}")
    return name if _BARE_KEY.match(name) else _string(name)


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_array(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _value(value: Any, path: str) -> str:
    # bool before int: True is an int to Python, not to TOML.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(float(value))
    if isinstance(value, str):
        return _string(str(value))
    if _is_array(value):
        if any(item is None for item in value):
            raise AnsibleFilterError(f"{path}: TOML arrays cannot hold null")
        return "[" + ", ".join(_value(item, f"{path}[{i}]") for i, item in enumerate(value)) + "]"
    if _is_table(value):
        pairs = [f"{_key(k, path)} = {_value(v, f'{path}.{k}')}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(pairs) + "}"
    raise AnsibleFilterError(f"{path}: {type(value).__name__} has no TOML form (value {value!r})")


def _table(table: Mapping, header: list[str], lines: list[str]) -> None:
    # A table's own keys must come before its sub-tables, whatever the dict's order.
    scalars = [(k, v) for k, v in table.items() if v is not None and not _is_table(v)]
    tables = [(k, v) for k, v in table.items() if _is_table(v)]
    path = ".".join(header) or "<top>"
    if header:
        if lines:
            lines.append("")
        lines.append("[" + ".".join(_key(k, path) for k in header) + "]")
    lines.extend(f"{_key(k, path)} = {_value(v, f'{path}.{k}')}" for k, v in scalars)
    for name, sub in tables:
        _table(sub, [*header, name], lines)


def calico_node_toml(data: Mapping) -> str:
    """``data`` (top-level keys, then tables) as TOML text ending in a newline."""
    if not _is_table(data):
        raise AnsibleFilterError(f"calico_node_toml expects a dict, got {type(data).__name__}")
    lines: list[str] = []
    _table(data, [], lines)
    return "\n".join(lines) + "\n"


def calico_node_dig(data: Any, path: str) -> Any:
    """``data[k0][k1]...`` for ``path`` ``"k0.k1"`` (``""``: ``data``), or None where
    a key is missing or a level is no dict."""
    for key in filter(None, path.split(".")):
        if not _is_table(data) or key not in data:
            return None
        data = data[key]
    return data


class FilterModule:
    def filters(self) -> dict:
        return {"calico_node_toml": calico_node_toml, "calico_node_dig": calico_node_dig}
