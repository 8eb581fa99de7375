"""The machinery every resource type shares: JSON keys, checks, and the problem walker.

Resource types are ``@model`` classes: frozen, keyword-only attrs classes whose fields
are declared with :func:`field`. A field may carry checks (the shared validators of
:mod:`pycalico.core.schema`, or :class:`Many` for checks that report several problems);
a class may add cross-field checks in a ``_checks(self)`` method yielding
``(relative path, message)`` pairs.

Checks run when an object is built in Python (the first failure raises
:class:`~pycalico.core.schema.FieldError`), except while loading a manifest: then
:func:`deferred_checks` postpones them so that :func:`problems` can walk the finished
object and report every problem of a document at its full path
(``spec.ingress[0].protocol``) instead of stopping at the first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from pycalico.core.schema import FieldError, camel

Problem = tuple[str, str]  # (path in the user's keys, message)


class ResourceError(ValueError):
    """Resources that cannot be used: ``lines`` holds one ``where: path: problem`` each."""

    def __init__(self, lines: list[str]):
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


# --- JSON keys ----------------------------------------------------------------------
# The converter renames every attrs field with one function of the field's name, so a
# Python name must mean the same JSON key in every class. Most keys are camel(name);
# the others (Calico's ``peerIP``, ``ipipMTU``...) are registered here by ``model``.

KEYS: dict[str, str] = {}


def key(name: str) -> str:
    """The JSON key of the Python attribute ``name`` (``peer_ip`` -> ``peerIP``)."""
    return KEYS.get(name) or camel(name)


_SEEN: dict[str, str] = {}  # attribute name -> first class that used its plain camel key


def register_keys(cls: type) -> None:
    """Record the JSON keys of ``cls``; a name must map to one key in every class."""
    for a in attrs.fields(cls):
        json_key = a.metadata.get("key") or camel(a.name)
        if json_key == camel(a.name):
            if a.name in KEYS:
                raise TypeError(f"{cls.__name__}.{a.name}: needs key {KEYS[a.name]!r} as registered elsewhere")
            _SEEN.setdefault(a.name, cls.__name__)
        elif KEYS.get(a.name, json_key) != json_key:
            raise TypeError(f"{cls.__name__}.{a.name}: key {json_key!r} clashes with {KEYS[a.name]!r}")
        elif a.name in _SEEN:
            raise TypeError(f"{cls.__name__}.{a.name}: key {json_key!r} clashes with {_SEEN[a.name]}")
        else:
            KEYS[a.name] = json_key


# --- checks -------------------------------------------------------------------------

_state = threading.local()


@contextlib.contextmanager
def deferred_checks() -> Iterator[None]:
    """Build objects without running field checks (this thread only); walk them later."""
    before = getattr(_state, "defer", False)
    _state.defer = True
    try:
        yield
    finally:
        _state.defer = before


class Many:
    """A check that may find several problems: ``fn(value)`` yields (sub-path, message).

    The sub-path is relative to the field: ``"[2]"`` for a list item, ``"app"`` for a
    map key, ``""`` for the field itself.
    """

    def __init__(self, fn: Callable[[Any], Iterable[Problem]]):
        self.fn = fn

    def problems(self, value: Any) -> list[Problem]:
        return [] if value is None else list(self.fn(value))


def each(test: Callable[[Any], None]) -> Many:
    """Check every item of a list with ``test``, which raises ValueError with its message."""

    def run(items: Any) -> Iterator[Problem]:
        for i, item in enumerate(items):
            if item is None:
                continue
            try:
                test(item)
            except ValueError as exc:
                yield f"[{i}]", str(exc)

    return Many(run)


def join(path: str, sub: str) -> str:
    if not sub:
        return path
    if not path or sub.startswith("["):
        return path + sub
    return f"{path}.{sub}"


def _unset(value: Any) -> bool:
    """None, or "": Calico's checks are ``omitempty``, an empty string means not set."""
    return value is None or (isinstance(value, str) and value == "")


def _run_now(checks: tuple) -> Callable:
    def validate(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if _unset(value) or getattr(_state, "defer", False):
            return
        for chk in checks:
            if isinstance(chk, Many):
                found = chk.problems(value)
                if found:
                    sub, message = found[0]
                    raise FieldError(attribute.name, f"{sub}: {message}" if sub else message)
            else:
                chk(inst, attribute, value)

    return validate


_NOTHING = object()


def field(*checks: Any, key: str | None = None, default: Any = None, factory: Any = _NOTHING, type: Any = None) -> Any:
    """An optional model field (``None`` = not set) with its checks and JSON key."""
    metadata: dict[str, Any] = {"checks": checks}
    if key is not None:
        metadata["key"] = key
    validator = _run_now(checks) if checks else None
    if factory is not _NOTHING:
        return attrs.field(factory=factory, validator=validator, metadata=metadata, type=type)
    return attrs.field(default=default, validator=validator, metadata=metadata, type=type)


def model(cls: type) -> type:
    """Make ``cls`` a frozen keyword-only attrs class and register its JSON keys."""
    if "__attrs_attrs__" not in cls.__dict__:
        cls = attrs.frozen(kw_only=True)(cls)
    register_keys(cls)
    return cls


# --- the walker ---------------------------------------------------------------------


def problems(obj: Any, path: str = "") -> list[Problem]:
    """Every problem of ``obj`` and the objects it holds, at full paths below ``path``."""
    found: list[Problem] = []
    _walk(obj, path, found)
    return found


def _walk(obj: Any, path: str, found: list[Problem]) -> None:
    if attrs.has(type(obj)):
        for a in attrs.fields(type(obj)):
            value = getattr(obj, a.name)
            where = join(path, key(a.name))
            if not _unset(value):
                for chk in a.metadata.get("checks", ()):
                    if isinstance(chk, Many):
                        found.extend((join(where, sub), msg) for sub, msg in chk.problems(value))
                        continue
                    try:
                        chk(obj, a, value)
                    except ValueError as exc:  # FieldError included
                        found.append((where, str(exc)))
            _walk(value, where, found)
        cross = getattr(obj, "_checks", None)
        if cross is not None:
            found.extend((join(path, sub), msg) for sub, msg in cross())
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            if attrs.has(type(item)):
                _walk(item, f"{path}[{i}]", found)
    elif isinstance(obj, dict):
        for k, item in obj.items():
            if attrs.has(type(item)):
                _walk(item, join(path, str(k)), found)
