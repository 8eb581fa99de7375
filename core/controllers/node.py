"""The node controller (``kube-controllers/pkg/controllers/node``): what a deleted node
leaves behind.

A pass, in order:

1. (etcd mode) Calico Nodes whose Kubernetes node (``k8s`` orchRef) is gone are
   deleted, after reading that node once more from the API server (Calico's
   ``nodeDeleter``);
2. (etcd mode) the WorkloadEndpoints of a node that has no Calico Node any more are
   removed once the pod each stands for is gone from that node in Kubernetes (in KDD
   they are the pods themselves);
3. (etcd mode, ``syncLabels``) each Calico Node gets its Kubernetes node's labels;
   the labels copied last time are remembered in the ``projectcalico.org/kube-labels``
   annotation, so that a label removed in Kubernetes is removed here too while labels
   set on the Calico Node by others stay (``labels.go``);
4. the IPAM garbage collection scan (``ipamgc``): the gone node's addresses, tunnel
   addresses, handles and blocks, and leaked pod addresses everywhere.

A pass runs every ``leakGracePeriod / 2`` (5 minutes without one), and at once when
a Calico Node, a Kubernetes node or a pod is deleted.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs

from pycalico.core.datastore import Conflict, Datastore, NotFound
from pycalico.core.resources.meta import Resource

from . import kube as k
from .config import NodeSettings
from .ipamgc import IPAMGC, ScanResult
from .runner import Watch

log = logging.getLogger(__name__)

KUBE_LABELS_ANNOTATION = "projectcalico.org/kube-labels"
DEFAULT_PERIOD = 300.0


def deleted(event: Any) -> bool:
    return event.type == "deleted"


class NodeController:
    name = "node"

    def __init__(self, datastore: Datastore, kube: k.KubeView, settings: NodeSettings, gc: IPAMGC,
                 calico_watch: Any):
        self.ds, self.kube, self.settings, self.gc = datastore, kube, settings, gc
        self.calico_watch = calico_watch
        grace = settings.leak_grace_period
        self.period = grace / 2 if grace else DEFAULT_PERIOD
        self.last: ScanResult | None = None

    def watches(self) -> list[Watch]:
        out = [Watch("calico-nodes", lambda stop: self.calico_watch(["Node"], stop), deleted),
               Watch("pods", lambda stop: self.kube.watch([k.PODS], stop), deleted)]
        # Label changes matter too when they are copied.
        out.append(Watch("k8s-nodes", lambda stop: self.kube.watch([k.NODES], stop),
                         (lambda e: True) if self.settings.sync_labels else deleted))
        return out

    def reconcile(self) -> None:
        calico_nodes = {n.name: n for n in self.ds.list("Node").items}
        k8s_nodes = self.kube.nodes()
        pods = self.kube.pods()
        if self.settings.delete_nodes:
            for name in self._delete_stale_nodes(calico_nodes, k8s_nodes):
                del calico_nodes[name]
            self._remove_endpoints(calico_nodes, pods)
        if self.settings.sync_labels:
            for node in calico_nodes.values():
                self._sync_labels(node, k8s_nodes)
        self.last = self.gc.scan(calico_nodes, set(k8s_nodes), pods)

    # -- etcd mode: Calico Nodes and endpoints ------------------------------------------------

    def _delete_stale_nodes(self, calico_nodes: dict[str, Resource], k8s_nodes: dict[str, dict]) -> list[str]:
        gone = []
        for name, node in sorted(calico_nodes.items()):
            knode = k.k8s_node_name(node)
            if not knode or knode in k8s_nodes:
                continue
            # Listed as gone: make sure it was not re-created since the list.
            if self.kube.node(knode) is not None:
                continue
            try:
                self.ds.delete("Node", name)
            except NotFound:
                pass
            log.info("node controller: deleted Calico Node %s (Kubernetes node %s is gone)", name, knode)
            gone.append(name)
        return gone

    def _remove_endpoints(self, calico_nodes: dict[str, Resource], pods: dict[tuple[str, str], dict]) -> None:
        for wep in self.ds.list("WorkloadEndpoint").items:
            node = wep.spec.node or ""
            if node in calico_nodes:
                continue
            pod = pods.get((wep.metadata.namespace or "", wep.spec.pod or ""))
            if pod is not None and (pod.get("spec") or {}).get("nodeName") in (node, None, ""):
                continue  # its pod still runs there
            try:
                self.ds.delete("WorkloadEndpoint", wep.name, wep.metadata.namespace,
                               resource_version=wep.metadata.resource_version)
            except (NotFound, Conflict):
                continue
            log.info("node controller: removed WorkloadEndpoint %s/%s of deleted node %s", wep.metadata.namespace,
                     wep.name, node)

    def _sync_labels(self, node: Resource, k8s_nodes: dict[str, dict]) -> None:
        knode = k.k8s_node_name(node)
        if not knode or knode not in k8s_nodes:
            return
        wanted = dict((k8s_nodes[knode].get("metadata") or {}).get("labels") or {})
        annotations = dict(node.metadata.annotations or {})
        try:
            before = json.loads(annotations.get(KUBE_LABELS_ANNOTATION) or "{}") or {}
        except ValueError:
            log.error("node controller: Calico Node %s: annotation %s is not JSON, not syncing its labels",
                      node.name, KUBE_LABELS_ANNOTATION)
            return
        labels = dict(node.metadata.labels or {})
        changed = any(labels.get(key) != value for key, value in wanted.items()) or any(
            key not in wanted for key in before)
        if not changed:
            return
        labels.update(wanted)
        for key in before:
            if key not in wanted:
                labels.pop(key, None)
        annotations[KUBE_LABELS_ANNOTATION] = json.dumps(wanted, separators=(",", ":"), sort_keys=True)
        meta = attrs.evolve(node.metadata, labels=labels or None, annotations=annotations)
        try:
            self.ds.update(attrs.evolve(node, metadata=meta))
        except (Conflict, NotFound) as exc:
            log.info("node controller: Calico Node %s changed while its labels were synced (%s); next pass",
                     node.name, exc)
            return
        log.info("node controller: synced Calico Node %s's labels from Kubernetes node %s", node.name, knode)
