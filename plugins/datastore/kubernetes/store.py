"""The Kubernetes Datastore: typed CRUD with compare-and-swap on resourceVersion,
consistent pages, snapshot and watch, over custom resources and native objects.

* CAS: an update or delete given a resourceVersion sends it (PUT body, DELETE
  precondition, PATCH body); the API server answers 409 if the object moved on
  (Conflict). Without one, the plugin reads the current version and retries on 409:
  custom resources cannot be updated unconditionally.
* Errors: 404 NotFound, 409 AlreadyExists / Conflict, 410 Expired (a continue token
  or revision that was compacted), 400/422 Invalid, 401/403 Forbidden; an
  unreachable server, a timeout, 5xx or 429 DatastoreUnavailable.
* Paging: a kind with one source whose objects are named as its resources (every
  custom resource kind except the policies, and Node) pages on the server
  (``limit``/``continue``, consistent at the first page's resourceVersion). Other
  lists (several sources, renamed objects, a selector, which must be evaluated here
  since Calico keeps labels in an annotation) are read whole, sorted, and paged from
  a small cache, relisting at the exact resourceVersions when the cache no longer
  has them.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator
from typing import Any

from pycalico.core import selector as selectors
from pycalico.core.datastore import (
    AlreadyExists,
    Conflict,
    DatastoreError,
    Event,
    NotFound,
    OperationNotSupported,
    Page,
    Snapshot,
    check_identity,
)
from pycalico.core.resources import codec
from pycalico.core.resources.meta import Resource
from pycalico.core.times import rfc3339

from . import convert, names
from .api import STRATEGIC_MERGE_PATCH, ApiError, KubeAPI
from .options import Options
from .sources import KIND_SOURCES, Revision, Source, kinds_of

log = logging.getLogger(__name__)

CHUNK = 500  # objects per list request when reading a whole collection
REMEMBERED_STATES = 8
CACHED_LISTS = 4
WRITE_RETRIES = 5
NOT_CREATABLE = {
    "Node": "Calico Nodes are Kubernetes Nodes (only their Calico annotations are written)",
    "Profile": "Profiles are Kubernetes Namespaces and ServiceAccounts",
}


class Expired(DatastoreError):
    """A continue token or revision whose history the API server has compacted: list again."""


class Invalid(DatastoreError, ValueError):
    """The API server refused the object (400/422)."""


class Forbidden(DatastoreError):
    """The credentials may not do this (401/403)."""


def rv_of(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("resourceVersion") or ""


def _what(kind: str, name: str, namespace: str | None) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


class KubernetesDatastore:
    """pycalico's Datastore over the Kubernetes API (Calico's KDD layout)."""

    def __init__(self, options: Options | None = None, api: KubeAPI | None = None):
        self.options = options or Options()
        self.api = api or KubeAPI(self.options)
        self._states: OrderedDict[tuple[str, str], dict] = OrderedDict()
        self._lists: OrderedDict[tuple, list] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KubernetesDatastore({self.api.where})"

    @property
    def closed(self) -> bool:
        return self.api.closed

    def ping(self) -> dict:
        """The server's version; DatastoreUnavailable if it does not answer."""
        try:
            return self.api.request("GET", "/version")
        except ApiError as exc:
            if exc.status in (401, 403):
                raise Forbidden(f"Kubernetes API server {self.api.where}: {exc.message}") from None
            return {}

    def close(self) -> None:
        self.api.close()

    # -- errors ---------------------------------------------------------------------

    def _error(self, exc: ApiError, kind: str, name: str, namespace: str | None) -> Exception:
        if exc.status == 404:
            if exc.route_missing:
                return NotFound(kind, name, namespace,
                                detail=f"not served by the API server {self.api.where} (is its CRD installed?)")
            details = exc.details if isinstance(exc.details, dict) else {}
            if details.get("kind") == "namespaces" and namespace and details.get("name") == namespace:
                return NotFound(kind, name, namespace, detail=f"namespace {namespace} does not exist")
            return NotFound(kind, name, namespace)
        if exc.status == 409:
            if exc.reason == "AlreadyExists":
                return AlreadyExists(kind, name, namespace)
            return Conflict(kind, name, namespace)
        if exc.status == 410:
            return Expired(f"{_what(kind, name, namespace)}: {exc.message}")
        if exc.status in (400, 422):
            return Invalid(f"{_what(kind, name, namespace)}: refused by the API server: {exc.message}")
        if exc.status in (401, 403):
            return Forbidden(f"{_what(kind, name, namespace)}: {exc.message}")
        if exc.status == 405:
            return OperationNotSupported(kind, name, namespace, detail=exc.message)
        return DatastoreError(f"{_what(kind, name, namespace)}: {exc}")

    # -- reading collections ----------------------------------------------------------

    def fetch(self, source: Source, namespace: str | None = None, resource_version: str | None = None,
              each: Callable[[dict], Any] | None = None) -> tuple[list, str]:
        """Every object of ``source`` (in ``namespace``), read in chunks at one
        resourceVersion (exactly ``resource_version`` if given); raises ApiError.

        With ``each``, every object is replaced by ``each(obj)`` (None: dropped) as its
        chunk arrives, so the raw objects of a whole list are never held at once."""
        query: dict[str, Any] = {"limit": CHUNK}
        if resource_version:
            query.update(resourceVersion=resource_version, resourceVersionMatch="Exact")
        items: list = []
        list_rv = ""
        while True:
            body = self.api.request("GET", source.path(namespace), query)
            chunk = body.get("items") or []
            items.extend(chunk if each is None else (x for x in map(each, chunk) if x is not None))
            meta = body.get("metadata") or {}
            list_rv = list_rv or meta.get("resourceVersion") or ""
            token = meta.get("continue")
            if not token:
                return items, list_rv
            query = {"limit": CHUNK, "continue": token}

    def convert(self, source: Source, obj: dict) -> Resource | None:
        try:
            return source.convert(obj)
        except (convert.ConversionError, ValueError, TypeError, KeyError) as exc:
            log.warning("kdd: skipping %s %s (resourceVersion %s): %s", source.id, convert.object_key(obj),
                        rv_of(obj), exc)
            return None

    def entry(self, source: Source, obj: dict) -> tuple[str, tuple[str, Resource]] | None:
        """(object key, (resourceVersion, resource)) of an object that converts."""
        res = self.convert(source, obj)
        return None if res is None else (convert.object_key(obj), (rv_of(obj), res))

    def state_of(self, source: Source, items: list[dict]) -> dict[str, tuple[str, Resource]]:
        """object key -> (resourceVersion, resource) of the objects that convert."""
        return dict(e for e in (self.entry(source, obj) for obj in items) if e is not None)

    # -- typed CRUD -----------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        info = codec.kind_info(kind)
        kind, ns = info.kind, self._namespace(info, namespace)
        try:
            if kind == "Node":
                return convert.node_to_calico(self._get_object(KIND_SOURCES["Node"][0], name, None))
            if kind == "WorkloadEndpoint":
                return self._get_wep(name, ns)[1]
            if kind == "Profile":
                return self._get_profile(name)
            if kind == "NetworkPolicy" and names.is_k8s_policy(name):
                source = KIND_SOURCES["NetworkPolicy"][1]
                obj = self._get_object(source, name[len(names.K8S_NETWORK_POLICY_PREFIX):], ns)
                return convert.knp_to_calico(obj)
            source = KIND_SOURCES[kind][0]
            _, obj = self._find_cr(kind, source, name, ns)
            return convert.from_cr(obj, kind)
        except ApiError as exc:
            raise self._error(exc, kind, name, ns) from None
        except convert.ConversionError as exc:
            raise DatastoreError(f"{_what(kind, name, ns)}: stored object does not convert: {exc}") from None

    def _get_object(self, source: Source, name: str, namespace: str | None) -> dict:
        return self.api.request("GET", source.path(namespace, name))

    def _find_cr(self, kind: str, source: Source, name: str, namespace: str | None) -> tuple[str, dict]:
        """(backend name, custom resource) of a resource; a default-tier policy is also
        looked for under its pre-v3.32 name ``default.<name>``."""
        try:
            return name, self._get_object(source, name, namespace)
        except ApiError as exc:
            legacy = names.legacy_policy_name(name) if kind in convert.POLICY_KINDS else None
            if exc.status != 404 or exc.route_missing or legacy is None:
                raise
            try:
                obj = self._get_object(source, legacy, namespace)
            except ApiError:
                raise exc from None
            if convert.from_cr(obj, kind).name != name:
                raise exc from None
            return legacy, obj

    def _get_wep(self, name: str, namespace: str | None) -> tuple[dict, Resource]:
        pod_name = names.pod_of_workload_endpoint(name)
        if pod_name is None:
            raise NotFound("WorkloadEndpoint", name, namespace, detail="not a Kubernetes WorkloadEndpoint name")
        pod = self._get_object(KIND_SOURCES["WorkloadEndpoint"][0], pod_name, namespace)
        wep = convert.pod_to_wep(pod)
        if wep is None or wep.name != name:
            raise NotFound("WorkloadEndpoint", name, namespace)
        return pod, wep

    def _get_profile(self, name: str) -> Resource:
        if name == names.DEFAULT_ALLOW_PROFILE:
            return convert.default_allow_profile()
        parsed = names.parse_profile(name)
        if parsed is None:
            raise NotFound("Profile", name, detail="not a Kubernetes profile (kns.<namespace> or ksa.<namespace>.<sa>)")
        ns, sa = parsed
        ns_source, sa_source = KIND_SOURCES["Profile"]
        if sa is None:
            return convert.namespace_to_profile(self._get_object(ns_source, ns, None))
        return convert.service_account_to_profile(self._get_object(sa_source, sa, ns))

    def create(self, resource: Any) -> Any:
        info = codec.kind_info(resource)
        kind, name, ns = info.kind, resource.name, resource.metadata.namespace
        check_identity(info, resource)
        if kind == "WorkloadEndpoint":
            # The endpoint is the Pod, which Kubernetes created: Calico's KDD client
            # "creates" it by patching the pod's annotations, as the CNI plugin needs.
            try:
                return self._patch_wep(convert.with_meta(resource, resource_version=None),
                                       convert.wep_annotations(resource))
            except ApiError as exc:
                raise self._error(exc, kind, name, ns) from None
        if kind in NOT_CREATABLE:
            raise OperationNotSupported(kind, name, ns, detail=f"create is not supported: {NOT_CREATABLE[kind]}")
        self._check_writable(kind, name, ns)
        changes: dict[str, Any] = {"resource_version": None}
        if kind not in convert.IPAM_KINDS and not resource.metadata.creation_timestamp:
            changes["creation_timestamp"] = convert.now()  # as Calico's clientv3 does on create
        source = KIND_SOURCES[kind][0]
        body = convert.to_cr(convert.with_meta(resource, **changes))
        try:
            out = self.api.request("POST", source.path(ns), body=body)
        except ApiError as exc:
            raise self._error(exc, kind, name, ns) from None
        return convert.from_cr(out, kind)

    def update(self, resource: Any) -> Any:
        info = codec.kind_info(resource)
        kind, name, ns = info.kind, resource.name, resource.metadata.namespace
        check_identity(info, resource)
        try:
            if kind == "Node":
                return self._update_node(resource)
            if kind == "WorkloadEndpoint":
                return self._patch_wep(resource, convert.wep_annotations(resource))
            if kind == "Profile":
                raise OperationNotSupported(kind, name, ns, detail=f"update is not supported: {NOT_CREATABLE[kind]}")
            self._check_writable(kind, name, ns)
            return self._update_cr(info, resource)
        except ApiError as exc:
            raise self._error(exc, kind, name, ns) from None

    def _update_cr(self, info: codec.KindInfo, resource: Resource) -> Resource:
        kind, name, ns = info.kind, resource.name, resource.metadata.namespace
        source = KIND_SOURCES[kind][0]
        wanted = resource.metadata.resource_version
        for _ in range(WRITE_RETRIES):
            backend, res = name, resource
            if not wanted or kind in convert.POLICY_KINDS:
                backend, current = self._find_cr(kind, source, name, ns)
                stored = convert.from_cr(current, kind)
                if wanted and wanted != rv_of(current):
                    raise Conflict(kind, name, ns)
                res = convert.with_meta(
                    res,
                    resource_version=rv_of(current),
                    uid=res.metadata.uid if wanted else stored.metadata.uid,
                    creation_timestamp=res.metadata.creation_timestamp or stored.metadata.creation_timestamp,
                )
            try:
                out = self.api.request("PUT", source.path(ns, backend), body=convert.to_cr(res, backend_name=backend))
            except ApiError as exc:
                if exc.status == 409 and not wanted:
                    continue  # changed between our read and our write; the caller gave no version
                raise
            return convert.from_cr(out, kind)
        raise Conflict(kind, name, ns, detail=f"changed {WRITE_RETRIES} times while being updated")

    def _update_node(self, node: Resource) -> Resource:
        source = KIND_SOURCES["Node"][0]
        wanted = node.metadata.resource_version
        for _ in range(WRITE_RETRIES):
            current = self._get_object(source, node.name, None)
            if wanted and wanted != rv_of(current):
                raise Conflict("Node", node.name)
            merged = convert.merge_node(node, current)
            try:
                # Calico writes its annotations through the status subresource
                # (UpdateStatus), which leaves the Node's spec alone.
                out = self.api.request("PUT", source.path(None, node.name, "status"), body=merged)
            except ApiError as exc:
                if exc.status == 409 and not wanted:
                    continue
                raise
            return convert.node_to_calico(out)
        raise Conflict("Node", node.name, detail=f"changed {WRITE_RETRIES} times while being updated")

    def set_network_available(self, node: str, available: bool) -> None:
        """The Kubernetes Node's ``NetworkUnavailable`` condition as calico-node sets it:
        ``False``/``CalicoIsUp`` when it starts, ``True``/``CalicoIsDown`` when it shuts
        down; a strategic merge patch of the Node's ``status.conditions`` (keyed by
        type) through nodes/status, leaving the kubelet's conditions alone."""
        now = rfc3339()
        condition = {
            "type": "NetworkUnavailable",
            "status": "False" if available else "True",
            "reason": "CalicoIsUp" if available else "CalicoIsDown",
            "message": "Calico is running on this node" if available else "Calico is shutting down on this node",
            "lastTransitionTime": now,
            "lastHeartbeatTime": now,
        }
        source = KIND_SOURCES["Node"][0]
        try:
            self.api.request("PATCH", source.path(None, node, "status"), body={"status": {"conditions": [condition]}},
                             content_type=STRATEGIC_MERGE_PATCH)
        except ApiError as exc:
            raise self._error(exc, "Node", node, None) from None

    def _patch_wep(self, wep: Resource, annotations: dict[str, str]) -> Resource:
        """Patch the pod's Calico annotations (``cni.projectcalico.org/podIP``,
        ``podIPs``, ``containerID``) through pods/status, as Calico's CNI plugin does."""
        ns = wep.metadata.namespace
        self._get_wep(wep.name, ns)  # the pod exists and is this endpoint
        pod_name = names.pod_of_workload_endpoint(wep.name)
        meta: dict[str, Any] = {"annotations": annotations}
        if wep.metadata.resource_version:
            meta["resourceVersion"] = wep.metadata.resource_version
        source = KIND_SOURCES["WorkloadEndpoint"][0]
        out = self.api.request("PATCH", source.path(ns, pod_name, "status"), body={"metadata": meta},
                               content_type=STRATEGIC_MERGE_PATCH)
        result = convert.pod_to_wep(out)
        if result is None:
            raise NotFound("WorkloadEndpoint", wep.name, ns)
        return result

    def delete(self, kind: str, name: str, namespace: str | None = None, resource_version: str | None = None) -> Any:
        info = codec.kind_info(kind)
        kind, ns = info.kind, self._namespace(info, namespace)
        try:
            if kind in ("Node", "Profile"):
                raise OperationNotSupported(kind, name, ns, detail=f"delete is not supported: {NOT_CREATABLE[kind]}")
            if kind == "WorkloadEndpoint":
                _, last = self._get_wep(name, ns)
                # Calico's CNI DEL: blank the IPs (the containerID stays, so that a
                # repeated DEL can tell which instance of the pod it sees).
                gone = convert.with_meta(last, resource_version=resource_version)
                self._patch_wep(gone, {convert.POD_IP_ANNOTATION: "", convert.POD_IPS_ANNOTATION: ""})
                return last
            self._check_writable(kind, name, ns)
            return self._delete_cr(kind, name, ns, resource_version)
        except ApiError as exc:
            raise self._error(exc, kind, name, ns) from None

    def _delete_cr(self, kind: str, name: str, ns: str | None, wanted: str | None) -> Resource:
        source = KIND_SOURCES[kind][0]
        for _ in range(WRITE_RETRIES):
            backend, current = self._find_cr(kind, source, name, ns)
            if wanted and wanted != rv_of(current):
                raise Conflict(kind, name, ns)
            last = convert.from_cr(current, kind)
            pre = {"uid": current["metadata"].get("uid"), "resourceVersion": rv_of(current)}
            options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": pre}
            try:
                self.api.request("DELETE", source.path(ns, backend), body=options)
            except ApiError as exc:
                if exc.status == 409 and not wanted:
                    continue
                raise
            return last
        raise Conflict(kind, name, ns, detail=f"changed {WRITE_RETRIES} times while being deleted")

    def _check_writable(self, kind: str, name: str, ns: str | None) -> None:
        if kind == "NetworkPolicy" and names.is_k8s_policy(name):
            raise OperationNotSupported(
                kind, name, ns, detail="knp.default.* policies are Kubernetes NetworkPolicies: change those instead")

    @staticmethod
    def _namespace(info: codec.KindInfo, namespace: str | None) -> str | None:
        if not info.namespaced:
            return None
        if not namespace:
            raise ValueError(f"{info.kind} is namespaced: a namespace is required")
        return namespace

    # -- lists ------------------------------------------------------------------------

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None, limit: int = 0,
             continue_token: str | None = None) -> Page:
        info = codec.kind_info(kind)
        kind = info.kind
        ns = namespace if info.namespaced else None
        match = selectors.parse(selector).evaluate if selector else None
        token = _read_token(continue_token, kind, ns, selector) if continue_token else None
        srcs = KIND_SOURCES[kind]
        try:
            if len(srcs) == 1 and srcs[0].plain and match is None:
                return self._list_plain(srcs[0], ns, limit, token)
            return self._list_merged(kind, srcs, ns, selector, match, limit, token)
        except ApiError as exc:
            if exc.route_missing:  # Calico: a kind whose CRD is missing lists as empty
                log.warning("kdd: %s is not served by %s (is its CRD installed?)", kind, self.api.where)
                return Page(items=(), revision=Revision(), continue_token=None)
            if exc.status == 410 and token is not None:
                raise Expired(f"list of {kind}: the continue token has expired (its resourceVersion was "
                              f"compacted); list again: {exc.message}") from None
            raise self._error(exc, kind, "", ns) from None

    def _list_plain(self, source: Source, ns: str | None, limit: int, token: dict | None) -> Page:
        kind = source.kind
        if limit <= 0 and token is None:
            items, rv = self.fetch(source, ns)
            resources = [r for r in (self.convert(source, o) for o in items) if r is not None]
            return Page(items=tuple(resources), revision=Revision.of({source.id: rv}))
        query: dict[str, Any] = {"limit": limit if limit > 0 else CHUNK}
        if token is not None:
            query["continue"] = token["c"]
        items, next_token, rv = [], None, token["rv"] if token else ""
        while True:
            body = self.api.request("GET", source.path(ns), query)
            items.extend(body.get("items") or [])
            meta = body.get("metadata") or {}
            rv = rv or meta.get("resourceVersion") or ""
            next_token = meta.get("continue") or None
            if limit > 0 or not next_token:
                break
            query = {"limit": CHUNK, "continue": next_token}
        resources = [r for r in (self.convert(source, o) for o in items) if r is not None]
        ours = _write_token(kind, ns, None, {"c": next_token, "rv": rv}) if next_token else None
        return Page(items=tuple(resources), revision=Revision.of({source.id: rv}), continue_token=ours)

    def _list_merged(self, kind: str, srcs: tuple[Source, ...], ns: str | None, selector: str | None,
                     match: Any, limit: int, token: dict | None) -> Page:
        if token is not None:
            rvs, after = dict(token["rv"]), token["after"]
            key = (kind, ns, selector, tuple(sorted(rvs.items())))
            entries = self._cached_list(key)
            if entries is None:
                entries, _ = self._gather(kind, srcs, ns, match, rvs)
        else:
            entries, rvs = self._gather(kind, srcs, ns, match, None)
            after = None
            key = (kind, ns, selector, tuple(sorted(rvs.items())))
        keys = [k for k, _ in entries]
        start = bisect.bisect_right(keys, after) if after is not None else 0
        end = start + limit if limit > 0 else len(entries)
        chunk = entries[start:end]
        ours = None
        if end < len(entries):
            self._cache_list(key, entries)
            ours = _write_token(kind, ns, selector, {"rv": rvs, "after": chunk[-1][0]})
        return Page(items=tuple(r for _, r in chunk), revision=Revision.of(rvs), continue_token=ours)

    def _gather(self, kind: str, srcs: tuple[Source, ...], ns: str | None, match: Any,
                rvs: dict[str, str] | None) -> tuple[list[tuple[str, Resource]], dict[str, str]]:
        entries: list[tuple[str, Resource]] = []
        got: dict[str, str] = {}
        for source in srcs:
            items, rv = self.fetch(source, ns, rvs.get(source.id) if rvs else None)
            got[source.id] = rv
            for obj in items:
                res = self.convert(source, obj)
                if res is not None and (match is None or match(res.metadata.labels or {})):
                    entries.append((convert.resource_key(res), res))
        if kind == "Profile":
            static = convert.default_allow_profile()
            if match is None or match(static.metadata.labels or {}):
                entries.append((static.name, static))
        entries.sort(key=lambda e: e[0])
        return entries, got

    def _cached_list(self, key: tuple) -> list | None:
        with self._lock:
            entries = self._lists.get(key)
            if entries is not None:
                self._lists.move_to_end(key)
            return entries

    def _cache_list(self, key: tuple, entries: list) -> None:
        with self._lock:
            self._lists[key] = entries
            self._lists.move_to_end(key)
            while len(self._lists) > CACHED_LISTS:
                self._lists.popitem(last=False)

    # -- sync -------------------------------------------------------------------------

    def snapshot(self, kinds: Collection[str] | None = None) -> Snapshot:
        positions: dict[str, str] = {}
        resources: list[Resource] = []
        for kind in kinds_of(kinds):
            entries: list[tuple[str, Resource]] = []
            for source in KIND_SOURCES[kind]:
                try:
                    converted, rv = self.fetch(source, each=lambda obj, src=source: self.entry(src, obj))
                except ApiError as exc:
                    if exc.route_missing:
                        raise DatastoreError(f"{kind}: {source.path()} is not served by the API server "
                                             f"{self.api.where} (is its CRD installed?)") from None
                    raise self._error(exc, kind, "", None) from None
                state = dict(converted)
                positions[source.id] = rv
                self.remember(source.id, rv, state)
                entries.extend((convert.resource_key(res), res) for _, res in state.values())
            if kind == "Profile":
                static = convert.default_allow_profile()
                entries.append((static.name, static))
            entries.sort(key=lambda e: e[0])
            resources.extend(r for _, r in entries)
        return Snapshot(revision=Revision.of(positions), resources=tuple(resources))

    def watch(self, revision: Any, stop: threading.Event, kinds: Collection[str] | None = None) -> Iterator[Event]:
        from .watch import Watcher

        return Watcher(self, Revision.parse(revision), stop, kinds).events()

    # -- remembered states (for relist-and-diff) --------------------------------------

    def remember(self, source_id: str, rv: str, state: dict) -> None:
        """What a consumer holds of one source at ``rv`` (object key -> (rv, resource))."""
        if not rv:
            return
        with self._lock:
            self._states[(source_id, rv)] = dict(state)
            self._states.move_to_end((source_id, rv))
            while len(self._states) > REMEMBERED_STATES:
                self._states.popitem(last=False)

    def recall(self, source_id: str, rv: str) -> dict | None:
        with self._lock:
            state = self._states.get((source_id, rv))
            return dict(state) if state is not None else None


# --- continue tokens --------------------------------------------------------------------


def _write_token(kind: str, namespace: str | None, selector: str | None, data: dict) -> str:
    body = json.dumps({"kind": kind, "ns": namespace, "sel": selector, **data}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode()


def _read_token(token: str, kind: str, namespace: str | None, selector: str | None) -> dict:
    try:
        body = json.loads(base64.urlsafe_b64decode(token.encode()))
        same = (body["kind"], body["ns"], body["sel"]) == (kind, namespace, selector)
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(f"invalid continue token {token!r}") from None
    if not same:
        raise ValueError("continue token is for another list (kind, namespace or selector differ)")
    return body


__all__ = ["Expired", "Forbidden", "Invalid", "KubernetesDatastore"]
