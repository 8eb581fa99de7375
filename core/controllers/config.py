"""What calico-kube-controllers runs with: Calico's environment variables merged with
KubeControllersConfiguration ``default`` (``kube-controllers/pkg/config/runconfig.go``).

The resource is read (and created with Calico's defaults when absent); each controller
runs when the resource's ``spec.controllers`` names it, unless ``ENABLED_CONTROLLERS``
says which run. The other variables override their fields as Calico's ``mergeConfig``
does, and what the merge gave is written back as ``status.runningConfig`` (with the
variables that took part in ``status.environmentVars``).

A bad variable is an error naming it (Calico exits on it); a resource with a bad
field is refused, naming the field, and never half applied.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import attrs

from pycalico.core.config import ConfigError
from pycalico.core.resources.base import problems
from pycalico.core.resources.cluster import (
    AutoHostEndpointConfig,
    ControllersConfig,
    KubeControllersConfiguration,
    KubeControllersConfigurationSpec,
    KubeControllersConfigurationStatus,
    LoadBalancerControllerConfig,
    NodeControllerConfig,
    ReconcilerConfig,
)
from pycalico.core.resources.meta import ObjectMeta
from pycalico.core.resources.types import duration_seconds

log = logging.getLogger(__name__)

NAME = "default"
ENV_LOG_LEVEL = "LOG_LEVEL"
ENV_RECONCILER_PERIOD = "RECONCILER_PERIOD"
ENV_ENABLED_CONTROLLERS = "ENABLED_CONTROLLERS"
ENV_COMPACTION_PERIOD = "COMPACTION_PERIOD"
ENV_HEALTH_ENABLED = "HEALTH_ENABLED"
ENV_SYNC_NODE_LABELS = "SYNC_NODE_LABELS"
ENV_AUTO_HOST_ENDPOINTS = "AUTO_HOST_ENDPOINTS"
ALL_ENVS = (ENV_LOG_LEVEL, ENV_RECONCILER_PERIOD, ENV_ENABLED_CONTROLLERS, ENV_COMPACTION_PERIOD,
            ENV_HEALTH_ENABLED, ENV_SYNC_NODE_LABELS, ENV_AUTO_HOST_ENDPOINTS)

# ENABLED_CONTROLLERS names -> the spec.controllers field each enables.
CONTROLLER_FIELDS = {
    "node": "node",
    "policy": "policy",
    "namespace": "namespace",
    "profile": "namespace",
    "serviceaccount": "service_account",
    "workloadendpoint": "workload_endpoint",
    "loadbalancer": "load_balancer",
}
SYNC_FIELDS = ("policy", "workload_endpoint", "service_account", "namespace")
DEFAULT_PERIOD = 300.0  # every reconcilerPeriod Calico leaves unset
DEFAULT_COMPACTION = 600.0

# logrus' levels (ParseLevel) -> Python's; the status shows logrus' name, title-cased.
LOG_LEVELS = {"panic": "CRITICAL", "fatal": "CRITICAL", "error": "ERROR", "warn": "WARNING", "warning": "WARNING",
              "info": "INFO", "debug": "DEBUG", "trace": "DEBUG"}
_LOGRUS_NAMES = {"warn": "warning"}
_TRUE, _FALSE = ("1", "t", "T", "TRUE", "true", "True"), ("0", "f", "F", "FALSE", "false", "False")


@attrs.frozen
class NodeSettings:
    """The node controller's settings. ``leak_grace_period`` in seconds: None when the
    resource leaves it unset (candidate leaks are then never released), 0 to disable
    releasing them; a node's own leaks are released either way once it is gone."""

    sync_labels: bool = False
    auto_host_endpoints: bool = False
    delete_nodes: bool = False
    leak_grace_period: float | None = None


@attrs.frozen
class SyncSettings:
    reconciler_period: float = DEFAULT_PERIOD


@attrs.frozen
class RunConfig:
    """The merged configuration; a controller set to None does not run."""

    log_level: str = "info"
    node: NodeSettings | None = None
    policy: SyncSettings | None = None
    workload_endpoint: SyncSettings | None = None
    service_account: SyncSettings | None = None
    namespace: SyncSettings | None = None
    load_balancer: str | None = None
    compaction_period: float = DEFAULT_COMPACTION
    health_enabled: bool = True
    prometheus_port: int = 0
    debug_profile_port: int = 0

    def enabled(self) -> list[str]:
        """The spec.controllers fields that run, in a stable order."""
        return [f for f in ("node", *SYNC_FIELDS, "load_balancer") if getattr(self, f) is not None]


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String()``: ``5m0s``, ``1h0m0s``, ``1.5s``, ``250ms``, ``0s``."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _decimal(ns, size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _decimal(rest, 1_000_000_000) + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def default_configuration() -> KubeControllersConfiguration:
    """KubeControllersConfiguration ``default`` as Calico creates it when absent
    (``NewDefaultKubeControllersConfig``)."""
    five = "5m0s"
    return KubeControllersConfiguration(
        metadata=ObjectMeta(name=NAME),
        spec=KubeControllersConfigurationSpec(
            log_severity_screen="Info",
            health_checks="Enabled",
            etcd_v3_compaction_period="10m0s",
            controllers=ControllersConfig(
                node=NodeControllerConfig(
                    reconciler_period=five,
                    sync_labels="Enabled",
                    host_endpoint=AutoHostEndpointConfig(auto_create="Disabled", create_default_host_endpoint="Enabled"),
                    leak_grace_period="15m0s",
                ),
                policy=ReconcilerConfig(reconciler_period=five),
                workload_endpoint=ReconcilerConfig(reconciler_period=five),
                service_account=ReconcilerConfig(reconciler_period=five),
                namespace=ReconcilerConfig(reconciler_period=five),
                load_balancer=LoadBalancerControllerConfig(assign_ips="AllServices"),
            ),
        ),
    )


def spec_problems(kcc: KubeControllersConfiguration) -> list[str]:
    """One line per bad field of a stored resource (read without validation), naming
    it by its path: ``KubeControllersConfiguration default: spec.controllers.node.
    leakGracePeriod: '15 min' is not a duration ...``."""
    return [f"{KubeControllersConfiguration.KIND} {kcc.metadata.name}: {path}: {message}"
            for path, message in problems(kcc.spec, "spec")]


def _env_error(name: str, value: str, why: str) -> ConfigError:
    return ConfigError("environment", [f"{name}={value!r}: invalid environment variable value: {why}"])


def _parse_bool(name: str, value: str) -> bool:
    """Go's strconv.ParseBool."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _env_error(name, value, "expected true or false")


def _parse_duration(name: str, value: str) -> float:
    try:
        return duration_seconds(value)
    except ValueError as exc:
        raise _env_error(name, value, str(exc)) from None


def _log_level(name: str, value: str) -> str:
    level = value.lower()
    if level not in LOG_LEVELS:
        raise _env_error(name, value, f"not a log level ({', '.join(sorted(LOG_LEVELS))})")
    return _LOGRUS_NAMES.get(level, level)


def _seconds(value: str | None, default: float) -> float:
    return default if value is None else duration_seconds(value)


def merge(env: Mapping[str, str], datastore_type: str, spec: KubeControllersConfigurationSpec,
          ) -> tuple[RunConfig, KubeControllersConfigurationStatus]:
    """Calico's ``mergeConfig``: the run config and the status that records it.

    ``env`` holds the process environment (only ALL_ENVS are looked at);
    ``datastore_type`` is Calico's ``etcdv3`` or ``kubernetes``. Raises ConfigError
    naming a bad variable. ``spec`` must have been checked (``spec_problems``).
    """
    env = {k: env[k] for k in ALL_ENVS if k in env}
    used: dict[str, str] = {}
    api = spec.controllers or ControllersConfig()
    out: dict = {}
    running: dict = {}

    # Log level.
    if ENV_LOG_LEVEL in env:
        used[ENV_LOG_LEVEL] = env[ENV_LOG_LEVEL]
        level = _log_level(ENV_LOG_LEVEL, env[ENV_LOG_LEVEL])
    else:
        level = (spec.log_severity_screen or "").lower()
        if level not in LOG_LEVELS:
            log.warning("unknown log level %r in KubeControllersConfiguration, using Info", spec.log_severity_screen)
            level = "info"
        level = _LOGRUS_NAMES.get(level, level)
    out["log_level"] = level
    running["log_severity_screen"] = level.title()

    # Which controllers run.
    if ENV_ENABLED_CONTROLLERS in env:
        value = used[ENV_ENABLED_CONTROLLERS] = env[ENV_ENABLED_CONTROLLERS]
        enabled = set()
        for name in value.split(","):
            if name == "flannelmigration":
                raise _env_error(ENV_ENABLED_CONTROLLERS, value, "the flannelmigration controller is not supported")
            if name not in CONTROLLER_FIELDS:
                raise _env_error(ENV_ENABLED_CONTROLLERS, value, f"Invalid controller '{name}' provided.")
            enabled.add(CONTROLLER_FIELDS[name])
    else:
        enabled = {f for f in ("node", *SYNC_FIELDS, "load_balancer") if getattr(api, f) is not None}

    periods: dict[str, float] = {}
    for f in SYNC_FIELDS:
        conf = getattr(api, f)
        if f in enabled:
            periods[f] = _seconds(conf.reconciler_period if conf else None, DEFAULT_PERIOD)
            running[f] = ReconcilerConfig(reconciler_period=conf.reconciler_period if conf else None)
    if ENV_RECONCILER_PERIOD in env:
        value = used[ENV_RECONCILER_PERIOD] = env[ENV_RECONCILER_PERIOD]
        period = _parse_duration(ENV_RECONCILER_PERIOD, value)
        for f in periods:
            periods[f] = period
            running[f] = ReconcilerConfig(reconciler_period=go_duration(period))
    out.update({f: SyncSettings(p) for f, p in periods.items()})

    # etcd compaction.
    if ENV_COMPACTION_PERIOD in env:
        value = used[ENV_COMPACTION_PERIOD] = env[ENV_COMPACTION_PERIOD]
        compaction = _parse_duration(ENV_COMPACTION_PERIOD, value)
    else:
        compaction = _seconds(spec.etcd_v3_compaction_period, DEFAULT_COMPACTION)
    out["compaction_period"] = compaction
    running["etcd_v3_compaction_period"] = go_duration(compaction)

    # Health.
    if ENV_HEALTH_ENABLED in env:
        value = used[ENV_HEALTH_ENABLED] = env[ENV_HEALTH_ENABLED]
        health = _parse_bool(ENV_HEALTH_ENABLED, value)
    else:
        health = spec.health_checks != "Disabled"
    out["health_enabled"] = health
    running["health_checks"] = "Enabled" if health else "Disabled"
    out["prometheus_port"] = spec.prometheus_metrics_port or 0
    out["debug_profile_port"] = spec.debug_profile_port or 0

    if "node" in enabled:
        node, running["node"] = _node(env, used, datastore_type, api.node)
        out["node"] = node
    if "load_balancer" in enabled:
        assign = api.load_balancer.assign_ips if api.load_balancer else None
        out["load_balancer"] = assign or "AllServices"
        running["load_balancer"] = LoadBalancerControllerConfig(assign_ips=assign)

    controllers = ControllersConfig(**{k: running.pop(k) for k in ("node", *SYNC_FIELDS, "load_balancer")
                                       if k in running})
    status = KubeControllersConfigurationStatus(
        running_config=KubeControllersConfigurationSpec(controllers=controllers, **running),
        environment_vars=used,
    )
    return RunConfig(**out), status


def _node(env: Mapping[str, str], used: dict[str, str], datastore_type: str, api: NodeControllerConfig | None,
          ) -> tuple[NodeSettings, NodeControllerConfig]:
    # Kubernetes already has the labels in KDD: no sync there.
    if datastore_type == "kubernetes":
        used["DATASTORE_TYPE"] = "kubernetes"
        sync = False
    elif ENV_SYNC_NODE_LABELS in env:
        value = used[ENV_SYNC_NODE_LABELS] = env[ENV_SYNC_NODE_LABELS]
        sync = _parse_bool(ENV_SYNC_NODE_LABELS, value)
    else:
        sync = not (api is not None and api.sync_labels == "Disabled")

    hep = api.host_endpoint if api is not None else None
    if ENV_AUTO_HOST_ENDPOINTS in env:
        value = used[ENV_AUTO_HOST_ENDPOINTS] = env[ENV_AUTO_HOST_ENDPOINTS]
        if value.lower() not in ("enabled", "disabled"):
            raise _env_error(ENV_AUTO_HOST_ENDPOINTS, value, "expected enabled or disabled")
        auto = value.lower() == "enabled"
        hep = AutoHostEndpointConfig(auto_create="Enabled" if auto else "Disabled",
                                     create_default_host_endpoint="Enabled") if auto else None
    else:
        auto = hep is not None and hep.auto_create == "Enabled"
    running_hep = None
    if hep is not None:
        running_hep = AutoHostEndpointConfig(auto_create="Enabled" if auto else "Disabled",
                                             create_default_host_endpoint=hep.create_default_host_endpoint or "Enabled",
                                             templates=hep.templates)

    grace_text = api.leak_grace_period if api is not None else None
    settings = NodeSettings(
        sync_labels=sync,
        auto_host_endpoints=auto,
        delete_nodes=datastore_type != "kubernetes",
        leak_grace_period=None if grace_text is None else duration_seconds(grace_text),
    )
    running = NodeControllerConfig(sync_labels="Enabled" if sync else "Disabled", host_endpoint=running_hep,
                                   leak_grace_period=grace_text)
    return settings, running
