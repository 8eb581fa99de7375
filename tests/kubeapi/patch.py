"""The three PATCH body formats the apiserver applies itself: JSON merge patch
(RFC 7386), JSON patch (RFC 6902) and strategic merge patch.

Strategic merge patch is APPROXIMATED: it merges maps like a merge patch, merges
the few lists of the served built-in kinds that carry a patchMergeKey in the Go
types (containers by name, conditions by type, ...; see MERGE_KEYS) and honours
the ``$patch: delete|replace`` and ``$deleteFromPrimitiveList`` directives. Every
other list is replaced whole, as a merge patch would. A real server derives the
strategy of each field from the Go struct tags, so lists not in MERGE_KEYS may
merge there and be replaced here."""

from __future__ import annotations

import json

from .errors import ApiError, bad_request, unsupported_media_type
from .store import clone

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def _unprocessable(message: str) -> ApiError:
    # A patch that decodes but does not apply: NewGenericServerResponse(422, ...).
    return ApiError(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
        {"causes": [{"reason": "UnexpectedServerResponse", "message": message}]},
    )


# ---------------------------------------------------------------------------
# JSON merge patch
# ---------------------------------------------------------------------------


def merge_patch(target, patch):
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return clone(patch)
    out = clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# ---------------------------------------------------------------------------
# Strategic merge patch (approximation, see module docstring)
# ---------------------------------------------------------------------------

# Paths (list elements as "*") of the served built-in kinds whose lists merge by
# key in the Go types; None marks a list of scalars merged as a set.
MERGE_KEYS = {
    ("metadata", "finalizers"): None,
    ("metadata", "ownerReferences"): "uid",
    ("spec", "containers"): "name",
    ("spec", "initContainers"): "name",
    ("spec", "ephemeralContainers"): "name",
    ("spec", "containers", "*", "ports"): "containerPort",
    ("spec", "containers", "*", "env"): "name",
    ("spec", "containers", "*", "volumeMounts"): "mountPath",
    ("spec", "initContainers", "*", "env"): "name",
    ("spec", "initContainers", "*", "volumeMounts"): "mountPath",
    ("spec", "volumes"): "name",
    ("spec", "imagePullSecrets"): "name",
    ("spec", "hostAliases"): "ip",
    ("spec", "podCIDRs"): None,
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
    ("status", "podIPs"): "ip",
    ("secrets",): "name",
}

_DELETE_FROM = "$deleteFromPrimitiveList/"


def strategic_merge_patch(target: dict, patch: dict) -> dict:
    if not isinstance(patch, dict):
        raise bad_request("json: cannot unmarshal strategic merge patch: the patch must be a JSON object")
    return _smp_map(target, patch, ())


def _smp_map(target, patch: dict, path: tuple) -> dict | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip_directives(patch)
    out = clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM):
            field = key[len(_DELETE_FROM) :]
            if isinstance(out.get(field), list):
                out[field] = [v for v in out[field] if v not in value]
            continue
        if key.startswith("$"):  # $setElementOrder/..., $retainKeys: ordering hints only
            continue
        sub = path + (key,)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(out.get(key), value, sub)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list) and sub in MERGE_KEYS and isinstance(out.get(key), list):
            out[key] = _smp_list(out[key], value, MERGE_KEYS[sub], sub)
        else:
            out[key] = _strip_directives(value)
    return out


def _smp_list(current: list, patch: list, key: str | None, path: tuple) -> list:
    if key is None:  # a set of scalars: union, keeping the existing order first
        return current + [v for v in patch if v not in current]
    out = clone(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise bad_request(f"map: {item!r} does not contain declared merge key: {key}")
        index = next((i for i, e in enumerate(out) if isinstance(e, dict) and e.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
        elif index is None:
            out.append(_strip_directives(item))
        else:
            out[index] = _smp_map(out[index], item, path + ("*",))
    return out


def _strip_directives(value):
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# JSON patch
# ---------------------------------------------------------------------------


def _pointer(path) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise bad_request(f"invalid JSON pointer: {path!r}")
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc, parts: list[str], op: str, path: str):
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _unprocessable(f'{op} operation does not apply: doc is missing path: "{path}": missing value')
    return node


def _index(container: list, part: str, op: str, path: str, allow_end: bool) -> int:
    if part == "-" and allow_end:
        return len(container)
    if not part.isdigit():
        raise _unprocessable(f"{op} operation does not apply: invalid array index {part!r} in {path}")
    i = int(part)
    if i > len(container) or (i == len(container) and not allow_end):
        raise _unprocessable(f"{op} operation does not apply: index {i} out of bounds in {path}")
    return i


def _get(doc, path: str, op: str):
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, op, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise _unprocessable(f"{op} operation does not apply: doc is missing key: {path}: missing value")


def _add(doc, path: str, value, op="add"):
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, op, path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, op, path, allow_end=True), value)
    else:
        raise _unprocessable(f'{op} operation does not apply: doc is missing path: "{path}": missing value')
    return doc


def _remove(doc, path: str, op="remove"):
    parts = _pointer(path)
    _get(doc, path, op)  # must exist
    parent = _parent(doc, parts, op, path)
    if isinstance(parent, dict):
        del parent[parts[-1]]
    else:
        parent.pop(int(parts[-1]))
    return doc


def _replace(doc, path: str, value):
    parts = _pointer(path)
    if not parts:
        return value
    _get(doc, path, "replace")  # must exist
    parent = _parent(doc, parts, "replace", path)
    parent[parts[-1] if isinstance(parent, dict) else int(parts[-1])] = value
    return doc


def json_patch(target: dict, ops) -> dict:
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = clone(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid JSON patch operation: {json.dumps(op)}")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f"{kind} operation is missing its value: {json.dumps(op)}")
        if kind == "add":
            doc = _add(doc, path, clone(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            doc = _replace(doc, path, clone(op["value"]))
        elif kind == "test":
            if _get(doc, path, "test") != op["value"]:
                raise _unprocessable(f"testing value {path} failed: test failed")
        elif kind in ("move", "copy"):
            if "from" not in op:
                raise bad_request(f"{kind} operation is missing 'from': {json.dumps(op)}")
            value = clone(_get(doc, op["from"], kind))
            if kind == "move":
                doc = _remove(doc, op["from"], kind)
            doc = _add(doc, path, value, kind)
        else:
            raise bad_request(f"Unexpected kind: {kind}")
    return doc


def apply(content_type: str, target: dict, body, strategic_ok: bool) -> dict:
    """Apply a PATCH body of ``content_type``; 415 for formats the resource does not
    take (custom resources have no strategic merge patch; server-side apply is not
    implemented here)."""
    accepted = [JSON_PATCH, MERGE] + ([STRATEGIC] if strategic_ok else [])
    if content_type == MERGE:
        if not isinstance(body, dict):
            raise bad_request("json: cannot unmarshal merge patch: the patch must be a JSON object")
        return merge_patch(target, body)
    if content_type == JSON_PATCH:
        return json_patch(target, body)
    if content_type == STRATEGIC and strategic_ok:
        return strategic_merge_patch(target, body)
    raise unsupported_media_type(accepted)
