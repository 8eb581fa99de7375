"""``calico-lab apply``, ``delete`` and ``label``: the lab plays Kubernetes.

In etcd mode calico-kube-controllers turns Kubernetes Namespaces, ServiceAccounts and
NetworkPolicies into Calico Profiles (``kns.<ns>``, ``ksa.<ns>.<sa>``) and NetworkPolicies
(``knp.default.<name>``), and keeps each WorkloadEndpoint's labels equal to its pod's.
The lab has no API server, so it stands in for both: a manifest's Kubernetes objects
are checked and defaulted as the API server would (:mod:`pycalico.core.kube.validation`),
converted by :mod:`pycalico.core.kube` (what the Kubernetes datastore reads them with),
and written to the lab's etcd together with the manifest's Calico resources, which are
defaulted and validated as ``calicoctl apply`` does.

Kubernetes' own housekeeping is copied where policy depends on it: every namespace has a
``default`` ServiceAccount (created with the namespace, or with its first pod), and a
pod's namespace is created with the pod if it does not exist. Deleting a Namespace
deletes its profiles, service accounts and policies; it is refused while lab pods are
in it.

Each object's outcome is reported in kubectl's words (``namespace/x created``,
``networkpolicy.networking.k8s.io/deny configured``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import yaml

from pycalico.core.datastore import Conflict, NotFound
from pycalico.core.kube import names
from pycalico.core.kube.convert import CONVERTERS, is_kubernetes, to_calico, type_of
from pycalico.core.kube.objects import ConversionError
from pycalico.core.kube.pods import workload_labels
from pycalico.core.kube.validation import Invalid, admit
from pycalico.core.kube.validation import labels as label_problems
from pycalico.core.resources.base import ResourceError
from pycalico.core.resources.codec import YamlLoader, from_dict, to_dict
from pycalico.core.resources.meta import Resource

from . import pods
from .cluster import Lab
from .state import LabError

NAMESPACED_CALICO_KINDS = ("NetworkPolicy", "NetworkSet")
UPDATE_TRIES = 5


@attrs.frozen
class Entry:
    """One object of a manifest: what kubectl calls it, and the Calico resource it is."""

    label: str
    resource: Resource
    kube: dict | None = None  # the admitted Kubernetes object, if it was one


@attrs.frozen
class Outcome:
    label: str
    action: str  # created, configured, unchanged, deleted, "not found"

    def __str__(self) -> str:
        return f"{self.label} {self.action}"


# --- reading a manifest -----------------------------------------------------------------------


def _documents(text: str, source: str) -> list[tuple[str, Any]]:
    try:
        docs = [d for d in yaml.load_all(text, Loader=YamlLoader) if d is not None]
    except yaml.YAMLError as exc:
        raise LabError(f"{source}: invalid YAML or JSON: {' '.join(str(exc).split())}") from None
    out = []
    for i, doc in enumerate(docs, 1):
        where = f"{source} document {i}" if len(docs) > 1 else source
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out += [(f"{where} item {j}", item) for j, item in enumerate(doc["items"], 1)]
        else:
            out.append((where, doc))
    return out


def _kubectl_name(api_version: str, kind: str, name: str) -> str:
    group = api_version.rpartition("/")[0]
    return f"{kind.lower()}{'.' + group if group else ''}/{name}"


def read_manifest(text: str, source: str = "<stdin>") -> list[Entry]:
    """Every object of a YAML or JSON manifest, checked and converted; LabError listing
    every problem of every document."""
    entries, errors = [], []
    for where, doc in _documents(text, source):
        if not isinstance(doc, dict):
            errors.append(f"{where}: expected an object (apiVersion, kind, metadata...), got {type(doc).__name__}")
            continue
        try:
            if is_kubernetes(doc):
                if type_of(doc) not in CONVERTERS:
                    errors.append(f"{where}: {' '.join(type_of(doc))}: the lab takes Calico resources and v1 "
                                  "Namespace, v1 ServiceAccount, networking.k8s.io/v1 NetworkPolicy (pods: "
                                  "`calico-lab pod add`)")
                    continue
                obj = admit(doc)
                # Calico's client fills in defaults and validates what kube-controllers write.
                resource = from_dict(to_dict(to_calico(obj)), source=where)
                api_version, kind = type_of(obj)
                entries.append(Entry(_kubectl_name(api_version, kind, obj["metadata"]["name"]), resource, obj))
            else:
                resource = from_dict(doc, source=where)
                entries.append(Entry(_kubectl_name(resource.api_version, type(resource).KIND, resource.name), resource))
        except Invalid as exc:
            errors += [f"{where}: {exc.what}: {path}: {message}" for path, message in exc.problems]
        except ResourceError as exc:
            errors += exc.lines
        except ConversionError as exc:
            errors.append(f"{where}: {exc}")
    if errors:
        raise LabError("\n".join(errors))
    return entries


# --- writing ----------------------------------------------------------------------------------


def _ident(resource: Resource) -> tuple[str, str, str | None]:
    return type(resource).KIND, resource.name, resource.metadata.namespace


def _same(stored: Resource, wanted: Resource) -> bool:
    return (to_dict(stored).get("spec") == to_dict(wanted).get("spec")
            and (stored.metadata.labels or {}) == (wanted.metadata.labels or {})
            and (stored.metadata.annotations or {}) == (wanted.metadata.annotations or {}))


def upsert(ds, resource: Resource) -> str:
    """Create ``resource`` or bring the stored one to it: created, configured or unchanged."""
    kind, name, namespace = _ident(resource)
    meta = resource.metadata
    for _ in range(UPDATE_TRIES):
        try:
            stored = ds.get(kind, name, namespace)
        except NotFound:
            fresh = attrs.evolve(meta, resource_version=None, uid=None, creation_timestamp=None)
            ds.create(attrs.evolve(resource, metadata=fresh))
            return "created"
        if _same(stored, resource):
            return "unchanged"
        kept = attrs.evolve(meta, resource_version=stored.metadata.resource_version, uid=stored.metadata.uid,
                            creation_timestamp=stored.metadata.creation_timestamp)
        try:
            ds.update(attrs.evolve(resource, metadata=kept))
            return "configured"
        except (Conflict, NotFound):
            continue  # changed under us: read it again
    raise LabError(f"{kind} {name}: kept changing while being written; try again")


def _delete(ds, kind: str, name: str, namespace: str | None) -> bool:
    try:
        ds.delete(kind, name, namespace)
        return True
    except NotFound:
        return False


def ensure_namespace(ds, namespace: str) -> list[str]:
    """The profiles of Namespace ``namespace`` and of its ``default`` ServiceAccount,
    created if missing (existing ones are left as they are); the names created."""
    made = []
    for obj in ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                {"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": names.DEFAULT_SERVICE_ACCOUNT, "namespace": namespace}}):
        profile = to_calico(admit(obj))
        try:
            ds.get("Profile", profile.name)
        except NotFound:
            upsert(ds, profile)
            made.append(profile.name)
    return made


def _run(lab: Lab, fn):
    return pods.with_datastore(lab, lab.nodes[0], fn)


def apply(lab: Lab, text: str, source: str = "<stdin>") -> list[Outcome]:
    """Create or update every object of the manifest, in order."""
    entries = read_manifest(text, source)

    def write(ds) -> list[Outcome]:
        out = []
        for e in entries:
            out.append(Outcome(e.label, upsert(ds, e.resource)))
            if e.kube is not None and e.kube["kind"] == "Namespace":
                ensure_namespace(ds, e.kube["metadata"]["name"])
        return out

    return _run(lab, write)


def _namespace_contents(ds, namespace: str) -> list[tuple[str, str, str | None]]:
    """What Kubernetes deletes with a namespace, as Calico resources: its service
    accounts' profiles and its policies and network sets."""
    out = []
    for p in ds.list("Profile").items:
        owner = names.parse_profile(p.name)
        if owner is not None and owner[0] == namespace and owner[1] is not None:
            out.append(("Profile", p.name, None))
    for kind in NAMESPACED_CALICO_KINDS:
        out += [(kind, r.name, namespace) for r in ds.list(kind, namespace=namespace).items]
    return out


def delete(lab: Lab, text: str, source: str = "<stdin>") -> list[Outcome]:
    """Delete every object of the manifest (a Namespace with what is in it)."""
    entries = read_manifest(text, source)
    for e in entries:
        if e.kube is not None and e.kube["kind"] == "Namespace":
            busy = [p.key for p in pods.list_pods(lab) if p.namespace == e.kube["metadata"]["name"]]
            if busy:
                raise LabError(f"{e.label}: the lab still has pods in it ({', '.join(busy)}); "
                               "delete them first with `calico-lab pod del`")

    def remove(ds) -> list[Outcome]:
        out = [Outcome(e.label, "deleted" if _delete(ds, *_ident(e.resource)) else "not found") for e in entries]
        # What a namespace held goes after the manifest's own objects, which may be in it.
        for e in entries:
            if e.kube is not None and e.kube["kind"] == "Namespace":
                for ident in _namespace_contents(ds, e.kube["metadata"]["name"]):
                    _delete(ds, *ident)
        return out

    return _run(lab, remove)


# --- labels -----------------------------------------------------------------------------------


def parse_label_changes(items: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """kubectl's ``key=value`` (set) and ``key-`` (remove) arguments; LabError naming a
    bad one."""
    setting, removing = {}, []
    for item in items:
        if item.endswith("-") and "=" not in item:
            removing.append(item[:-1])
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LabError(f"label {item!r}: use KEY=VALUE to set a label or KEY- to remove it")
        setting[key] = value
    bad = list(label_problems({**setting, **{k: "" for k in removing}}, "labels"))
    if bad:
        raise LabError("; ".join(f"{path}: {msg}" for path, msg in bad))
    return setting, removing


def _changed(labels: dict[str, str], setting: dict[str, str], removing: Iterable[str]) -> dict[str, str]:
    out = {k: v for k, v in labels.items() if k not in set(removing)}
    out.update(setting)
    return out


def namespace_labels(profile: Resource) -> dict[str, str]:
    """A namespace's labels, read back from its ``kns.`` profile."""
    name_label = names.NAMESPACE_LABEL_PREFIX + names.NAME_LABEL
    return {k[len(names.NAMESPACE_LABEL_PREFIX):]: v for k, v in (profile.spec.labels_to_apply or {}).items()
            if k.startswith(names.NAMESPACE_LABEL_PREFIX) and k != name_label}


def label(lab: Lab, target: str, items: Sequence[str]) -> Outcome:
    """Change the labels of ``ns/NAME`` or ``pod/NAMESPACE/NAME`` in place (kubectl label)."""
    setting, removing = parse_label_changes(items)
    kind, _, rest = target.partition("/")
    if kind in ("ns", "namespace", "namespaces") and rest and "/" not in rest:
        return _label_namespace(lab, rest, setting, removing)
    if kind in ("pod", "pods") and rest.count("/") == 1:
        return _label_pod(lab, rest, setting, removing)
    raise LabError(f"label {target!r}: name a namespace (ns/NAME) or a pod (pod/NAMESPACE/NAME)")


def _label_namespace(lab: Lab, name: str, setting: dict, removing: list) -> Outcome:
    def relabel(ds) -> Outcome:
        try:
            stored = ds.get("Profile", names.namespace_profile(name))
        except NotFound:
            raise LabError(f"namespace {name!r} not found (apply a v1 Namespace, or add a pod to it)") from None
        obj = {"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "labels": _changed(namespace_labels(stored), setting, removing)}}
        action = upsert(ds, to_calico(admit(obj)))
        return Outcome(f"namespace/{name}", "labeled" if action != "unchanged" else "not labeled")

    return _run(lab, relabel)


def _label_pod(lab: Lab, key: str, setting: dict, removing: list) -> Outcome:
    pod = pods.get_pod(lab, key)
    wanted = _changed(pod.labels, setting, removing)

    def relabel(ds) -> int:
        changed = 0
        for _ in range(UPDATE_TRIES):
            weps = [w for w in ds.list("WorkloadEndpoint", namespace=pod.namespace).items
                    if w.spec.pod == pod.name and w.spec.node == pod.node]
            try:
                for wep in weps:
                    labels = workload_labels(wanted, pod.namespace, wep.spec.service_account_name or "")
                    if labels != (wep.metadata.labels or {}):
                        ds.update(attrs.evolve(wep, metadata=attrs.evolve(wep.metadata, labels=labels)))
                        changed += 1
                return changed
            except Conflict:
                continue
        raise LabError(f"pod {key}: its WorkloadEndpoint kept changing; try again")

    changed = _run(lab, relabel)
    pods.set_labels(lab, key, wanted)
    return Outcome(f"pod/{pod.name}", "labeled" if changed or wanted != pod.labels else "not labeled")
