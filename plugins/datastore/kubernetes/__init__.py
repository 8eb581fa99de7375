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

from pycalico.core.datastore import DatastorePlugin

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


plugin = DatastorePlugin(NAME, Options, KubernetesDatastore)
connect = plugin.connect
