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
    reporting_ttl_seconds: float = attrs.field(default=90.0, validator=in_range(1, 86400))


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


@attrs.frozen
class MetricsEndpoint(Endpoint):
    """``[metrics]``: Felix's Prometheus defaults (off, every address, 9091), also when
    the table names only some of its keys."""

    enabled: bool = False
    host: str = "0.0.0.0"
    port: int = attrs.field(default=9091, validator=in_range(1, 65535))


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
    # Calico's AUTODETECT_POLL_INTERVAL: how long a detected address is trusted before
    # the interfaces are read again (a dump of every veth on a busy node).
    autodetect_poll_seconds: float = attrs.field(default=60.0, validator=in_range(0, 86400))


@attrs.frozen
class Plugins:
    """Hook-only plugins (observers, exporters) found through entry points."""

    disabled: tuple[str, ...] = ()


def split_address(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as (host, port); ValueError says why not."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{text!r} is not host:port (e.g. 198.51.100.2:5473)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: port must be between 1 and 65535")
    if not host or "/" in host or (":" in host and not text.startswith("[")):
        raise ValueError(f"{text!r} is not host:port (an IPv6 host goes in brackets: [2001:db8::2]:5473)")
    return host, int(port)


def _address_problems(addresses: tuple[str, ...]) -> list[FieldError]:
    problems = []
    for i, text in enumerate(addresses):
        try:
            split_address(text)
        except ValueError as exc:
            problems.append(FieldError(f"addresses[{i}]", str(exc)))
    return problems


def _tls_problems(owner: Any, files: tuple[str, ...], names: tuple[str, str], side: str) -> list[FieldError]:
    """Calico's rule for one side's TLS settings: all or none, except that one of the
    two peer names (CN, URI SAN) may stay empty; and the files must exist."""
    keys = (*files, *names)
    problems = [FieldError(f, f"no such file: {getattr(owner, f)}") for f in files
                if getattr(owner, f) and not os.path.isfile(getattr(owner, f))]
    if not any(getattr(owner, k) for k in keys):
        return problems
    rule = f"{side} TLS is all or none: {', '.join(files)} and {names[0]} or {names[1]}"
    problems += [FieldError(f, f"is required ({rule})") for f in files if not getattr(owner, f)]
    if not any(getattr(owner, n) for n in names):
        problems.append(FieldError(names[0], f"{names[0]} or {names[1]} is required ({rule})"))
    return problems


def _raise_all(problems: list[FieldError], what: str) -> None:
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ExceptionGroup(what, problems)


class _TLSSettings:
    @property
    def tls(self) -> bool:
        """TLS is on (its settings are all or none)."""
        return bool(getattr(self, "cert_file"))


@attrs.frozen
class TyphaHealthEndpoint(Endpoint):
    """``[typha.server.health]``: Typha's defaults (on, localhost, 9098), also when the
    table names only some of its keys."""

    port: int = attrs.field(default=9098, validator=in_range(1, 65535))


@attrs.frozen
class TyphaMetricsEndpoint(Endpoint):
    """``[typha.server.metrics]``: Typha's Prometheus defaults (off, every address, 9093)."""

    enabled: bool = False
    host: str = "0.0.0.0"
    port: int = attrs.field(default=9093, validator=in_range(1, 65535))


@attrs.frozen
class TyphaServer(_TLSSettings):
    """calico-typha's own settings: Typha's ``Server*``, ``MaxConnectionsUpperLimit``,
    ``ConnectionDropIntervalSecs``, TLS, health and metrics parameters
    (``typha/pkg/config/config_params.go``), with Calico's defaults."""

    host: str = "0.0.0.0"
    port: int = attrs.field(default=5473, validator=in_range(1, 65535))
    max_connections: int = attrs.field(default=10000, validator=in_range(1, 1_000_000))
    max_message_size: int = attrs.field(default=100, validator=in_range(1, 100_000))
    max_fall_behind_seconds: float = attrs.field(default=300.0, validator=in_range(0.1, 86400))
    new_client_fall_behind_grace_seconds: float = attrs.field(default=300.0, validator=in_range(0, 86400))
    ping_interval_seconds: float = attrs.field(default=10.0, validator=in_range(0.05, 3600))
    pong_timeout_seconds: float = attrs.field(default=60.0, validator=in_range(0.1, 86400))
    handshake_timeout_seconds: float = attrs.field(default=10.0, validator=in_range(0.1, 3600))
    drop_interval_seconds: float = attrs.field(default=1.0, validator=in_range(0.01, 3600))
    key_file: str = ""
    cert_file: str = ""
    ca_file: str = ""
    client_cn: str = ""
    client_uri_san: str = ""
    health: TyphaHealthEndpoint = attrs.field(factory=TyphaHealthEndpoint)
    metrics: TyphaMetricsEndpoint = attrs.field(factory=TyphaMetricsEndpoint)

    def __attrs_post_init__(self) -> None:
        problems = _tls_problems(self, ("key_file", "cert_file", "ca_file"), ("client_cn", "client_uri_san"), "server")
        if self.pong_timeout_seconds <= 2 * self.ping_interval_seconds:
            # Calico silently raises it to 6 pings; a file that says otherwise is refused.
            problems.append(FieldError("pong_timeout_seconds", f"must be more than twice ping_interval_seconds "
                                       f"({self.ping_interval_seconds:g}), got {self.pong_timeout_seconds:g}"))
        _raise_all(problems, "invalid [typha.server]")


@attrs.frozen
class Typha(_TLSSettings):
    """Where the agent finds calico-typha: Felix's ``TyphaAddr`` (a list here: tried
    in turn from a random start), ``TyphaReadTimeout``, ``TyphaWriteTimeout`` and
    client TLS (``TyphaCAFile``, ``TyphaCertFile``, ``TyphaKeyFile``, ``TyphaCN``,
    ``TyphaURISAN``). No addresses: the agent watches the datastore itself.
    ``server`` configures calico-typha, which reads the same file."""

    addresses: tuple[str, ...] = ()
    read_timeout_seconds: float = attrs.field(default=30.0, validator=in_range(0.1, 3600))
    write_timeout_seconds: float = attrs.field(default=10.0, validator=in_range(0.1, 3600))
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    cn: str = ""
    uri_san: str = ""
    server: TyphaServer = attrs.field(factory=TyphaServer)

    def __attrs_post_init__(self) -> None:
        # Checked here rather than in field validators so that a problem can name the
        # list item (``addresses[1]``) or the key that is missing.
        problems = _address_problems(self.addresses)
        problems += _tls_problems(self, ("key_file", "cert_file", "ca_file"), ("cn", "uri_san"), "Typha client")
        _raise_all(problems, "invalid [typha]")


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
    health: Endpoint = attrs.field(factory=Endpoint)
    metrics: MetricsEndpoint = attrs.field(factory=MetricsEndpoint)
    typha: Typha = attrs.field(factory=Typha)
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


def parse(text: str, source: str = "<string>", only: tuple[str, ...] = ()) -> Config:
    """Structure calico.toml text without plugin tables (the file's own keys only);
    with ``only``, just those top-level keys (the rest keep their defaults)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"invalid TOML: {exc}"]) from None
    if only:
        data = {key: value for key, value in data.items() if key in only}
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
