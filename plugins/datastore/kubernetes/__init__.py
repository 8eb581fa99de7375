"""The Kubernetes datastore plugin (KDD): Calico's resources kept in the Kubernetes API,
as Calico keeps them.

* Calico-only kinds are custom resources of ``crd.projectcalico.org/v1`` (CRDs shipped
  in ``crd-manifests/``, generated from the v3 types by ``crds``); Nodes, WorkloadEndpoints,
  Profiles and Kubernetes NetworkPolicies are read from (and, where Calico does,
  written to) Kubernetes' own objects (``convert``, ``sources``).
* ``store``: the Datastore (CRUD with compare-and-swap on resourceVersion, pages,
  snapshot); ``watch``: per-source list+watch with bookmarks, resume and
  relist-and-diff after 410 Gone; ``api``: HTTP through the ``kubernetes`` client's
  configuration; ``options``: the ``[datastore.kubernetes]`` table; ``names``: the
  names Calico derives.

Registered through the entry point ``kubernetes`` of the group ``pycalico.datastore``.
See docs/kubernetes-datastore.md.
"""

from __future__ import annotations

import threading

from pycalico.hooks import hookimpl

from .api import ApiError, KubeAPI
from .crds import crd_manifests, install_crds
from .options import Options
from .sources import Revision
from .store import Expired, Forbidden, Invalid, KubernetesDatastore

NAME = "kubernetes"

__all__ = [
    "NAME",
    "ApiError",
    "Expired",
    "Forbidden",
    "Invalid",
    "KubeAPI",
    "KubernetesDatastore",
    "Options",
    "Revision",
    "connect",
    "crd_manifests",
    "install_crds",
    "plugin",
]


def connect(options: Options | None = None) -> KubernetesDatastore:
    """A datastore on the API server ``options`` name, checked to answer
    (DatastoreUnavailable if not)."""
    store = KubernetesDatastore(options or Options())
    try:
        store.ping()
    except BaseException:
        store.close()
        raise
    return store


class KubernetesPlugin:
    """The hook implementations; ``plugin`` below is the registered instance."""

    def __init__(self) -> None:
        self._stores: list[KubernetesDatastore] = []
        self._lock = threading.Lock()

    @hookimpl
    def pycalico_config_schema(self, slot: str, name: str) -> type | None:
        if (slot, name) == ("datastore", NAME):
            return Options
        return None

    @hookimpl
    def pycalico_datastore(self, config) -> KubernetesDatastore | None:
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


plugin = KubernetesPlugin()
