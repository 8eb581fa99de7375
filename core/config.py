"""calico.toml: the one file that configures a node.

The file's own keys are attrs classes below. Each slot (datastore, ipam, routing,
policy) names its plugin with ``type`` and may hold one table per plugin, named for
it (``[policy.iptables]``); the chosen plugin's table is structured with the class
the plugin declares (see ``pycalico_config_schema``), so its errors carry the same
TOML paths as the file's own keys.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from pycalico.core.schema import FieldError, error_lines, in_range, make_converter, matches, snake, validated

SLOTS = ("datastore", "ipam", "routing", "policy")
DEFAULT_PATH = Path("/etc/calico/calico.toml")
# "none" leaves a slot empty where Calico allows it: routing "none" is Calico's
# policy-only mode (CALICO_NETWORKING_BACKEND=none); ipam "none" means the agent
# allocates no tunnel addresses.
NONE = "none"
OPTIONAL_SLOTS = ("ipam", "routing")


class ConfigError(ValueError):
    """A calico.toml that cannot be used; ``lines`` holds one ``path: problem`` each."""

    def __init__(self, source: str, lines: list[str]):
        self.source = source
        self.lines = lines
        super().__init__("\n".join(f"{source}: {line}" for line in lines))


@attrs.frozen
class Slot:
    """One pluggable slot: which plugin fills it, and the tables of its plugins."""

    type: str
    tables: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    options: Any = None  # the chosen plugin's table, structured by its schema


@attrs.frozen
class Intervals:
    resync_seconds: float = attrs.field(default=90.0, validator=in_range(1, 86400))
    coalesce_seconds: float = attrs.field(default=0.1, validator=in_range(0, 10))
    reporting_seconds: float = attrs.field(default=30.0, validator=in_range(0, 86400))


@attrs.frozen
class Logging:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    file: str = ""


@attrs.frozen
class Endpoint:
    """Where an HTTP listener binds (health, metrics)."""

    enabled: bool = True
    host: str = "localhost"
    port: int = attrs.field(default=9099, validator=in_range(1, 65535))


def _health() -> Endpoint:
    return Endpoint(enabled=True, host="localhost", port=9099)


def _metrics() -> Endpoint:
    return Endpoint(enabled=False, host="0.0.0.0", port=9091)


def _check_ip(value: str) -> None:
    if value in ("autodetect", "none"):
        return
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not autodetect, none or an IPv4 address with prefix (198.51.100.11/24)") from None
    if "/" not in value:
        raise ValueError(f"{value!r} needs its prefix length, as Calico's IP does (e.g. {iface.ip}/24)")


def _check_method(value: str) -> None:
    from pycalico.core.autodetect import parse_method

    parse_method(value)


@attrs.frozen
class NodeSettings:
    """How this node registers itself (calico-node's IP, IP_AUTODETECTION_METHOD, AS)."""

    ip: str = attrs.field(default="autodetect", validator=validated(_check_ip))
    ip_autodetection_method: str = attrs.field(default="first-found", validator=validated(_check_method))
    as_number: int | None = attrs.field(default=None, validator=in_range(1, 4294967295))


@attrs.frozen
class Plugins:
    """Hook-only plugins (observers, exporters) found through entry points."""

    disabled: tuple[str, ...] = ()


@attrs.frozen
class Config:
    node_name: str = attrs.field(
        default="",
        validator=matches(r"|[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", "a valid node name (lowercase DNS subdomain)"),
    )
    datastore: Slot = attrs.field(factory=lambda: Slot(type="etcd"))
    ipam: Slot = attrs.field(factory=lambda: Slot(type="calico-ipam"))
    routing: Slot = attrs.field(factory=lambda: Slot(type="bird"))
    policy: Slot = attrs.field(factory=lambda: Slot(type="iptables"))
    node: NodeSettings = attrs.field(factory=NodeSettings)
    intervals: Intervals = attrs.field(factory=Intervals)
    logging: Logging = attrs.field(factory=Logging)
    health: Endpoint = attrs.field(factory=_health)
    metrics: Endpoint = attrs.field(factory=_metrics)
    plugins: Plugins = attrs.field(factory=Plugins)

    def slot(self, name: str) -> Slot:
        return getattr(self, name)

    @property
    def hostname(self) -> str:
        """The node's name as Calico picks it: config, then $NODENAME, then the host's."""
        return self.node_name or os.environ.get("NODENAME") or socket.gethostname().lower()


_converter = make_converter(snake)


def _structure_slot(value: Any, _type: type) -> Slot:
    if not isinstance(value, dict):
        raise TypeError(f"expected a table, got {value!r}")
    rest = dict(value)
    name = rest.pop("type", None)
    if not isinstance(name, str) or not name:
        raise FieldError("type", "is required: the name of the plugin that fills this slot")
    for key, table in rest.items():
        if not isinstance(table, dict):
            raise FieldError(key, f"expected the table of plugin {key!r}, got {table!r}")
    return Slot(type=name, tables=rest)


_converter.register_structure_hook(Slot, _structure_slot)
_converter.register_unstructure_hook(
    Slot, lambda s: {"type": s.type, **{k: dict(v) for k, v in s.tables.items()}}
)

# A plugin's schema lookup: (slot, plugin name) -> attrs class or None, and the names
# installed for a slot; the plugin manager supplies both.
SchemaLookup = Callable[[str, str], "type | None"]
Installed = Callable[[str], list[str]]


def parse(text: str, source: str = "<string>") -> Config:
    """Structure calico.toml text without plugin tables (the file's own keys only)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"invalid TOML: {exc}"]) from None
    try:
        return _converter.structure(data, Config)
    except Exception as exc:  # cattrs raises an exception group of every problem
        raise ConfigError(source, error_lines(exc, Config, snake)) from None


def read(path: str | os.PathLike) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(str(path), ["no such file"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    return parse(text, str(path))


def bind_plugins(
    config: Config, installed: Installed, schema: SchemaLookup, source: str, slots: tuple[str, ...] = SLOTS
) -> Config:
    """Check each slot's plugin name and structure the chosen plugins' tables.

    Returns the config with each slot's ``options`` set; raises ConfigError listing
    every problem across all slots.
    """
    problems: list[str] = []
    bound = {}
    for slot_name in slots:
        slot = config.slot(slot_name)
        names = installed(slot_name)
        allowed = [*names, NONE] if slot_name in OPTIONAL_SLOTS else names
        if slot.type not in allowed:
            problems.append(f"{slot_name}.type: no {slot_name} plugin named {slot.type!r}{_installed(slot.type, allowed)}")
        for table in slot.tables:
            if table not in names:
                problems.append(f"{slot_name}.{table}: no {slot_name} plugin of that name{_installed(table, names)}")
        options = None
        if slot.type in names:
            cls = schema(slot_name, slot.type)
            table = slot.tables.get(slot.type, {})
            if cls is None and table:
                problems.append(f"{slot_name}.{slot.type}: plugin {slot.type!r} takes no options")
            elif cls is not None:
                try:
                    options = _converter.structure(dict(table), cls)
                except Exception as exc:
                    problems += error_lines(exc, cls, snake, root=f"{slot_name}.{slot.type}")
        bound[slot_name] = attrs.evolve(slot, options=options)
    if problems:
        raise ConfigError(source, problems)
    return attrs.evolve(config, **bound)


def _installed(name: str, names: list[str]) -> str:
    near = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f" is installed (installed: {', '.join(names) or 'none'}){hint}"


def dump(config: Config) -> dict[str, Any]:
    """The config as TOML-shaped data (plugin tables as written)."""
    return _converter.unstructure(config)
