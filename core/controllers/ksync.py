"""etcd mode: what Calico needs of Kubernetes, kept in etcd (kube-controllers' policy,
namespace, serviceaccount and workloadendpoint controllers).

In the Kubernetes datastore Calico reads these objects natively; with etcd it reads
only etcd, so the controllers copy them, each with the conversion the Kubernetes
datastore reads them with (``pycalico.core.kube``):

============================  ==========================================================
controller                    keeps in etcd
============================  ==========================================================
``policy``                    NetworkPolicy ``knp.default.<name>`` per Kubernetes
                              NetworkPolicy
``namespace``                 Profile ``kns.<namespace>`` per Namespace
``serviceaccount``            Profile ``ksa.<namespace>.<name>`` per ServiceAccount
``workloadendpoint``          each Kubernetes WorkloadEndpoint's labels equal to its
                              pod's (the CNI plugin creates and deletes the endpoints)
============================  ==========================================================

Each pass is level-based: the desired objects from a fresh list of Kubernetes, the
actual ones from etcd (only those the controller owns, by name prefix), and only the
difference written with compare-and-swap: missing ones created, changed ones updated,
stale ones deleted. A watch on the Kubernetes objects triggers a pass; every
``reconcilerPeriod`` one runs anyway.
"""

from __future__ import annotations

import logging

import attrs

from pycalico.core.datastore import AlreadyExists, Conflict, Datastore, NotFound
from pycalico.core.kube import names
from pycalico.core.resources.codec import to_dict
from pycalico.core.resources.meta import Resource

from . import kube as k
from .runner import Watch

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace or "", name)


def key_of(resource: Resource) -> Key:
    return resource.metadata.namespace or "", resource.name


def same(stored: Resource, wanted: Resource) -> bool:
    """Whether the stored resource already says what ``wanted`` says."""
    return (to_dict(stored).get("spec") == to_dict(wanted).get("spec")
            and (stored.metadata.labels or {}) == (wanted.metadata.labels or {})
            and (stored.metadata.annotations or {}) == (wanted.metadata.annotations or {}))


@attrs.frozen
class Counts:
    created: int = 0
    updated: int = 0
    deleted: int = 0


class KubeSync:
    """One kind of Kubernetes object kept in etcd as the Calico resources it converts to."""

    def __init__(self, name: str, datastore: Datastore, kube: k.KubeView, source: str, kind: str, prefix: str,
                 period: float):
        self.name, self.ds, self.kube = name, datastore, kube
        self.source, self.kind, self.prefix, self.period = source, kind, prefix, period
        self.last = Counts()

    def watches(self) -> list[Watch]:
        return [Watch(self.source, lambda stop: self.kube.watch([self.source], stop))]

    def desired(self) -> dict[Key, Resource]:
        out = {}
        for res in self.kube.converted(self.source):
            # etcd gives the copy an identity of its own (the uid and version shown are
            # the Kubernetes object's).
            meta = attrs.evolve(res.metadata, uid=None, resource_version=None, creation_timestamp=None)
            out[key_of(res)] = attrs.evolve(res, metadata=meta)
        return out

    def reconcile(self) -> None:
        want = self.desired()
        have = {key_of(r): r for r in self.ds.list(self.kind).items if r.name.startswith(self.prefix)}
        created = updated = deleted = 0
        for key in sorted(want.keys() - have.keys()):
            try:
                self.ds.create(want[key])
                created += 1
            except AlreadyExists:
                continue  # written meanwhile: the next pass compares it
        for key in sorted(want.keys() & have.keys()):
            stored, res = have[key], want[key]
            if same(stored, res):
                continue
            kept = attrs.evolve(res.metadata, resource_version=stored.metadata.resource_version,
                                uid=stored.metadata.uid, creation_timestamp=stored.metadata.creation_timestamp)
            try:
                self.ds.update(attrs.evolve(res, metadata=kept))
                updated += 1
            except (Conflict, NotFound):
                continue
        for key in sorted(have.keys() - want.keys()):
            try:
                self.ds.delete(self.kind, key[1], key[0] or None, resource_version=have[key].metadata.resource_version)
                deleted += 1
            except (Conflict, NotFound):
                continue
        self.last = Counts(created, updated, deleted)
        if created or updated or deleted:
            log.info("%s controller: %d %s created, %d updated, %d deleted", self.name, created, self.kind, updated,
                     deleted)


def policy_sync(datastore: Datastore, kube: k.KubeView, period: float) -> KubeSync:
    return KubeSync("policy", datastore, kube, k.NETWORK_POLICIES, "NetworkPolicy",
                    names.K8S_NETWORK_POLICY_PREFIX, period)


def namespace_sync(datastore: Datastore, kube: k.KubeView, period: float) -> KubeSync:
    return KubeSync("namespace", datastore, kube, k.NAMESPACES, "Profile", names.NAMESPACE_PROFILE_PREFIX, period)


def service_account_sync(datastore: Datastore, kube: k.KubeView, period: float) -> KubeSync:
    return KubeSync("serviceaccount", datastore, kube, k.SERVICE_ACCOUNTS, "Profile",
                    names.SERVICE_ACCOUNT_PROFILE_PREFIX, period)


class EndpointLabels:
    """The workloadendpoint controller: a Kubernetes WorkloadEndpoint's labels follow its
    pod's (pod labels plus ``projectcalico.org/namespace``, ``/orchestrator``,
    ``/serviceaccount``). Pods that are not scheduled, are host-networked or have no IP
    yet are left alone, as are endpoints without a pod."""

    name = "workloadendpoint"

    def __init__(self, datastore: Datastore, kube: k.KubeView, period: float):
        self.ds, self.kube, self.period = datastore, kube, period
        self.last = Counts()

    def watches(self) -> list[Watch]:
        return [Watch("pods", lambda stop: self.kube.watch([k.PODS], stop))]

    def reconcile(self) -> None:
        wanted = {(w.metadata.namespace or "", w.spec.pod or ""): dict(w.metadata.labels or {})
                  for w in self.kube.converted(k.PODS) if w.spec.ip_networks}
        updated = 0
        for wep in self.ds.list("WorkloadEndpoint").items:
            if wep.spec.orchestrator != names.ORCHESTRATOR_K8S:
                continue
            labels = wanted.get((wep.metadata.namespace or "", wep.spec.pod or ""))
            if labels is None or labels == (wep.metadata.labels or {}):
                continue
            try:
                self.ds.update(attrs.evolve(wep, metadata=attrs.evolve(wep.metadata, labels=labels or None)))
                updated += 1
            except (Conflict, NotFound):
                continue
        self.last = Counts(updated=updated)
        if updated:
            log.info("workloadendpoint controller: labels of %d WorkloadEndpoints updated", updated)
