"""CustomResourceDefinitions: validating and defaulting the CRD itself, turning it
into a served ResourceType, and applying a version's structural schema to custom
objects (pruning unknown fields, defaulting, type/enum/required validation), the
parts of apiextensions-apiserver a Calico datastore can trip over.

Approximations: no CEL rules, formats, patterns, bounds or list-type invariants
are checked; conversion between versions only rewrites apiVersion (strategy
None); the Established/NamesAccepted conditions are set at once."""

from __future__ import annotations

from . import validation as v
from .resources import ResourceType, Strategy, version_priority, without
from .store import clone

CRD_TYPE_ID = "customresourcedefinitions.apiextensions.k8s.io"


class CRDStrategy(Strategy):
    @staticmethod
    def _defaults(obj):
        spec = obj.setdefault("spec", {})
        names = spec.setdefault("names", {})
        if names.get("kind"):
            names.setdefault("singular", names["kind"].lower())
            names.setdefault("listKind", names["kind"] + "List")
        spec.setdefault("conversion", {"strategy": "None"})

    def prepare_create(self, obj, version):
        self._defaults(obj)
        spec = obj["spec"]
        stored = [ver["name"] for ver in spec.get("versions") or [] if isinstance(ver, dict) and ver.get("storage")]
        # Status is the controllers' to write; creation only records the stored version.
        obj["status"] = {"acceptedNames": {"plural": "", "kind": ""}, "conditions": [], "storedVersions": stored[:1]}

    def prepare_update(self, new, old, version):
        self._defaults(new)
        status = clone(old.get("status") or {})
        stored = status.setdefault("storedVersions", [])
        for ver in (new.get("spec") or {}).get("versions") or []:
            if isinstance(ver, dict) and ver.get("storage") and ver.get("name") not in stored:
                stored.append(ver["name"])
        new["status"] = status

    def validate(self, obj, version):
        errs = []
        spec = obj.get("spec") or {}
        group, names = spec.get("group") or "", spec.get("names") or {}
        plural, kind = names.get("plural") or "", names.get("kind") or ""
        if not group:
            errs.append(v.required("spec.group"))
        elif "." not in group:
            errs.append(v.invalid("spec.group", group, "should be a domain with at least one dot"))
        if not plural:
            errs.append(v.required("spec.names.plural"))
        else:
            errs += [v.invalid("spec.names.plural", plural, m) for m in v.dns1123_label(plural)]
        if not kind:
            errs.append(v.required("spec.names.kind"))
        name = obj["metadata"].get("name", "")
        if plural and group and name != f"{plural}.{group}":
            errs.append(v.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
        if spec.get("scope") not in ("Cluster", "Namespaced"):
            errs.append(v.not_supported("spec.scope", spec.get("scope") or "", ["Cluster", "Namespaced"]))
        versions = spec.get("versions") or []
        if not versions:
            errs.append(v.invalid("spec.versions", versions, "must have exactly one version marked as storage version"))
            return errs
        if sum(1 for ver in versions if isinstance(ver, dict) and ver.get("storage")) != 1:
            errs.append(v.invalid("spec.versions", None, "must have exactly one version marked as storage version"))
        for i, ver in enumerate(versions):
            if not isinstance(ver, dict) or not ver.get("name"):
                errs.append(v.required(f"spec.versions[{i}].name"))
            elif not ((ver.get("schema") or {}).get("openAPIV3Schema")):
                errs.append(v.required(f"spec.versions[{i}].schema.openAPIV3Schema", "schemas are required"))
        return errs

    def validate_update(self, new, old, version):
        errs = self.validate(new, version)
        if (new.get("spec") or {}).get("scope") != (old.get("spec") or {}).get("scope"):
            errs.append(v.invalid("spec.scope", (new.get("spec") or {}).get("scope"), "field is immutable"))
        return errs

    def status_update(self, new, old):
        # customresourcedefinitions/status only writes status (ResetObjectMetaForStatus).
        out = clone(old)
        out["status"] = clone(new.get("status") or {})
        return out


def established_status(crd: dict, now: str) -> dict:
    """What the naming and establishing controllers write once names are accepted."""
    names = crd["spec"]["names"]
    status = clone(crd.get("status") or {})
    status["acceptedNames"] = clone(names)
    status["conditions"] = [
        {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts",
         "message": "no conflicts found"},
        {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted",
         "message": "the initial names have been accepted"},
    ]
    return status


class CustomResourceStrategy(Strategy):
    """customresource/strategy.go: status is dropped on create and kept on update
    when the status subresource is on; generation moves on any non-metadata change."""

    def __init__(self, schemas: dict[str, dict], status_subresource: bool):
        self.schemas = schemas
        self.status_subresource = status_subresource

    def prepare_create(self, obj, version):
        if self.status_subresource:
            obj.pop("status", None)
        normalize(obj, self.schemas.get(version))

    def prepare_update(self, new, old, version):
        normalize(new, self.schemas.get(version))

    def spec_changed(self, new, old):
        return without(new, "metadata", "apiVersion", "kind") != without(old, "metadata", "apiVersion", "kind")

    def validate(self, obj, version):
        return validate_schema(without(obj, "apiVersion", "kind", "metadata"), self.schemas.get(version) or {}, "")

    def status_update(self, new, old):
        out = clone(old)
        if "status" in new:
            out["status"] = clone(new["status"])
        else:
            out.pop("status", None)
        return out


def resource_type(crd: dict) -> ResourceType:
    spec = crd["spec"]
    names = spec["names"]
    served = [ver for ver in spec["versions"] if ver.get("served")]
    schemas = {ver["name"]: (ver.get("schema") or {}).get("openAPIV3Schema") or {} for ver in served}
    status = any("status" in (ver.get("subresources") or {}) for ver in served)
    return ResourceType(
        group=spec["group"],
        versions=sorted(schemas, key=version_priority),
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        kind=names["kind"],
        namespaced=spec["scope"] == "Namespaced",
        strategy=CustomResourceStrategy(schemas, status),
        short_names=tuple(names.get("shortNames") or ()),
        status_subresource=status,
        unconditional_update=False,  # customResourceStrategy.AllowUnconditionalUpdate
        typed=False,
        crd=crd["metadata"]["name"],
        list_kind_name=names.get("listKind") or "",
    )


# ---------------------------------------------------------------------------
# Structural schema: pruning, defaulting, validation
# ---------------------------------------------------------------------------

_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def normalize(obj: dict, schema: dict | None) -> None:
    """Prune fields the schema does not declare, drop nulls of non-nullable
    fields, then apply defaults, in place (the order the apiserver uses)."""
    if not schema:
        return
    root = {k: obj.pop(k) for k in _ROOT_KEEP if k in obj}
    pruned = _prune(obj, schema)
    obj.clear()
    obj.update(root)
    obj.update(pruned)


def _prune(value, schema: dict):
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if item is None and not (sub or {}).get("nullable"):
                continue
            if key in props or isinstance(extra, dict):
                out[key] = _prune(item, sub)
            elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                out[key] = item
        for key, sub in props.items():
            if key not in out and isinstance(sub, dict) and "default" in sub:
                out[key] = _prune(clone(sub["default"]), sub)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(item, schema["items"]) for item in value]
    return value


_TYPES = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "integer": lambda x: isinstance(x, int) and not isinstance(x, bool),
    "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
    "boolean": lambda x: isinstance(x, bool),
}


def _type_name(value) -> str:
    for name in ("boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](value):
            return name
    return "null"


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def validate_schema(value, schema: dict, path: str) -> list[v.FieldError]:
    if not isinstance(schema, dict) or not schema:
        return []
    if value is None:
        return [] if schema.get("nullable") else [_type_error(path, value, schema.get("type") or "object")]
    if schema.get("x-kubernetes-int-or-string"):
        ok = _TYPES["integer"](value) or _TYPES["string"](value)
        return [] if ok else [_type_error(path, value, "integer,string")]
    want = schema.get("type")
    if want in _TYPES and not _TYPES[want](value):
        return [_type_error(path, value, want)]
    errs = []
    if "enum" in schema and value not in schema["enum"]:
        errs.append(v.not_supported(path, value, [str(e) for e in schema["enum"]]))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if key not in value:
                errs.append(v.required(_child(path, key)))
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub:
                errs += validate_schema(item, sub, _child(path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errs += validate_schema(item, schema["items"], f"{path}[{i}]")
    return errs


def _type_error(path: str, value, want: str) -> v.FieldError:
    got = _type_name(value)
    return v.FieldError("TypeInvalid", path, f'{path} in body must be of type {want}: "{got}"', got)
