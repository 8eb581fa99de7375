"""The Kubernetes API as the controllers read it, in both datastore modes.

Through the Kubernetes datastore plugin: its client (``KubeAPI``, kubeconfig or
in-cluster), its list-in-chunks and watch machinery, and its conversions of Namespaces,
ServiceAccounts, NetworkPolicies and Pods (``pycalico.core.kube``). In KDD mode this is
the datastore itself; in etcd mode one more connection to the API server named by
``KUBECONFIG``. No Calico custom resource is needed for any of it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from typing import Any

from pycalico.core.datastore import Event
from pycalico.core.kube.names import ORCHESTRATOR_K8S
from pycalico.core.resources.meta import Resource

PODS, NODES = "k8s:pods", "k8s:nodes"
NAMESPACES, SERVICE_ACCOUNTS, NETWORK_POLICIES = "k8s:namespaces", "k8s:serviceaccounts", "k8s:networkpolicies"


def k8s_node_name(node: Resource) -> str | None:
    """The Kubernetes node a Calico Node stands for (its ``k8s`` orchRef); None for a
    Calico Node that is not a Kubernetes node (``getK8sNodeName``)."""
    for ref in node.spec.orch_refs or ():
        if ref.orchestrator == ORCHESTRATOR_K8S:
            return ref.node_name or ""
    return None


def connect(kubeconfig: str = "", timeout: float = 10.0) -> Any:
    """A Kubernetes datastore on ``kubeconfig`` ("" = in-cluster, then ~/.kube/config),
    checked to answer."""
    from pycalico.plugins.datastore.kubernetes import Options
    from pycalico.plugins.datastore.kubernetes import connect as kdd_connect

    return kdd_connect(Options(kubeconfig=kubeconfig, timeout_seconds=timeout))


class KubeView:
    """Raw objects and their Calico conversions from one API server."""

    def __init__(self, store: Any):
        from pycalico.plugins.datastore.kubernetes.sources import SOURCES_BY_ID

        self.store = store
        self.api = store.api
        self._sources = SOURCES_BY_ID

    def __repr__(self) -> str:
        return f"KubeView({self.api.where})"

    def _get(self, source_id: str, name: str, namespace: str | None = None) -> dict | None:
        from pycalico.plugins.datastore.kubernetes.api import ApiError

        try:
            return self.api.request("GET", self._sources[source_id].path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def pod(self, namespace: str, name: str) -> dict | None:
        """The pod as the API server has it now (None: gone)."""
        return self._get(PODS, name, namespace)

    def node(self, name: str) -> dict | None:
        return self._get(NODES, name)

    def objects(self, source_id: str) -> list[dict]:
        """Every object of a source (all namespaces), read in chunks at one version."""
        return self.store.fetch(self._sources[source_id])[0]

    def pods(self) -> dict[tuple[str, str], dict]:
        """(namespace, name) -> pod."""
        return {((p.get("metadata") or {}).get("namespace", ""), (p.get("metadata") or {}).get("name", "")): p
                for p in self.objects(PODS)}

    def nodes(self) -> dict[str, dict]:
        return {(n.get("metadata") or {}).get("name", ""): n for n in self.objects(NODES)}

    def converted(self, source_id: str) -> list[Resource]:
        """The Calico resources a source's objects convert to (those that do not are
        logged and left out, as the Kubernetes datastore reads them)."""
        source = self._sources[source_id]
        return self.store.fetch(source, each=lambda obj: self.store.convert(source, obj))[0]

    def watch(self, source_ids: Collection[str], stop: threading.Event) -> Iterator[Event]:
        """Every object of the sources as ``added``, then every change, until ``stop``."""
        return self.store.watch(None, stop, kinds=list(source_ids))

    def healthz(self) -> str:
        """"" when the API server's ``/healthz`` answers ok, else why not."""
        try:
            self.api.request("GET", "/healthz")
        except Exception as exc:  # noqa: BLE001 - any failure is the reason
            return f"Error reaching apiserver: {exc}"
        return ""
