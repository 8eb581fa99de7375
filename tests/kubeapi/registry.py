"""The verbs (get, list, create, update, patch, delete, deletecollection, watch)
with the conventions of k8s.io/apiserver's generic registry: optimistic
concurrency on resourceVersion, no-op updates that write nothing, finalizers that
hold a delete, preconditions, list consistency (resourceVersion/Match, limit and
continue tokens) and the exact Status each failure is reported with.

Objects are stored without apiVersion/kind; ``present`` stamps them for the
version a request used, so a multi-version CRD serves one object under each."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from . import crd, patch
from . import errors as e
from . import validation as v
from .params import (
    CONTINUE_TOO_OLD,
    LIST_TOO_OLD,
    decode_continue,
    dry_run,
    encode_continue,
    list_option_errors,
    parse_bool,
    parse_int,
    parse_rv,
    watch_option_errors,
)
from .resources import ResourceType, TypeTable
from .selectors import field_set, parse_fields, parse_labels
from .store import Store, clone, storage_key
from .watch import WatchSession

OBJECT_META = {
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
}
# Set by the server alone: rest.BeforeUpdate copies them from the stored object.
SYSTEM_FIELDS = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "resourceVersion")
# NamespaceLifecycle admission refuses to delete these.
IMMORTAL_NAMESPACES = ("default", "kube-system", "kube-public")
# names.SimpleNameGenerator: 5 characters from an alphabet without vowels or look-alikes.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class Target:
    """What a request path addresses."""

    rt: ResourceType
    version: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _strip_nulls(value):
    """A Go struct round trip drops JSON nulls (omitempty pointers and maps)."""
    if isinstance(value, dict):
        return {k: _strip_nulls(x) for k, x in value.items() if x is not None}
    if isinstance(value, list):
        return [_strip_nulls(x) for x in value]
    return value


class Registry:
    def __init__(self, store: Store, types: TypeTable, rv_wait: float, bookmark_interval: float):
        self.store, self.types = store, types
        self.rv_wait, self.bookmark_interval = rv_wait, bookmark_interval

    # -- presentation --------------------------------------------------------

    def present(self, rt: ResourceType, version: str, obj: dict, in_list: bool = False) -> dict:
        # A new top level around ``obj``'s own values. Single-object verbs and
        # deletecollection present copies; list and watch events present the stored
        # objects themselves (Store.items, Store.changes_since), so their answers
        # share nested parts with the store and are read-only. The server only
        # encodes them (the real apiserver too serves its watch cache's objects
        # without copying); an in-process caller that wants to change one clones it.
        body = {k: x for k, x in obj.items() if k not in ("apiVersion", "kind")}
        if in_list and rt.typed:
            return body  # typed list items carry no TypeMeta on a real server
        return {"kind": rt.kind, "apiVersion": rt.api_version(version), **body}

    def _list(self, t: Target, revision: int, items: list[dict], extra_meta: dict | None = None) -> dict:
        meta = {"resourceVersion": str(revision), **(extra_meta or {})}
        return {
            "kind": t.rt.list_kind,
            "apiVersion": t.rt.api_version(t.version),
            "metadata": meta,
            "items": [self.present(t.rt, t.version, o, in_list=True) for o in items],
        }

    # -- input ---------------------------------------------------------------

    def _decode(self, t: Target, body: bytes) -> dict:
        rt = t.rt
        try:
            obj = json.loads(body or b"null")
        except ValueError as exc:
            raise e.bad_request(
                f"the object provided is unrecognized (must be of type {rt.kind}): couldn't get version/kind; "
                f"json parse error: {exc}"
            ) from None
        if not isinstance(obj, dict):
            raise e.bad_request(f"the object provided is unrecognized (must be of type {rt.kind})")
        kind, api_version = obj.pop("kind", None), obj.pop("apiVersion", None)
        if not rt.typed and (not kind or not api_version):
            missing = "Kind" if not kind else "apiVersion"
            raise e.bad_request(f"Object '{missing}' is missing in '{json.dumps(obj, separators=(',', ':'))}'")
        expected = rt.api_version(t.version)
        if kind and kind != rt.kind:
            raise e.bad_request(f'{kind} in version "{t.version}" cannot be handled as a {rt.kind}: no kind "{kind}" '
                                f'is registered for version "{api_version or expected}"')
        if api_version and api_version != expected:
            raise e.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version ({expected})"
            )
        return self._clean(rt, obj)

    def _clean(self, rt: ResourceType, obj: dict) -> dict:
        obj = {k: x for k, x in obj.items() if k not in ("apiVersion", "kind")}
        if rt.typed:
            obj = _strip_nulls(obj)
            for key in rt.skeleton:
                if not isinstance(obj.get(key), dict):
                    obj[key] = {}
        meta = obj.get("metadata")
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise e.bad_request("metadata: must be an object")
        # ObjectMeta is a Go struct even in a custom object: unknown keys and nulls
        # vanish. managedFields are not tracked here.
        obj["metadata"] = {k: x for k, x in _strip_nulls(meta).items() if k in OBJECT_META}
        return obj

    # -- get -----------------------------------------------------------------

    def _existing(self, t: Target) -> dict:
        obj = self.store.get(t.rt.id, storage_key(t.namespace, t.name))
        if obj is None:
            raise e.not_found(t.rt.plural, t.rt.group, t.name)
        return obj

    def _wait_not_older(self, revision: int) -> None:
        if revision and not self.store.wait_for(revision, self.rv_wait):
            raise e.too_large_resource_version(revision, self.store.revision)

    def get(self, t: Target, q: dict):
        rv = q.get("resourceVersion", "")
        if rv not in ("", "0"):
            self._wait_not_older(parse_rv(rv))  # GET with an RV means "not older than"
        return 200, self.present(t.rt, t.version, self._existing(t))

    # -- list ----------------------------------------------------------------

    def list(self, t: Target, q: dict):
        rt = t.rt
        labels = parse_labels(q.get("labelSelector"))
        fields = parse_fields(q.get("fieldSelector"), rt.fields)
        limit = max(parse_int(q, "limit") or 0, 0)
        token, rv, match = q.get("continue", ""), q.get("resourceVersion", ""), q.get("resourceVersionMatch", "")
        errs = list_option_errors(rv, match, token)
        if errs:
            raise e.invalid("ListOptions", "meta.k8s.io", "", errs)
        start, exact = "", None
        if token:
            if rv not in ("", "0"):
                raise e.bad_request("specifying resource version is not allowed when using continue")
            start, token_rv = decode_continue(token)
            exact = token_rv if token_rv > 0 else None  # -1: carry on at the latest revision
        elif rv not in ("", "0"):
            wanted = parse_rv(rv)
            # The documented legacy rule: a non-zero RV with a limit is an exact read.
            if match == "Exact" or (not match and limit):
                exact = wanted
            else:
                self._wait_not_older(wanted)
        if exact is not None and not self.store.wait_for(exact, self.rv_wait):
            raise e.too_large_resource_version(exact, self.store.revision)
        prefix = storage_key(t.namespace, "") if t.namespace else ""
        with self.store.lock:
            if exact is not None and exact < self.store.compacted:
                if token:
                    raise e.expired(CONTINUE_TOO_OLD, encode_continue(start, -1))
                raise e.expired(LIST_TOO_OLD)
            revision = exact if exact is not None else self.store.revision
            # The stored objects themselves (Store.items), not copies: they are only
            # read, here and by the server, which encodes the answer (see present).
            entries = [(k[len(prefix):], o) for k, o in self.store.items(rt.id, prefix, exact) if k[len(prefix):] >= start]
        out, extra = [], {}
        for i, (key, obj) in enumerate(entries):
            if labels.matches(obj["metadata"].get("labels")) and fields.matches(field_set(obj, rt.fields)):
                out.append(obj)
            if limit and len(out) == limit:
                remaining = len(entries) - i - 1
                if remaining:
                    extra["continue"] = encode_continue(key + "\x00", revision)
                    if labels.empty and fields.empty:
                        extra["remainingItemCount"] = remaining
                break
        return 200, self._list(t, revision, out, extra)

    # -- create --------------------------------------------------------------

    def _check_namespace(self, t: Target, name: str) -> None:
        # NamespaceLifecycle admission.
        ns = self.store.get("namespaces", t.namespace)
        if ns is None:
            raise e.not_found("namespaces", "", t.namespace)
        if ns["metadata"].get("deletionTimestamp"):
            why = f"unable to create new content in namespace {t.namespace} because it is being terminated"
            raise e.forbidden(t.rt.plural, t.rt.group, name, why)

    def create(self, t: Target, body: bytes, q: dict):
        rt = t.rt
        dry = dry_run(q)
        obj = self._decode(t, body)
        meta = obj["metadata"]
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != t.namespace:
                raise e.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = t.namespace
        else:
            meta.pop("namespace", None)
        with self.store.lock:
            if rt.namespaced:
                self._check_namespace(t, meta.get("name") or meta.get("generateName") or "")
            generate = not meta.get("name") and meta.get("generateName")
            # createWithGenerateNameRetry: a fresh suffix on each name collision.
            for _ in range(8 if generate else 1):
                if generate:
                    meta["name"] = meta["generateName"][:58] + "".join(random.choices(_NAME_ALPHABET, k=5))
                if self.store.get(rt.id, storage_key(meta.get("namespace"), meta.get("name", ""))) is None:
                    break
            return 201, self._create(t, obj, dry)

    def _create(self, t: Target, obj: dict, dry: bool) -> dict:
        rt, meta = t.rt, obj["metadata"]
        # rest.FillObjectMetaSystemFields + BeforeCreate
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(key, None)
        rt.strategy.prepare_create(obj, t.version)
        name = meta.get("name", "")
        errs = v.object_meta(meta, rt.name_rule) + rt.strategy.validate(obj, t.version)
        if errs:
            raise e.invalid(rt.kind, rt.group, name, errs)
        if meta.get("resourceVersion"):
            # etcd3 store.Create refuses it; the plain error becomes a 500.
            raise e.unknown("resourceVersion should not be set on objects to be created")
        existing = self.store.get(rt.id, storage_key(meta.get("namespace"), name))
        if existing is not None:
            raise e.already_exists(rt.plural, rt.group, name, bool(existing["metadata"].get("deletionTimestamp")))
        if dry:
            return self.present(rt, t.version, obj)
        stored = self.store.put(rt.id, meta.get("namespace") or "", name, obj)
        if rt.id == crd.CRD_TYPE_ID:
            self._crd_changed(stored)
        return self.present(rt, t.version, stored)

    # -- update / patch ------------------------------------------------------

    def update(self, t: Target, body: bytes, q: dict):
        dry = dry_run(q)
        obj = self._decode(t, body)
        self._check_identity(t, obj["metadata"])
        with self.store.lock:
            return 200, self._update(t, self._existing(t), obj, dry)

    @staticmethod
    def _check_identity(t: Target, meta: dict) -> None:
        # handlers/rest.go checkName
        name = meta.get("name", "")
        if name != t.name:
            raise e.bad_request(f"the name of the object ({name}) does not match the name on the URL ({t.name})")
        if t.rt.namespaced:
            ns = meta.get("namespace")
            if ns and ns != t.namespace:
                raise e.bad_request(
                    f"the namespace of the object ({ns}) does not match the namespace on the request ({t.namespace})"
                )
            meta["namespace"] = t.namespace
        else:
            meta.pop("namespace", None)

    def patch(self, t: Target, content_type: str, body: bytes, q: dict):
        rt = t.rt
        dry = dry_run(q)
        media = (content_type or "").split(";")[0].strip().lower()
        try:
            doc = json.loads(body or b"null")
        except ValueError as exc:
            if media in (patch.MERGE, patch.JSON_PATCH, patch.STRATEGIC):
                raise e.bad_request(f"error decoding patch: {exc}") from None
            doc = None
        with self.store.lock:
            old = self._existing(t)
            patched = patch.apply(media, self.present(rt, t.version, old), doc, strategic_ok=rt.typed)
            if not isinstance(patched, dict) or not isinstance(patched.get("metadata", {}), dict):
                raise e.bad_request("the patch produced something that is not an object")
            for key, want in (("kind", rt.kind), ("apiVersion", rt.api_version(t.version))):
                if patched.get(key, want) != want:
                    raise e.bad_request(f"the patch changed {key} from {want} to {patched[key]}")
            obj = self._clean(rt, patched)
            self._check_identity(t, obj["metadata"])
            # A patch applies to the current object: it only conflicts if it names
            # a resourceVersion itself.
            obj["metadata"].setdefault("resourceVersion", old["metadata"]["resourceVersion"])
            return 200, self._update(t, old, obj, dry)

    def _update(self, t: Target, old: dict, new: dict, dry: bool) -> dict:
        rt, name = t.rt, t.name
        meta, ometa = new["metadata"], old["metadata"]
        sent_rv = meta.get("resourceVersion") or ""
        if not sent_rv:
            if not rt.unconditional_update:
                missing = v.invalid("metadata.resourceVersion", v.Raw("0x0"), "must be specified for an update")
                raise e.invalid(rt.plural, rt.group, name, [missing])
        elif sent_rv != ometa["resourceVersion"]:
            parse_rv(sent_rv)
            raise e.conflict(rt.plural, rt.group, name)
        if meta.get("uid") and meta["uid"] != ometa["uid"]:
            raise e.invalid(rt.kind, rt.group, name, [v.invalid("metadata.uid", meta["uid"], "field is immutable")])
        # System fields are the server's (rest.BeforeUpdate).
        for key in SYSTEM_FIELDS:
            if key in ometa:
                meta[key] = ometa[key]
            else:
                meta.pop(key, None)
        if t.subresource == "status":
            new = rt.strategy.status_update(new, old)
            meta = new["metadata"]
        elif rt.status_subresource:
            # The main resource cannot write status once /status exists.
            new.pop("status", None)
            if "status" in old:
                new["status"] = clone(old["status"])
        rt.strategy.prepare_update(new, old, t.version)
        errs = v.object_meta(meta, rt.name_rule) + rt.strategy.validate_update(new, old, t.version)
        if ometa.get("deletionTimestamp"):
            added = sorted(set(meta.get("finalizers") or []) - set(ometa.get("finalizers") or []))
            if added:
                why = f"no new finalizers can be added if the object is being deleted, found new finalizers {json.dumps(added)}"
                errs.append(v.forbidden("metadata.finalizers", why))
        if errs:
            raise e.invalid(rt.kind, rt.group, name, errs)
        if t.subresource != "status" and rt.strategy.spec_changed(new, old) and "generation" in ometa:
            meta["generation"] = ometa["generation"] + 1
        if ometa.get("deletionTimestamp") and not meta.get("finalizers"):
            # ShouldDeleteDuringUpdate: the last finalizer went; the PUT answers
            # with the object it was sent.
            if not dry:
                self._remove(rt, old)
            return self.present(rt, t.version, new)
        if new == old:
            return self.present(rt, t.version, old)  # etcd3 GuaranteedUpdate skips identical writes
        if dry:
            return self.present(rt, t.version, new)
        stored = self.store.put(rt.id, meta.get("namespace") or "", name, new)
        if rt.id == crd.CRD_TYPE_ID:
            self._crd_changed(stored)
        return self.present(rt, t.version, stored)

    # -- delete --------------------------------------------------------------

    def _delete_options(self, body: bytes, q: dict) -> dict:
        try:
            opts = json.loads(body) if body and body.strip() else {}
        except ValueError as exc:
            raise e.bad_request(f"error decoding DeleteOptions: {exc}") from None
        if not isinstance(opts, dict):
            raise e.bad_request("DeleteOptions must be an object")
        if q.get("dryRun") is None and opts.get("dryRun"):
            q = {**q, "dryRun": ",".join(opts["dryRun"])}
        opts["_dry"] = dry_run(q)
        return opts

    def delete(self, t: Target, body: bytes, q: dict):
        rt = t.rt
        opts = self._delete_options(body, q)
        with self.store.lock:
            old = self._existing(t)
            if rt.id == "namespaces" and t.name in IMMORTAL_NAMESPACES:
                raise e.forbidden(rt.plural, rt.group, t.name, "this namespace may not be deleted")
            self._check_preconditions(rt, old, opts.get("preconditions") or {})
            result, gone = self._delete(rt, old, opts["_dry"])
            if not gone or rt.return_deleted:
                return 200, self.present(rt, t.version, result)
            return 200, e.success(t.name, rt.group, rt.plural, old["metadata"]["uid"])

    @staticmethod
    def _check_preconditions(rt: ResourceType, obj: dict, pre: dict) -> None:
        # rest.BeforeDelete, which names the Kind (not the resource) in the Conflict.
        meta = obj["metadata"]
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            why = (f"the UID in the precondition ({pre['uid']}) does not match the UID in record ({meta['uid']}). "
                   "The object might have been deleted and then recreated")
            raise e.conflict(rt.kind, rt.group, meta["name"], why)
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            why = (f"the ResourceVersion in the precondition ({pre['resourceVersion']}) does not match the "
                   f"ResourceVersion in record ({meta['resourceVersion']}). The object might have been modified")
            raise e.conflict(rt.kind, rt.group, meta["name"], why)

    def _delete(self, rt: ResourceType, obj: dict, dry: bool) -> tuple[dict, bool]:
        """Delete or, with finalizers, mark for deletion; (object, whether gone).
        ``obj`` must be the caller's own copy: marking changes it, and it may be
        what is returned."""
        meta = obj["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp") or dry:
                return obj, False
            meta.update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
            if "generation" in meta:
                meta["generation"] += 1
            return self.store.put(rt.id, meta.get("namespace") or "", meta["name"], obj), False
        if dry:
            return obj, True
        return self._remove(rt, obj), True

    def _remove(self, rt: ResourceType, obj: dict) -> dict:
        meta = obj["metadata"]
        if rt.id == "namespaces":
            # Stands in for the namespace controller: the content goes first.
            for other in self.types.all():
                if other.namespaced:
                    for _, item in self.store.items(other.id, storage_key(meta["name"], "")):
                        self._remove(other, item)
        if rt.id == crd.CRD_TYPE_ID:
            # Stands in for the CRD finalizer: instances go, then the endpoints.
            served = self.types.get(meta["name"])
            if served is not None:
                for _, item in self.store.items(served.id):
                    self.store.delete(served.id, item["metadata"].get("namespace") or "", item["metadata"]["name"])
                self.types.remove(served.id)
                self.store.close(served.id)
        return self.store.delete(rt.id, meta.get("namespace") or "", meta["name"])

    def delete_collection(self, t: Target, body: bytes, q: dict):
        rt = t.rt
        opts = self._delete_options(body, q)
        labels = parse_labels(q.get("labelSelector"))
        fields = parse_fields(q.get("fieldSelector"), rt.fields)
        prefix = storage_key(t.namespace, "") if t.namespace else ""
        with self.store.lock:
            done = []
            for _, obj in self.store.items(rt.id, prefix):
                if labels.matches(obj["metadata"].get("labels")) and fields.matches(field_set(obj, rt.fields)):
                    # items() gives the stored object, which _delete may mark or return.
                    done.append(self._delete(rt, clone(obj), opts["_dry"])[0])
            return 200, self._list(t, self.store.revision, done)

    # -- CRDs ----------------------------------------------------------------

    def _crd_changed(self, stored: dict) -> None:
        """Serve the CRD's resource and, like its controllers, mark it Established."""
        self.types.add(crd.resource_type(stored))
        conditions = {c.get("type"): c.get("status") for c in stored.get("status", {}).get("conditions") or []}
        if conditions.get("Established") != "True":
            established = dict(stored, status=crd.established_status(stored, now()))
            self.store.put(crd.CRD_TYPE_ID, "", stored["metadata"]["name"], established)

    # -- watch ---------------------------------------------------------------

    def watch(self, t: Target, q: dict) -> WatchSession:
        rt = t.rt
        labels = parse_labels(q.get("labelSelector"))
        fields = parse_fields(q.get("fieldSelector"), rt.fields)
        if t.name:  # the legacy /watch/.../<name> form
            fields.terms.append(("metadata.name", "=", t.name))
        rv, match = q.get("resourceVersion", ""), q.get("resourceVersionMatch", "")
        send_initial = parse_bool(q, "sendInitialEvents")
        errs = watch_option_errors(match, send_initial)
        if errs:
            raise e.invalid("ListOptions", "meta.k8s.io", "", errs)
        start = None if rv in ("", "0") else parse_rv(rv)
        session = WatchSession(
            self.store, rt, t.version, t.namespace, labels, fields,
            lambda obj: self.present(rt, t.version, obj),
            bool(parse_bool(q, "allowWatchBookmarks")), self.bookmark_interval,
        )
        session.start(start, send_initial, self.rv_wait)
        return session
