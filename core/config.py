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

from pycalico.core.schema import (
    FieldError, absolute_path, error_lines, in_range, make_converter, matches, snake, validated,
)

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

    type: str = attrs.field(metadata={"doc": "The plugin that fills this slot, by the name it is installed under "
                                          "(its entry point); its own options are the table named after it."})
    tables: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    options: Any = None  # the chosen plugin's table, structured by its schema


@attrs.frozen
class Intervals:
    resync_seconds: float = attrs.field(default=90.0, validator=in_range(1, 86400), metadata={
        "doc": "Seconds between full reconcile passes, which repair drift made by others "
               "(Felix's RouteRefreshInterval is 90 s)."})
    coalesce_seconds: float = attrs.field(default=0.1, validator=in_range(0, 10), metadata={
        "doc": "Updates arriving within this many seconds of each other are applied in one pass."})
    reporting_seconds: float = attrs.field(default=30.0, validator=in_range(0, 86400), metadata={
        "doc": "How often, in seconds, the node reports its status to the datastore "
               "(Felix's ReportingInterval); 0 disables reporting."})
    reporting_ttl_seconds: float = attrs.field(default=90.0, validator=in_range(1, 86400), metadata={
        "doc": "How long, in seconds, a status report stays in the datastore (Felix's ReportingTTLSecs)."})


@attrs.frozen
class Logging:
    level: Literal["debug", "info", "warning", "error"] = attrs.field(
        default="info", metadata={"doc": "The least severe messages that are logged."})
    format: Literal["text", "json"] = attrs.field(
        default="text", metadata={"doc": "`text` lines, or one JSON object a line "
                                         "(time, level, component, logger, msg)."})
    file: str = attrs.field(default="", metadata={"doc": "The file the log is appended to; empty: standard error."})


@attrs.frozen
class Endpoint:
    """Where an HTTP listener binds (health, metrics)."""

    enabled: bool = attrs.field(default=True, metadata={"doc": "Serve /liveness and /readiness (HealthEnabled)."})
    host: str = attrs.field(default="localhost", metadata={"doc": "The address the listener binds (HealthHost)."})
    port: int = attrs.field(default=9099, validator=in_range(1, 65535), metadata={
        "doc": "The TCP port of the listener (Felix's HealthPort)."})


@attrs.frozen
class MetricsEndpoint(Endpoint):
    """``[metrics]``: Felix's Prometheus defaults (off, every address, 9091), also when
    the table names only some of its keys."""

    enabled: bool = attrs.field(default=False, metadata={
        "doc": "Serve Prometheus metrics on /metrics (Felix's PrometheusMetricsEnabled)."})
    host: str = attrs.field(default="0.0.0.0", metadata={
        "doc": "The address the listener binds (PrometheusMetricsHost); 0.0.0.0: every address."})
    port: int = attrs.field(default=9091, validator=in_range(1, 65535), metadata={
        "doc": "The TCP port of the listener (Felix's PrometheusMetricsPort)."})


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

    ip: str = attrs.field(default="autodetect", validator=validated(_check_ip), metadata={
        "doc": "This node's IPv4 address with prefix length, registered on its Node resource "
               "(spec.bgp.ipv4Address; Calico's IP): `autodetect`, `none`, or e.g. `198.51.100.11/24`."})
    ip_autodetection_method: str = attrs.field(default="first-found", validator=validated(_check_method), metadata={
        "doc": "How `autodetect` finds the address (Calico's IP_AUTODETECTION_METHOD): `first-found`, "
               "`can-reach=DEST`, `interface=REGEX[,REGEX]`, `skip-interface=REGEX[,REGEX]` or `cidr=CIDR[,CIDR]`."})
    as_number: int | None = attrs.field(default=None, validator=in_range(1, 4294967295), metadata={
        "doc": "This node's AS number (Calico's AS). Unset: the cluster's, from the BGPConfiguration "
               "(64512 by default).",
        "example": 64512})
    nodename_file: str = attrs.field(default="/var/lib/calico/nodename", validator=absolute_path(empty=True),
                                     metadata={
        "doc": "Where calico-node writes this node's name when it starts, as Calico's does: the CNI "
               "plugin reads it (its `nodename_file`) and refuses pods until it exists. Empty: not written."})
    # Calico's AUTODETECT_POLL_INTERVAL: how long a detected address is trusted before
    # the interfaces are read again (a dump of every veth on a busy node).
    autodetect_poll_seconds: float = attrs.field(default=60.0, validator=in_range(0, 86400), metadata={
        "doc": "Seconds a detected address is trusted before the interfaces are read again "
               "(Calico's AUTODETECT_POLL_INTERVAL); 0 reads them on every pass."})


@attrs.frozen
class Plugins:
    """Hook-only plugins (observers, exporters) found through entry points."""

    disabled: tuple[str, ...] = attrs.field(default=(), metadata={
        "doc": "Hook-only plugins (entry-point group pycalico.plugins) not to load, by name; "
               "every other one installed is loaded."})


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

    port: int = attrs.field(default=9098, validator=in_range(1, 65535), metadata={
        "doc": "The TCP port of the listener (Typha's HealthPort)."})


@attrs.frozen
class TyphaMetricsEndpoint(Endpoint):
    """``[typha.server.metrics]``: Typha's Prometheus defaults (off, every address, 9093)."""

    enabled: bool = attrs.field(default=False, metadata={
        "doc": "Serve Prometheus metrics on /metrics (Typha's PrometheusMetricsEnabled)."})
    host: str = attrs.field(default="0.0.0.0", metadata={
        "doc": "The address the listener binds (PrometheusMetricsHost); 0.0.0.0: every address."})
    port: int = attrs.field(default=9093, validator=in_range(1, 65535), metadata={
        "doc": "The TCP port of the listener (Typha's PrometheusMetricsPort)."})


@attrs.frozen
class TyphaServer(_TLSSettings):
    """calico-typha's own settings: Typha's ``Server*``, ``MaxConnectionsUpperLimit``,
    ``ConnectionDropIntervalSecs``, TLS, health and metrics parameters
    (``typha/pkg/config/config_params.go``), with Calico's defaults."""

    host: str = attrs.field(default="0.0.0.0", metadata={
        "doc": "The address calico-typha listens on for agents (ServerHost); 0.0.0.0: every address."})
    port: int = attrs.field(default=5473, validator=in_range(1, 65535), metadata={
        "doc": "The TCP port calico-typha listens on for agents (ServerPort)."})
    max_connections: int = attrs.field(default=10000, validator=in_range(1, 1_000_000), metadata={
        "doc": "Above this many agents, one connection is dropped at random every "
               "`drop_interval_seconds` (MaxConnectionsUpperLimit)."})
    max_message_size: int = attrs.field(default=100, validator=in_range(1, 100_000), metadata={
        "doc": "Key/value updates per message (ServerMaxMessageSize, SnapshotCacheMaxBatchSize)."})
    max_fall_behind_seconds: float = attrs.field(default=300.0, validator=in_range(0.1, 86400), metadata={
        "doc": "An agent whose oldest unsent change is older than this is disconnected; it then "
               "reconnects and resyncs (ServerMaxFallBehindSecs)."})
    new_client_fall_behind_grace_seconds: float = attrs.field(default=300.0, validator=in_range(0, 86400), metadata={
        "doc": "Extra time a new agent may fall behind after its snapshot "
               "(ServerNewClientFallBehindGracePeriod)."})
    ping_interval_seconds: float = attrs.field(default=10.0, validator=in_range(0.05, 3600), metadata={
        "doc": "Seconds between pings to each agent (ServerPingIntervalSecs)."})
    pong_timeout_seconds: float = attrs.field(default=60.0, validator=in_range(0.1, 86400), metadata={
        "doc": "An agent that has not answered a ping for this long is disconnected; more than two "
               "ping intervals (ServerPongTimeoutSecs)."})
    handshake_timeout_seconds: float = attrs.field(default=10.0, validator=in_range(0.1, 3600), metadata={
        "doc": "How long a new connection may take to say hello (ServerHandshakeTimeoutSecs)."})
    drop_interval_seconds: float = attrs.field(default=1.0, validator=in_range(0.01, 3600), metadata={
        "doc": "Seconds between connections dropped while above `max_connections` "
               "(ConnectionDropIntervalSecs)."})
    key_file: str = attrs.field(default="", metadata={
        "doc": "Server TLS key (ServerKeyFile). Server TLS is all or none: key_file, cert_file, "
               "ca_file and client_cn or client_uri_san."})
    cert_file: str = attrs.field(default="", metadata={"doc": "Server TLS certificate (ServerCertFile)."})
    ca_file: str = attrs.field(default="", metadata={
        "doc": "The CA that agents' certificates must come from (CAFile)."})
    client_cn: str = attrs.field(default="", metadata={
        "doc": "The common name agents' certificates must carry (ClientCN); this or client_uri_san."})
    client_uri_san: str = attrs.field(default="", metadata={
        "doc": "The URI SAN agents' certificates must carry (ClientURISAN); this or client_cn."})
    health: TyphaHealthEndpoint = attrs.field(factory=TyphaHealthEndpoint, metadata={
        "doc": "calico-typha's /liveness and /readiness (ready once in sync with the datastore)."})
    metrics: TyphaMetricsEndpoint = attrs.field(factory=TyphaMetricsEndpoint, metadata={
        "doc": "calico-typha's Prometheus metrics (typha_connections_active, ...)."})

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

    addresses: tuple[str, ...] = attrs.field(default=(), metadata={
        "doc": "calico-typha instances to read the datastore through, as `host:port` (Felix's "
               "TyphaAddr). Empty: the agent watches the datastore itself. Several: the first one tried "
               "is picked at random, then the next on each reconnect."})
    read_timeout_seconds: float = attrs.field(default=30.0, validator=in_range(0.1, 3600), metadata={
        "doc": "A Typha connection silent for this long is dropped (Felix's TyphaReadTimeout)."})
    write_timeout_seconds: float = attrs.field(default=10.0, validator=in_range(0.1, 3600), metadata={
        "doc": "A write to Typha that takes longer fails (Felix's TyphaWriteTimeout)."})
    ca_file: str = attrs.field(default="", metadata={
        "doc": "The CA Typha's certificate must come from (TyphaCAFile). Client TLS is all or none: "
               "ca_file, cert_file, key_file and cn or uri_san."})
    cert_file: str = attrs.field(default="", metadata={"doc": "The agent's client certificate (TyphaCertFile)."})
    key_file: str = attrs.field(default="", metadata={"doc": "The agent's client key (TyphaKeyFile)."})
    cn: str = attrs.field(default="", metadata={
        "doc": "The common name Typha's certificate must carry (TyphaCN); this or uri_san."})
    uri_san: str = attrs.field(default="", metadata={
        "doc": "The URI SAN Typha's certificate must carry (TyphaURISAN); this or cn."})
    server: TyphaServer = attrs.field(factory=TyphaServer, metadata={
        "doc": "calico-typha's own settings (it reads this file too), with Calico's defaults."})

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
        metadata={"doc": "This node's name in the datastore (its Node resource). Empty: $NODENAME, "
                         "else the host name, lowercased, as Calico picks it."},
    )
    datastore: Slot = attrs.field(factory=lambda: Slot(type="etcd"), metadata={
        "doc": "Where the cluster's resources live: etcd v3 or the Kubernetes API (Calico's DATASTORE_TYPE)."})
    ipam: Slot = attrs.field(factory=lambda: Slot(type="calico-ipam"), metadata={
        "doc": "Who hands out pod and tunnel addresses. `none`: the agent allocates no tunnel addresses."})
    routing: Slot = attrs.field(factory=lambda: Slot(type="bird"), metadata={
        "doc": "How routes to other nodes' pods are made (Calico's CALICO_NETWORKING_BACKEND). "
               "`none` is Calico's policy-only mode."})
    policy: Slot = attrs.field(factory=lambda: Slot(type="iptables"), metadata={
        "doc": "The dataplane that enforces network policy."})
    node: NodeSettings = attrs.field(factory=NodeSettings, metadata={
        "doc": "How this node registers itself on its Node resource."})
    intervals: Intervals = attrs.field(factory=Intervals, metadata={"doc": "How often the agent works and reports."})
    logging: Logging = attrs.field(factory=Logging, metadata={"doc": "The agent's log."})
    health: Endpoint = attrs.field(factory=Endpoint, metadata={
        "doc": "The health listener: /liveness and /readiness, as Felix serves them."})
    metrics: MetricsEndpoint = attrs.field(factory=MetricsEndpoint, metadata={
        "doc": "The Prometheus metrics listener; off by default, as in Felix."})
    typha: Typha = attrs.field(factory=Typha, metadata={"doc": "Where the agent finds calico-typha."})
    plugins: Plugins = attrs.field(factory=Plugins, metadata={"doc": "Hook-only plugins (observers, exporters)."})

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
