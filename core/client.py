"""Connecting to the datastore from a tool (calicoctl, the CNI plugin).

From a calico.toml (``--config`` or ``$CALICO_CONFIG``) when there is one, else from
Calico's own environment variables, as operators script calicoctl today:
``DATASTORE_TYPE`` (etcdv3, the default, or kubernetes), ``ETCD_ENDPOINTS``,
``ETCD_CA_CERT_FILE``, ``ETCD_CERT_FILE``, ``ETCD_KEY_FILE``, ``ETCD_USERNAME``,
``ETCD_PASSWORD``, ``KUBECONFIG``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pycalico.core import config as cfg
from pycalico.core.datastore import Datastore

DATASTORE_TYPES = {"etcdv3": "etcd", "kubernetes": "kubernetes"}
_ETCD_ENV = {
    "ETCD_CA_CERT_FILE": "ca_cert_file",
    "ETCD_CERT_FILE": "cert_file",
    "ETCD_KEY_FILE": "key_file",
    "ETCD_USERNAME": "username",
    "ETCD_PASSWORD": "password",
}


def config_from_env(env: Mapping[str, str]) -> cfg.Config:
    """A config whose datastore slot is what Calico's environment variables say."""
    kind = env.get("DATASTORE_TYPE", "etcdv3") or "etcdv3"
    if kind not in DATASTORE_TYPES:
        raise cfg.ConfigError("environment", [f"DATASTORE_TYPE: must be etcdv3 or kubernetes, got {kind!r}"])
    name = DATASTORE_TYPES[kind]
    table: dict[str, Any] = {}
    if name == "etcd":
        if env.get("ETCD_ENDPOINTS"):
            table["endpoints"] = [e.strip() for e in env["ETCD_ENDPOINTS"].split(",") if e.strip()]
        table.update({key: env[var] for var, key in _ETCD_ENV.items() if env.get(var)})
    elif env.get("KUBECONFIG"):
        table["kubeconfig"] = env["KUBECONFIG"]
    return cfg.Config(datastore=cfg.Slot(type=name, tables={name: table}))


def load_config(path: str | os.PathLike | None, env: Mapping[str, str] = os.environ) -> tuple[cfg.Config, str]:
    """The config a tool runs with, and where it came from."""
    chosen = path or env.get("CALICO_CONFIG")
    if chosen:
        return cfg.read(chosen), str(chosen)
    return config_from_env(env), "environment"


def open_datastore(path: str | os.PathLike | None = None, env: Mapping[str, str] = os.environ) -> Datastore:
    """Connect to the datastore named by ``path`` or the environment.

    Raises ConfigError (bad file or variables), PluginError, or the datastore's
    DatastoreUnavailable.
    """
    from pycalico.core.plugins import Plugins

    config, source = load_config(Path(path) if path else None, env)
    return Plugins.load(config, source, configure=False, slots=("datastore",)).datastore()
