"""The etcd datastore plugin: Calico's etcd v3 layout through etcd's gRPC-JSON gateway.

Modules: ``options`` (the ``[datastore.etcd]`` table), ``client`` (endpoints, TLS,
user/password, failover, errors), ``keys`` (Calico's key layout and values), ``store``
(the Datastore: CRUD with compare-and-swap, pages, snapshot) and ``watch`` (watch with
resume, relist-and-diff after compaction).

Registered through the entry point ``etcd`` of the group ``pycalico.datastore``.
"""

from __future__ import annotations

import threading

from pycalico.hooks import hookimpl

from .client import Compacted, Connection, EtcdError
from .options import Options
from .store import EtcdDatastore

NAME = "etcd"

__all__ = ["NAME", "Compacted", "Connection", "EtcdDatastore", "EtcdError", "Options", "connect", "plugin"]


def connect(options: Options | None = None) -> EtcdDatastore:
    """A datastore on ``options``' etcd, checked to answer (DatastoreUnavailable if not)."""
    store = EtcdDatastore(options or Options())
    try:
        store.ping()
    except BaseException:
        store.close()
        raise
    return store


class EtcdPlugin:
    """The hook implementations; ``plugin`` below is the registered instance."""

    def __init__(self) -> None:
        self._stores: list[EtcdDatastore] = []
        self._lock = threading.Lock()

    @hookimpl
    def pycalico_config_schema(self, slot: str, name: str) -> type | None:
        if (slot, name) == ("datastore", NAME):
            return Options
        return None

    @hookimpl
    def pycalico_datastore(self, config) -> EtcdDatastore | None:
        if config.datastore.type != NAME:
            return None
        store = connect(config.datastore.options or Options())
        with self._lock:
            self._stores.append(store)
        return store

    @hookimpl
    def pycalico_unconfigure(self, config) -> None:
        with self._lock:
            stores, self._stores = self._stores, []
        for store in stores:
            store.close()


plugin = EtcdPlugin()
