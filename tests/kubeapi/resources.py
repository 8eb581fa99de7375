"""Served resource types and their per-kind rules (the "strategies" of the real
registry): scope, status subresource, what a DELETE returns, whether a PUT may
omit resourceVersion, selectable fields, defaults and validation.

Only the behaviour pycalico's datastore can observe is modelled; built-in kinds
keep unknown fields (a real server drops them when decoding into Go structs) and
validate only what is listed in each strategy."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from . import validation as v
from .errors import group_resource
from .store import clone

Getter = Callable[[dict], str]


def _path(*keys: str, boolean: bool = False) -> Getter:
    def get(obj: dict) -> str:
        node = obj
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if boolean:
            return "true" if node else "false"
        return "" if node is None else str(node)

    return get


NAME_FIELD = {"metadata.name": _path("metadata", "name")}
NAMESPACED_FIELDS = {**NAME_FIELD, "metadata.namespace": _path("metadata", "namespace")}


def without(obj: dict, *keys: str) -> dict:
    return {k: val for k, val in obj.items() if k not in keys}


class Strategy:
    """Hooks run by the registry around create and update (rest.RESTCreateStrategy
    and RESTUpdateStrategy); ``version`` is the API version of the request."""

    def prepare_create(self, obj: dict, version: str) -> None:
        pass

    def prepare_update(self, new: dict, old: dict, version: str) -> None:
        pass

    def validate(self, obj: dict, version: str) -> list[v.FieldError]:
        return []

    def validate_update(self, new: dict, old: dict, version: str) -> list[v.FieldError]:
        return self.validate(new, version)

    def spec_changed(self, new: dict, old: dict) -> bool:
        """Whether metadata.generation moves: any change outside metadata/status."""
        return without(new, "metadata", "status", "apiVersion", "kind") != without(
            old, "metadata", "status", "apiVersion", "kind"
        )

    def status_update(self, new: dict, old: dict) -> dict:
        """PUT .../status on a built-in kind: the old spec stays; status and metadata
        (labels, annotations) come from the request, as pod/node status strategies do."""
        out = clone(new)
        for key in set(old) | set(new):
            if key not in ("metadata", "status", "apiVersion", "kind"):
                if key in old:
                    out[key] = clone(old[key])
                else:
                    out.pop(key, None)
        return out


@dataclass(eq=False)
class ResourceType:
    group: str
    versions: list[str]  # served, preferred first
    plural: str
    singular: str
    kind: str
    namespaced: bool
    strategy: Strategy = field(default_factory=Strategy)
    short_names: tuple[str, ...] = ()
    status_subresource: bool = False
    return_deleted: bool = False  # Store.ReturnDeletedObject: DELETE answers with the object, not a Status
    unconditional_update: bool = True  # AllowUnconditionalUpdate: a PUT may omit resourceVersion
    typed: bool = True  # a built-in Go type: list items lose apiVersion/kind, nulls vanish, SMP accepted
    name_rule: str = "subdomain"
    fields: dict[str, Getter] = field(default_factory=dict)
    # Non-pointer struct fields of the Go type: always serialized, if only as {}.
    skeleton: tuple[str, ...] = ()
    crd: str | None = None  # name of the CRD that defines this type
    list_kind_name: str = ""  # a CRD's spec.names.listKind; built-in lists are <Kind>List

    def __post_init__(self):
        if not self.fields:
            self.fields = dict(NAMESPACED_FIELDS if self.namespaced else NAME_FIELD)

    @property
    def id(self) -> str:
        return group_resource(self.plural, self.group)

    @property
    def list_kind(self) -> str:
        return self.list_kind_name or self.kind + "List"

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version


# ---------------------------------------------------------------------------
# Built-in kinds
# ---------------------------------------------------------------------------


class NamespaceStrategy(Strategy):
    # The apiserver labels every namespace with its own name (1.21+), keeps
    # spec.finalizers for the namespace controller and reports phase Active.
    NAME_LABEL = "kubernetes.io/metadata.name"

    def prepare_create(self, obj, version):
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
        self._label(obj)

    def prepare_update(self, new, old, version):
        new["spec"] = clone(old.get("spec", {}))
        self._label(new)

    def _label(self, obj):
        meta = obj["metadata"]
        meta["labels"] = {**(meta.get("labels") or {}), self.NAME_LABEL: meta["name"]}


class PodStrategy(Strategy):
    """Defaults the API server (and its default admission plugins) fill in, the
    required container fields, and pod spec immutability."""

    MUTABLE = (
        "spec.containers[*].image,spec.initContainers[*].image,spec.activeDeadlineSeconds,"
        "spec.tolerations (only additions to existing tolerations),"
        "spec.terminationGracePeriodSeconds (allow it to be set to 1 if it was previously negative)"
    )

    def prepare_create(self, obj, version):
        self._defaults(obj)
        resources = [c.get("resources") for c in obj["spec"].get("containers") or [] if isinstance(c, dict)]
        qos = "Burstable" if any(r for r in resources) else "BestEffort"
        obj["status"] = {"phase": "Pending", "qosClass": qos}

    def prepare_update(self, new, old, version):
        self._defaults(new)  # the server defaults every decoded body, not only creates

    def _defaults(self, obj):
        spec = obj.setdefault("spec", {})
        for key, value in (
            ("restartPolicy", "Always"),
            ("dnsPolicy", "ClusterFirst"),
            ("schedulerName", "default-scheduler"),
            ("terminationGracePeriodSeconds", 30),
            ("securityContext", {}),
            ("enableServiceLinks", True),
            ("serviceAccountName", spec.get("serviceAccount") or "default"),
        ):
            spec.setdefault(key, value)
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        for c in spec.get("containers") or []:
            if isinstance(c, dict):
                self._container_defaults(c)
        for c in spec.get("initContainers") or []:
            if isinstance(c, dict):
                self._container_defaults(c)

    @staticmethod
    def _container_defaults(c: dict):
        image = c.get("image") or ""
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})

    def validate(self, obj, version):
        containers = (obj.get("spec") or {}).get("containers")
        if not containers:
            return [v.required("spec.containers")]
        errs = []
        for i, c in enumerate(containers):
            if not isinstance(c, dict):
                errs.append(v.invalid(f"spec.containers[{i}]", c, "must be an object"))
                continue
            if not c.get("name"):
                errs.append(v.required(f"spec.containers[{i}].name"))
            else:
                errs += [v.invalid(f"spec.containers[{i}].name", c["name"], m) for m in v.dns1123_label(c["name"])]
            if not c.get("image"):
                errs.append(v.required(f"spec.containers[{i}].image"))
        return errs

    def validate_update(self, new, old, version):
        errs = self.validate(new, version)
        if self._frozen(new.get("spec") or {}) != self._frozen(old.get("spec") or {}):
            errs.append(v.forbidden("spec", f"pod updates may not change fields other than {self.MUTABLE}"))
        return errs

    @staticmethod
    def _frozen(spec: dict) -> dict:
        spec = clone(spec)
        for key in ("containers", "initContainers"):
            for c in spec.get(key) or []:
                if isinstance(c, dict):
                    c.pop("image", None)
        for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
            spec.pop(key, None)
        return spec


POD_FIELDS = {
    **NAMESPACED_FIELDS,
    "spec.nodeName": _path("spec", "nodeName"),
    "spec.restartPolicy": _path("spec", "restartPolicy"),
    "spec.schedulerName": _path("spec", "schedulerName"),
    "spec.serviceAccountName": _path("spec", "serviceAccountName"),
    "spec.hostNetwork": _path("spec", "hostNetwork", boolean=True),
    "status.phase": _path("status", "phase"),
    "status.podIP": _path("status", "podIP"),
    "status.nominatedNodeName": _path("status", "nominatedNodeName"),
}
NODE_FIELDS = {**NAME_FIELD, "spec.unschedulable": _path("spec", "unschedulable", boolean=True)}
NAMESPACE_FIELDS = {**NAME_FIELD, "status.phase": _path("status", "phase")}


def builtin_types() -> list[ResourceType]:
    from .crd import CRDStrategy  # the CRD kind's rules live with the rest of CRD handling

    return [
        ResourceType(
            "", ["v1"], "namespaces", "namespace", "Namespace", False, NamespaceStrategy(), ("ns",),
            status_subresource=True, return_deleted=True, name_rule="label", fields=NAMESPACE_FIELDS,
            skeleton=("spec", "status"),
        ),
        ResourceType(
            "", ["v1"], "nodes", "node", "Node", False, short_names=("no",), status_subresource=True,
            fields=NODE_FIELDS, skeleton=("spec", "status"),
        ),
        ResourceType(
            "", ["v1"], "pods", "pod", "Pod", True, PodStrategy(), ("po",), status_subresource=True,
            return_deleted=True, fields=POD_FIELDS, skeleton=("spec", "status"),
        ),
        ResourceType("", ["v1"], "serviceaccounts", "serviceaccount", "ServiceAccount", True, short_names=("sa",),
                     return_deleted=True),
        ResourceType("networking.k8s.io", ["v1"], "networkpolicies", "networkpolicy", "NetworkPolicy", True,
                     short_names=("netpol",), skeleton=("spec",)),
        # Leader election (client-go's leaderelection, calico-kube-controllers' replicas).
        ResourceType("coordination.k8s.io", ["v1"], "leases", "lease", "Lease", True, skeleton=("spec",)),
        ResourceType(
            "apiextensions.k8s.io", ["v1"], "customresourcedefinitions", "customresourcedefinition",
            "CustomResourceDefinition", False, CRDStrategy(), ("crd", "crds"), status_subresource=True,
            return_deleted=True, unconditional_update=False, skeleton=("spec", "status"),
        ),
    ]


_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str):
    """Kube-aware version order (v1 > v1beta2 > v1beta1 > v1alpha1 > foo), the order
    discovery lists versions in and picks the preferred one from."""
    m = _VERSION.match(version)
    if not m:
        return (3, 0, 0, version)
    major, stage, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    return ({None: 0, "beta": 1, "alpha": 2}[stage], -major, -minor, version)


class TypeTable:
    """Which (group, version, plural) paths are served; CRDs add and remove rows."""

    def __init__(self, types: list[ResourceType]):
        self._types: dict[str, ResourceType] = {}
        for rt in types:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._types[rt.id] = rt

    def remove(self, type_id: str) -> ResourceType | None:
        return self._types.pop(type_id, None)

    def get(self, type_id: str) -> ResourceType | None:
        return self._types.get(type_id)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        rt = self._types.get(group_resource(plural, group))
        return rt if rt is not None and version in rt.versions else None

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def group_versions(self) -> dict[str, list[str]]:
        """group -> served versions, highest priority first."""
        out: dict[str, set[str]] = {}
        for rt in self._types.values():
            out.setdefault(rt.group, set()).update(rt.versions)
        return {g: sorted(vs, key=version_priority) for g, vs in out.items()}
