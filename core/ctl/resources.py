"""The resource verbs on a Datastore, as Calico's calicoctl runs them
(``commands/common/resources.go`` ExecuteConfigCommand and ``resourcemgr/resourcemgr.go``).

:func:`execute` runs one verb over a list of :class:`Item` and returns
:class:`Results`; :func:`summarize` turns them into what the command prints and its
exit code. Nothing here reads files or argv, so every rule can be tested on an
in-memory datastore.

The rules, as Calico has them:

* namespaces (handleNamespace): a namespaced resource without one takes ``-n`` or
  ``default``; one that has a namespace must agree with ``-n``; ``-A`` lists every
  namespace; cluster-wide kinds refuse ``-n`` and ``-A``.
* create keeps only name, namespace, labels and annotations of the metadata and fails
  with "resource already exists" (``--skip-exists`` counts it as done).
* apply creates, and on "already exists" updates. An update reads the stored resource,
  keeps its metadata but merges in the new labels and annotations, and writes with the
  stored resourceVersion (so a concurrent write is a conflict; without a
  resourceVersion in the manifest it retries five times). A resourceVersion in the
  manifest must be the stored one.
* apply, create, delete and get go on after a failed resource and collect the
  errors; replace keeps the last error (and, as in Calico, counts the failed resource
  as handled).
* ClusterInformation is read-only.

One departure: when the datastore cannot be reached, the remaining resources are not
tried (each would only wait for the same timeout); the summary counts what was done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import attrs

from pycalico.core import datastore as ds_errors
from pycalico.core.ctl import kinds
from pycalico.core.ctl.printer import ResourceList

APPLY, CREATE, REPLACE, DELETE, GET = "apply", "create", "replace", "delete", "get"
KNP_PREFIX = "knp.default."  # etcd: Kubernetes NetworkPolicies, managed through Kubernetes
UPDATE_TRIES = 5


# --- errors, worded as libcalico-go's (lib/errors/errors.go) -----------------------------


class CtlError(Exception):
    """A per-resource failure; ``str()`` is the text calicoctl prints."""


def identifier(kind: str, name: str, namespace: str | None = None) -> str:
    """model.ResourceKey's String(): ``IPPool(pool1)``, ``NetworkPolicy(ns/np1)``."""
    spec = kinds.managed(kind)
    if spec is not None and spec.namespaced:
        return f"{kind}({namespace or ''}/{name})"
    return f"{kind}({name})"


class ResourceDoesNotExist(CtlError):
    def __init__(self, ident: str, err: str | None = None):
        super().__init__(f"resource does not exist: {ident} with error: {err or '<nil>'}")


class ResourceAlreadyExists(CtlError):
    def __init__(self, ident: str):
        super().__init__(f"resource already exists: {ident}")


class UpdateConflict(CtlError):
    def __init__(self, ident: str):
        super().__init__(f"update conflict: {ident}")


class Unavailable(CtlError):
    """The datastore cannot be reached: the remaining resources are not tried."""


class OperationNotSupported(CtlError):
    def __init__(self, operation: str, ident: str, reason: str = ""):
        text = f"operation {operation} is not supported on {ident}"
        super().__init__(f"{text}: {reason}" if reason else text)


def _detail(exc: ds_errors.ResourceError) -> str | None:
    """What the datastore said beyond the standard reason (e.g. a Kubernetes status)."""
    text = str(exc)
    what = f"{exc.kind} {exc.namespace}/{exc.name}" if exc.namespace else f"{exc.kind} {exc.name}"
    if text.startswith(what + ": "):
        text = text[len(what) + 2 :]
    return None if text == exc.reason else text


def translate(exc: Exception, kind: str, name: str, namespace: str | None, operation: str = "") -> CtlError:
    """A datastore error as calicoctl words it."""
    ident = identifier(kind, name, namespace)
    if isinstance(exc, ds_errors.DatastoreUnavailable):
        return Unavailable(str(exc))
    if isinstance(exc, ds_errors.NotFound):
        return ResourceDoesNotExist(ident, _detail(exc))
    if isinstance(exc, ds_errors.AlreadyExists):
        return ResourceAlreadyExists(ident)
    if isinstance(exc, ds_errors.Conflict):
        return UpdateConflict(ident)
    not_supported = getattr(ds_errors, "OperationNotSupported", None)
    if not_supported is not None and isinstance(exc, not_supported):
        reason = _detail(exc) if isinstance(exc, ds_errors.ResourceError) else str(exc)
        return OperationNotSupported(operation or "this", ident, reason or "")
    if isinstance(exc, CtlError):
        return exc
    return CtlError(str(exc))


# --- what to act on ------------------------------------------------------------------------


@dataclass
class Item:
    """One resource to act on: from a manifest (``resource`` set, ``namespace`` as
    written, "" if absent) or named on the command line (``resource`` None)."""

    kind: str
    name: str
    namespace: str = ""
    resource: Any = None


@dataclass
class Options:
    namespace: str = ""
    all_namespaces: bool = False
    skip_exists: bool = False
    skip_not_exists: bool = False
    export: bool = False
    name_specified: bool = False  # names were given on the command line (for --export)
    single_kind: bool = False  # resources named on the command line: always one kind


@dataclass
class Results:
    num_resources: int = 0
    num_handled: int = 0
    single_kind: str = ""
    resources: list = field(default_factory=list)
    res_errs: list[str] = field(default_factory=list)
    err: str | None = None  # replace: the last failure


def resolve_namespace(item: Item, namespaced: bool, cli_ns: str, all_ns: bool) -> str:
    """Calico's handleNamespace: the namespace to act in ("" = all / none)."""
    res_ns = item.namespace
    if namespaced:
        if all_ns and cli_ns:
            raise CtlError("cannot use both --namespace and --all-namespaces flags at the same time")
        if not res_ns and cli_ns:
            return cli_ns
        if all_ns:
            return ""
        if not res_ns and not cli_ns:
            return "default"
        if res_ns and not cli_ns:
            return res_ns
        if res_ns != cli_ns:
            raise CtlError(f"resource namespace does not match client namespace. {res_ns} != {cli_ns}")
        return res_ns
    if res_ns:
        raise CtlError(
            f"namespace should not be specified for a non-namespaced resource. {item.kind} is not a namespaced resource"
        )
    if all_ns or cli_ns:
        raise CtlError(f"{item.kind} is not namespaced")
    return ""


# --- the verbs on one resource -------------------------------------------------------------


def _evolve_meta(resource: Any, **changes: Any) -> Any:
    return attrs.evolve(resource, metadata=attrs.evolve(resource.metadata, **changes))


def _in_namespace(resource: Any, namespace: str) -> Any:
    if (resource.metadata.namespace or "") == namespace:
        return resource
    return _evolve_meta(resource, namespace=namespace or None)


def canonical_kind(resource: Any) -> str:
    """``IPAMConfiguration`` for a resource written as ``kind: IPAMConfig``."""
    return type(resource).KIND


def _check_knp(kind: str, name: str, namespace: str, operation: str) -> None:
    if kind == "NetworkPolicy" and name.startswith(KNP_PREFIX):
        raise OperationNotSupported(
            operation,
            identifier(kind, name, namespace),
            "kubernetes network policies must be managed through the kubernetes API",
        )


class Actions:
    """The resourcemgr helpers: one method per verb, on one datastore."""

    def __init__(self, datastore: Any, sleep: Callable[[float], None] = time.sleep):
        self.ds = datastore
        self.sleep = sleep

    @staticmethod
    def _call(where: tuple[str, str, str, str], fn: Callable, *args: Any, **kw: Any) -> Any:
        """``fn(*args, **kw)`` with datastore errors worded for ``where``
        (kind, name, namespace, operation)."""
        try:
            return fn(*args, **kw)
        except ds_errors.DatastoreError as exc:
            raise translate(exc, *where) from None
        except ValueError as exc:  # e.g. a resourceVersion the datastore cannot read
            raise CtlError(str(exc)) from None

    def create(self, resource: Any, namespace: str) -> Any:
        from pycalico.core.resources.meta import ObjectMeta

        kind, name = canonical_kind(resource), resource.name
        if kind == "ClusterInformation":
            raise OperationNotSupported("create or apply", "ClusterInformation")
        _check_knp(kind, name, namespace, "create or apply")
        meta = resource.metadata
        if meta.resource_version:
            raise CtlError(
                f"error with field Metadata.ResourceVersion = '{meta.resource_version}' "
                "(field must not be set for a Create request)"
            )
        clean = ObjectMeta(name=name, namespace=namespace or None, labels=meta.labels, annotations=meta.annotations)
        return self._call((kind, name, namespace, "create"), self.ds.create, attrs.evolve(resource, metadata=clean))

    def update(self, resource: Any, namespace: str) -> Any:
        kind, name = canonical_kind(resource), resource.name
        if kind == "ClusterInformation":
            raise OperationNotSupported("apply or replace", "ClusterInformation")
        _check_knp(kind, name, namespace, "apply or replace")
        wanted_rv = resource.metadata.resource_version
        ns = namespace or None
        if wanted_rv:
            stored = self._call((kind, name, namespace, "get"), self.ds.get, kind, name, ns)
            if stored.metadata.resource_version != wanted_rv:
                raise UpdateConflict(identifier(kind, name, namespace))
            merged = merge_metadata(stored, resource)
            return self._call((kind, name, namespace, "update"), self.ds.update, merged)
        last: CtlError | None = None
        for attempt in range(UPDATE_TRIES):
            stored = self._call((kind, name, namespace, "get"), self.ds.get, kind, name, ns)
            try:
                return self._call((kind, name, namespace, "update"), self.ds.update, merge_metadata(stored, resource))
            except UpdateConflict as exc:
                last = exc
                if attempt + 1 < UPDATE_TRIES:
                    self.sleep(1.0)
        raise CtlError(f"failed to update the resource: {last}")

    def apply(self, resource: Any, namespace: str) -> Any:
        if canonical_kind(resource) == "ClusterInformation":
            raise OperationNotSupported("apply", "ClusterInformation", "resource is readonly")
        original_rv = resource.metadata.resource_version
        try:
            return self.create(_evolve_meta(resource, resource_version=None), namespace)
        except (ResourceAlreadyExists, OperationNotSupported):
            return self.update(_evolve_meta(resource, resource_version=original_rv), namespace)

    def delete(self, kind: str, name: str, namespace: str, resource_version: str | None = None) -> Any:
        if kind == "ClusterInformation":
            raise OperationNotSupported("delete", "ClusterInformation")
        _check_knp(kind, name, namespace, "delete")
        if not name:
            raise CtlError("insufficient identifiers, missing 'name'")
        where = (kind, name, namespace, "delete")
        rv = resource_version or None
        return self._call(where, self.ds.delete, kind, name, namespace or None, resource_version=rv)

    def get_or_list(self, kind: str, name: str, namespace: str, namespaced: bool) -> Any:
        if name:
            if namespaced and not namespace:
                raise CtlError("cannot use --all-namespace flag for getting a single resource")
            return self._call((kind, name, namespace, "get"), self.ds.get, kind, name, namespace or None)
        where = (kind, "", namespace, "list")
        page = self._call(where, self.ds.list, kind, namespace=namespace or None)
        items = list(page.items)
        while page.continue_token:
            token = page.continue_token
            page = self._call(where, self.ds.list, kind, namespace=namespace or None, continue_token=token)
            items += page.items
        if kind == "Tier":  # Calico lists tiers by order, unset last
            items.sort(key=lambda t: (t.spec.order is None, t.spec.order or 0))
        return ResourceList(kind, tuple(items), page.revision)


def merge_metadata(stored: Any, new: Any) -> Any:
    """``new`` with the stored metadata, except that labels and annotations are the
    stored ones with the new ones laid over them (Calico's mergeMetadataForUpdate)."""

    def merged(old: dict | None, extra: dict | None) -> dict | None:
        if not extra:
            return old
        return {**(old or {}), **extra}

    meta = attrs.evolve(
        stored.metadata,
        labels=merged(stored.metadata.labels, new.metadata.labels),
        annotations=merged(stored.metadata.annotations, new.metadata.annotations),
    )
    return attrs.evolve(new, metadata=meta)


def strip_for_export(resource: Any) -> Any:
    """What ``get --export`` leaves out: the cluster-specific metadata."""
    return _evolve_meta(
        resource,
        namespace=None,
        uid=None,
        resource_version=None,
        creation_timestamp=None,
        deletion_timestamp=None,
        deletion_grace_period_seconds=None,
    )


# --- one verb over many resources ------------------------------------------------------------


def execute(
    datastore: Any,
    items: Sequence[Item],
    action: str,
    options: Options | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Results:
    """Run ``action`` on every item in order (ExecuteConfigCommand)."""
    opts = options or Options()
    actions = Actions(datastore, sleep)
    results = Results(num_resources=len(items))
    kinds_seen = {item.kind for item in items}
    if items and (len(kinds_seen) == 1 or opts.single_kind):
        results.single_kind = items[-1].kind
    for item in items:
        try:
            out = _one(actions, item, action, opts)
        except Unavailable as exc:
            if action == REPLACE:
                results.err = str(exc)
            else:
                results.res_errs.append(str(exc))
            break
        except CtlError as exc:
            skipped = (isinstance(exc, ResourceAlreadyExists) and opts.skip_exists) or (
                isinstance(exc, ResourceDoesNotExist) and opts.skip_not_exists
            )
            if skipped:
                out = item.resource if item.resource is not None else item
            elif action == REPLACE:
                results.err = str(exc)
                out = None  # counted, as Calico counts it
            else:
                results.res_errs.append(str(exc))
                continue
        if out is not None and opts.export and opts.name_specified and not isinstance(out, (ResourceList, Item)):
            out = strip_for_export(out)
        results.resources.append(out)
        results.num_handled += 1
    return results


def _one(actions: Actions, item: Item, action: str, opts: Options) -> Any:
    spec = kinds.managed(item.kind)
    namespaced = bool(spec and spec.namespaced)
    ns = resolve_namespace(item, namespaced, opts.namespace, opts.all_namespaces)
    if action == GET:
        return actions.get_or_list(item.kind, item.name, ns, namespaced)
    if action == DELETE:
        rv = item.resource.metadata.resource_version if item.resource is not None else None
        return actions.delete(item.kind, item.name, ns, rv)
    resource = _in_namespace(item.resource, ns)
    if action == APPLY:
        return actions.apply(resource, ns)
    if action == CREATE:
        return actions.create(resource, ns)
    if action == REPLACE:
        return actions.update(resource, ns)
    raise ValueError(f"unknown action {action!r}")


# --- what the command prints ------------------------------------------------------------------


@dataclass
class Outcome:
    stdout: str = ""
    stderr: str = ""
    code: int = 0


def go_list(errors: Sequence[str]) -> str:
    """A Go ``[]error`` printed with %v."""
    return "[" + " ".join(errors) + "]"


_PAST = {APPLY: "applied", CREATE: "created", REPLACE: "replaced", DELETE: "deleted"}


def summarize(action: str, r: Results) -> Outcome:
    """The success/partial/failure lines of apply, create, replace and delete
    (apply.go, create.go, replace.go, delete.go)."""
    if action == DELETE:
        return _summarize_delete(r)
    past = _PAST[action]
    kind = f"'{r.single_kind}' " if r.single_kind else ""
    if r.num_resources == 0:
        return Outcome("No resources specified\n")
    if action == REPLACE:
        if r.num_handled == 0:
            return Outcome(stderr=_failed("replace", r, r.err or "") + "\n", code=1)
        if r.err is None:
            return Outcome(f"Successfully replaced {r.num_handled} {kind}resource(s)\n")
        partial = f"Partial success: replaced the first {r.num_handled} out of {r.num_resources} {kind}resources:\n"
        return Outcome(partial, f"Hit error: {r.err}\n", 1)
    if r.num_handled == 0:
        return Outcome(stderr=_failed(action, r, go_list(r.res_errs)) + "\n", code=1)
    if not r.res_errs:
        return Outcome(f"Successfully {past} {r.num_handled} {kind}resource(s)\n")
    out = ""
    if r.num_handled - len(r.res_errs) > 0:
        out = f"Partial success: {past} the first {r.num_handled} out of {r.num_resources} {kind}resources:\n"
    hit = "Hit error(s)" if action == APPLY else "Hit error"
    return Outcome(out, f"{hit}: {go_list(r.res_errs)}\n", 1)


def _failed(verb: str, r: Results, errors: str) -> str:
    if r.num_resources == 1:
        return f"Failed to {verb} '{r.single_kind}' resource: {errors}"
    if r.single_kind:
        return f"Failed to {verb} any '{r.single_kind}' resources: {errors}"
    return f"Failed to {verb} any resources: {errors}"


def _summarize_delete(r: Results) -> Outcome:
    if r.num_resources == 0:
        return Outcome("No resources specified\n")
    out = Outcome()
    if r.num_handled > 0:
        kind = f"'{r.single_kind}' " if r.single_kind else ""
        out.stdout = f"Successfully deleted {r.num_handled} {kind}resource(s)\n"
    if r.res_errs:
        what = f"'{r.single_kind}' resource" if r.single_kind else "resource"
        out.stderr = "".join(f"Failed to delete {what}: {e}\n" for e in r.res_errs) + "\n"
        out.code = 1
    return out
