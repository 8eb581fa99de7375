"""The etcd datastore plugin: Calico's etcd v3 layout through etcd's gRPC-JSON gateway.

Modules: ``options`` (the ``[datastore.etcd]`` table), ``client`` (endpoints, TLS,
user/password, failover, errors), ``keys`` (Calico's key layout and values), ``store``
(the Datastore: CRUD with compare-and-swap, pages, snapshot) and ``watch`` (watch with
resume, relist-and-diff after compaction).

Registered through the entry point ``etcd`` of the group ``pycalico.datastore``.
"""

from __future__ import annotations

from pycalico.core.datastore import DatastorePlugin

from .client import Compacted, Connection, EtcdError
from .options import Options
from .store import EtcdDatastore

NAME = "etcd"

__all__ = ["NAME", "Compacted", "Connection", "EtcdDatastore", "EtcdError", "Options", "connect", "plugin"]


plugin = DatastorePlugin(NAME, Options, EtcdDatastore)
connect = plugin.connect
