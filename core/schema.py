"""Typed data in, typed data out: the cattrs converters and their error lines.

Both calico.toml (snake_case keys) and the v3 resources (camelCase keys) are attrs
classes structured by cattrs. This module holds what they share:

* a converter factory that renames keys, refuses unknown keys and is strict about
  scalar types (TOML and YAML are typed: ``"5"`` is not a port number);
* attrs validators that name the field they check, so a failure can be reported at
  its full path;
* :func:`error_lines`, which turns a cattrs exception tree into one line per problem,
  ``spec.blockSize: must be between 20 and 32``, with the user's key names.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterator
from typing import Any, Literal, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import is_mapping, is_sequence, list_structure_factory, mapping_structure_factory
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

KeyStyle = Callable[[str], str]


def snake(name: str) -> str:
    return name


def camel(name: str) -> str:
    """``block_size`` -> ``blockSize``; a trailing ``_`` (``from_``) is dropped."""
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class FieldError(ValueError):
    """A validator's verdict on one field; ``field`` is the attrs attribute name."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# --- validators ---------------------------------------------------------------------
# attrs runs these inside __init__, where cattrs can no longer tell which field failed;
# raising FieldError carries the field name out to error_lines().


def check(predicate: Callable[[Any], bool], message: str) -> Callable:
    """A validator: ``predicate(value)`` must hold, else ``message`` (None is skipped)."""

    def validate(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and not predicate(value):
            raise FieldError(attribute.name, message.format(value=value))

    return validate


@attrs.frozen
class Range:
    """A validator: ``minimum <= value <= maximum`` (None is skipped). The bounds stay
    readable so that the calico.toml reference states them from the same place."""

    minimum: int | float
    maximum: int | float

    def __call__(self, _inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and not self.minimum <= value <= self.maximum:
            raise FieldError(attribute.name, f"must be between {self.minimum} and {self.maximum}, got {value}")


def in_range(low: int | float, high: int | float) -> Range:
    return Range(low, high)


def absolute_path(empty: bool = False) -> Callable:
    """A validator: an absolute path; with ``empty``, also "" (the feature switched off)."""

    def validate(_inst: Any, attribute: attrs.Attribute, value: str) -> None:
        if not (empty and value == "") and not value.startswith("/"):
            raise FieldError(attribute.name, f"must be an absolute path, got {value!r}")

    return validate


def one_of(*choices: str) -> Callable:
    listed = ", ".join(choices)
    return check(lambda v: v in choices, f"must be one of {listed}, got {{value!r}}")


def matches(pattern: str, what: str) -> Callable:
    regex = re.compile(pattern)
    return check(lambda v: regex.fullmatch(v) is not None, f"{{value!r}} is not {what}")


def validated(fn: Callable[[Any], None]) -> Callable:
    """A validator from a function that raises ValueError with its own message."""

    def validate(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is None:
            return
        try:
            fn(value)
        except FieldError:
            raise
        except ValueError as exc:
            raise FieldError(attribute.name, str(exc)) from None

    return validate


# --- the converter ------------------------------------------------------------------

_SCALARS: dict[type, str] = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _strict(kind: type) -> Callable[[Any, type], Any]:
    expected = _SCALARS[kind]

    def structure(value: Any, _type: type) -> Any:
        # bool is an int subclass in Python, never in TOML or YAML.
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise TypeError(f"expected {expected}, got {_describe(value)}")
        return value

    return structure


def _describe(value: Any) -> str:
    names = {dict: "a table", list: "a list", bool: "a boolean", str: "a string", int: "an integer"}
    return f"{names.get(type(value), type(value).__name__)} {value!r}"


def _structure_literal(value: Any, type_: Any) -> Any:
    choices = get_args(type_)
    if value not in choices or type(value) is not type(choices[0]):
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"must be one of {listed}, got {value!r}")
    return value


def _structure_network(value: Any, type_: type) -> Any:
    if not isinstance(value, str):
        raise TypeError(f"expected a CIDR string, got {_describe(value)}")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid CIDR: {exc}") from None


def _structure_address(value: Any, type_: type) -> Any:
    if not isinstance(value, str):
        raise TypeError(f"expected an IP address string, got {_describe(value)}")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid IP address") from None


def make_converter(key: KeyStyle, omit_none: bool = True) -> cattrs.Converter:
    """A converter whose attrs classes read and write keys named by ``key(attribute)``.

    Unknown keys are refused, scalars are not coerced, and ``None`` fields are left
    out on the way back (``omit_none``), so a manifest that never set a field does not
    gain it when dumped.
    """
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for kind in _SCALARS:
        conv.register_structure_hook(kind, _strict(kind))
    conv.register_structure_hook_func(lambda t: get_origin(t) is Literal, _structure_literal)
    for net in (ipaddress.IPv4Network, ipaddress.IPv6Network):
        conv.register_structure_hook(net, _structure_network)
        conv.register_unstructure_hook(net, str)
    for addr in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        conv.register_structure_hook(addr, _structure_address)
        conv.register_unstructure_hook(addr, str)

    def checked(attribute: attrs.Attribute) -> Callable[[Any, type], Any]:
        # Run the field's validator as soon as the field is structured, so that its
        # verdict is reported with every other problem of the document, not only
        # once all fields are well-typed and attrs' __init__ runs.
        def structure(value: Any, type_: type) -> Any:
            result = conv.get_structure_hook(type_)(value, type_)
            try:
                attribute.validator(None, attribute, result)
            except FieldError as exc:
                raise ValueError(str(exc)) from None
            return result

        return structure

    def overrides(cls: type) -> dict[str, Any]:
        attrs.resolve_types(cls)
        return {
            a.name: override(rename=key(a.name), struct_hook=checked(a) if a.validator else None)
            for a in attrs.fields(cls)
        }

    def structure_factory(cls: type) -> Callable:
        plain = make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **overrides(cls))

        def structure(value: Any, type_: type) -> Any:
            if not isinstance(value, dict):
                raise TypeError(f"expected a table, got {_describe(value)}")
            return plain(value, type_)

        return structure

    def unstructure_factory(cls: type) -> Callable:
        plain = make_dict_unstructure_fn(cls, conv, **overrides(cls))
        if not omit_none:
            return plain
        return lambda obj: {k: v for k, v in plain(obj).items() if v is not None}

    def container(test: Callable[[Any], bool], expected: type, word: str, factory: Callable) -> None:
        def hook_factory(type_: type, converter: cattrs.Converter) -> Callable:
            inner = factory(type_, converter)

            def structure(value: Any, t: type) -> Any:
                if not isinstance(value, expected):
                    raise TypeError(f"expected {word}, got {_describe(value)}")
                result = inner(value, t)
                # Frozen types hold tuples so that they stay hashable.
                return tuple(result) if get_origin(t) is tuple else result

            return structure

        conv.register_structure_hook_factory(test, hook_factory)

    container(is_sequence, list, "a list", list_structure_factory)
    container(is_mapping, dict, "a table", mapping_structure_factory)
    conv.register_structure_hook_factory(attrs.has, structure_factory)
    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)
    return conv


# --- error lines --------------------------------------------------------------------


def error_lines(exc: BaseException, cls: type, key: KeyStyle, root: str = "") -> list[str]:
    """One ``path: problem`` line for every leaf of a cattrs exception tree.

    Paths use the user's key names (``key``), dotted with ``[i]`` for list items, below
    ``root``. Unknown keys name the nearest valid key.
    """
    return [f"{path or '(top level)'}: {message}" for path, message in _walk(exc, cls, key, root)]


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


def _walk(exc: BaseException, cls: Any, key: KeyStyle, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(exc, ClassValidationError):
        fields = {a.name: a.type for a in attrs.fields(exc.cl)} if attrs.has(exc.cl) else {}
        for sub in exc.exceptions:
            note = _note(sub, AttributeValidationNote)
            if note is not None:
                yield from _walk(sub, fields.get(note.name), key, _join(path, key(note.name)))
            else:
                yield from _walk(sub, exc.cl, key, path)
    elif isinstance(exc, IterableValidationError):
        for sub in exc.exceptions:
            note = _note(sub, IterableValidationNote)
            index = note.index if note is not None else "?"
            inner = f"{path}[{index}]" if isinstance(index, int) else _join(path, str(index))
            yield from _walk(sub, None, key, inner)
    elif isinstance(exc, ForbiddenExtraKeysError):
        valid = [key(a.name) for a in attrs.fields(exc.cl)]
        for extra in sorted(exc.extra_fields):
            near = difflib.get_close_matches(extra, valid, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {_some(valid)}"
            yield _join(path, extra), f"unknown key{hint}"
    elif isinstance(exc, FieldError):
        yield _join(path, key(exc.field)), str(exc)
    elif isinstance(exc, KeyError):
        yield path, "is required"
    elif isinstance(exc, (TypeError, ValueError)):
        yield path, _plain(exc)
    elif isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            yield from _walk(sub, cls, key, path)
    else:
        yield path, _plain(exc)


def _some(names: list[str], most: int = 10) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, ... ({len(names)} in all)"


def _note(exc: BaseException, kind: type) -> Any:
    return next((n for n in getattr(exc, "__notes__", []) if isinstance(n, kind)), None)


def _plain(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
