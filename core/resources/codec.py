"""The kinds registry, and manifests in and out: YAML or JSON text <-> typed resources.

``load_resources`` reads what ``calicoctl apply -f`` reads: YAML (several documents
separated by ``---``) or JSON, each document one resource, a list of resources, or a
``List`` / ``<Kind>List`` with ``items``. Every resource gets the defaults Calico fills
in on create and is validated as Calico validates it; all problems of all documents are
reported together, one line each, by :class:`ResourceError`::

    <input> document 2, IPPool "pool1": spec.blockSize: must be between 20 and 32 for IPv4, got 33
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from typing import Any

import attrs
import yaml

from pycalico.core.resources.base import ResourceError, deferred_checks, key, problems
from pycalico.core.resources.bgp import BGPConfiguration, BGPPeer
from pycalico.core.resources.cluster import ClusterInformation, KubeControllersConfiguration
from pycalico.core.resources.endpoints import HostEndpoint, WorkloadEndpoint
from pycalico.core.resources.felix import FelixConfiguration
from pycalico.core.resources.ipam import BlockAffinity, IPAMBlock, IPAMConfig, IPAMHandle
from pycalico.core.resources.ippool import IPPool, IPReservation
from pycalico.core.resources.meta import Resource
from pycalico.core.resources.node import Node
from pycalico.core.resources.nodestatus import CalicoNodeStatus
from pycalico.core.resources.policy import (
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    NetworkPolicy,
    NetworkSet,
    Profile,
    Tier,
)
from pycalico.core.resources.types import register_hooks
from pycalico.core.schema import error_lines, make_converter

__all__ = [
    "KINDS",
    "KindInfo",
    "ResourceError",
    "dump_resources",
    "from_dict",
    "kind_info",
    "known_kinds",
    "load_resource",
    "load_resources",
    "to_dict",
]

RESOURCE_TYPES: tuple[type[Resource], ...] = (
    IPPool,
    IPReservation,
    BGPConfiguration,
    BGPPeer,
    Node,
    WorkloadEndpoint,
    HostEndpoint,
    NetworkPolicy,
    GlobalNetworkPolicy,
    Tier,
    Profile,
    NetworkSet,
    GlobalNetworkSet,
    FelixConfiguration,
    ClusterInformation,
    KubeControllersConfiguration,
    CalicoNodeStatus,
    IPAMBlock,
    BlockAffinity,
    IPAMHandle,
    IPAMConfig,
)


@attrs.frozen
class KindInfo:
    """What the datastores need to know of a kind."""

    kind: str  # canonical name
    cls: type[Resource]
    plural: str  # etcd path segment / CRD plural
    namespaced: bool
    api_versions: tuple[str, ...]  # accepted; the first is the one written by default
    aliases: tuple[str, ...]  # every kind name that loads into ``cls``

    @property
    def api_version(self) -> str:
        return self.api_versions[0]


def _info(cls: type[Resource]) -> KindInfo:
    return KindInfo(cls.KIND, cls, cls.PLURAL, cls.NAMESPACED, cls.API_VERSIONS, cls.KINDS or (cls.KIND,))


KINDS: dict[str, KindInfo] = {}
for _cls in RESOURCE_TYPES:
    for _alias in _info(_cls).aliases:
        KINDS[_alias] = _info(_cls)


def known_kinds() -> list[str]:
    return sorted(KINDS)


def kind_info(kind: str | type[Resource] | Resource) -> KindInfo:
    """The registry entry of a kind name, resource class or resource."""
    if isinstance(kind, Resource):
        kind = kind.kind
    elif isinstance(kind, type):
        kind = kind.KIND
    try:
        return KINDS[kind]
    except KeyError:
        raise ResourceError([_unknown_kind(kind)]) from None


def _unknown_kind(kind: Any) -> str:
    near = difflib.get_close_matches(str(kind), list(KINDS), n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"kind: unknown kind {kind!r}{hint} Known kinds: {', '.join(known_kinds())}"


CONVERTER = make_converter(key)
register_hooks(CONVERTER)


# --- one resource ---------------------------------------------------------------------


def _header(data: Any) -> str:
    """``IPPool "pool1"`` for an error line, from the raw document."""
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        return ""
    kind = data.get("kind") if isinstance(data.get("kind"), str) else "resource"
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if isinstance(meta, dict) and isinstance(meta.get("namespace"), str) and isinstance(name, str):
        name = f"{meta['namespace']}/{name}"
    return f'{kind} "{name}"' if isinstance(name, str) else f"{kind} (no name)"


def _structure(data: Any, defaults: bool, validate: bool) -> tuple[Resource | None, list[str]]:
    """The resource and its problems as ``path: message`` lines."""
    if not isinstance(data, dict):
        return None, [f"(top level): expected a table (a resource), got {type(data).__name__}"]
    kind = data.get("kind")
    if not kind:
        return None, ["kind: is required"]
    info = KINDS.get(kind) if isinstance(kind, str) else None
    if info is None:
        return None, [_unknown_kind(kind)]
    lines = []
    api_version = data.get("apiVersion")
    if api_version is None:  # calicoctl needs it to find the type (a wrong one: Resource._checks)
        lines.append(f"apiVersion: is required ({' or '.join(info.api_versions)})")
    broken: list[str] = []  # paths with structural problems
    try:
        with deferred_checks():
            resource = CONVERTER.structure(data, info.cls)
    except Exception as exc:  # cattrs groups every structural problem of the document
        lines += error_lines(exc, info.cls, key)
        broken = [line.split(": ", 1)[0] for line in lines]
        # Validate what is left, so that one bad key does not hide the other problems.
        try:
            with deferred_checks():
                resource = CONVERTER.structure(_prune(data, info.cls), info.cls)
        except Exception:
            return None, lines
    if defaults:
        resource = resource.with_defaults()
    if validate:
        for path, message in problems(resource):
            if not any(path == b or path.startswith((b + ".", b + "[")) for b in broken):
                lines.append(f"{path or '(top level)'}: {message}")
    if broken:
        return None, list(dict.fromkeys(lines))
    return resource, list(dict.fromkeys(lines))  # drop duplicates, keep order


def _prune(data: Any, typ: Any) -> Any:
    """``data`` without what does not structure as ``typ``: unknown keys, wrong types."""
    typ = _unoptional(typ)
    if attrs.has(typ) and isinstance(data, dict):
        fields = {key(a.name): a for a in attrs.fields(attrs.resolve_types(typ))}
        return {k: _prune(v, fields[k].type) for k, v in data.items() if k in fields and _fits(v, fields[k].type)}
    origin = getattr(typ, "__origin__", None)
    if origin is tuple and isinstance(data, list):
        item = typ.__args__[0]
        return [_prune(v, item) for v in data if _fits(v, item)]
    return data


def _unoptional(typ: Any) -> Any:
    args = [a for a in getattr(typ, "__args__", ()) if a is not type(None)]
    if type(None) in getattr(typ, "__args__", ()) and len(args) == 1:
        return args[0]
    return typ


def _fits(value: Any, typ: Any) -> bool:
    inner = _unoptional(typ)
    if value is None:
        return True
    if attrs.has(inner):
        return isinstance(value, dict)
    if getattr(inner, "__origin__", None) is tuple:
        return isinstance(value, list)
    try:
        with deferred_checks():
            CONVERTER.structure(value, typ)
    except Exception:
        return False
    return True


def from_dict(data: dict, *, defaults: bool = True, validate: bool = True, source: str | None = None) -> Resource:
    """One resource from its JSON/YAML document (a dict).

    ``defaults`` fills in what Calico fills in on create; ``validate`` applies Calico's
    validation. Raises :class:`ResourceError` listing every problem.
    """
    resource, lines = _structure(data, defaults, validate)
    if lines or resource is None:
        raise ResourceError(_located(source, _header(data), lines))
    return resource


def load_resource(data: dict) -> Resource:
    """One resource from a dict, with Calico's defaults, validated."""
    return from_dict(data)


def to_dict(resource: Resource) -> dict:
    """The JSON/YAML document of a resource (unset fields left out)."""
    return _plain(CONVERTER.unstructure(resource))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _located(where: str | None, header: str, lines: list[str]) -> list[str]:
    prefix = ", ".join(p for p in (where, header) if p)
    return [f"{prefix}: {line}" if prefix else line for line in lines]


# --- manifests ------------------------------------------------------------------------


class YamlLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: timestamps stay strings, no base-60 numbers."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag.rsplit(":", 1)[-1] not in ("int", "float", "timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _documents(text: str, source: str) -> list[Any]:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return [json.loads(text)]
        except json.JSONDecodeError:
            pass  # not plain JSON: read it as YAML, which may still be JSON-like
    try:
        return list(yaml.load_all(text, Loader=YamlLoader))
    except yaml.YAMLError as exc:
        raise ResourceError([f"{source}: invalid YAML or JSON: {' '.join(str(exc).split())}"]) from None


def _is_list(doc: dict) -> bool:
    kind = doc.get("kind")
    return (
        isinstance(kind, str) and (kind == "List" or (kind.endswith("List") and kind[:-4] in KINDS)) and "items" in doc
    )


def _items(doc: Any, where: str) -> Iterable[tuple[str, Any, list[str]]]:
    """(location, resource document, problems found so far) for each resource of a document."""
    if isinstance(doc, list):
        for j, item in enumerate(doc, 1):
            yield f"{where} item {j}".strip(), item, []
        return
    if isinstance(doc, dict) and _is_list(doc):
        items = doc["items"]
        if not isinstance(items, list):
            yield where, doc, [f"items: expected a list, got {type(items).__name__}"]
            return
        item_kind = doc["kind"][:-4] if doc["kind"] != "List" else None
        for j, item in enumerate(items, 1):
            if item_kind and isinstance(item, dict):
                # A typed list's items may leave out the type they share with the list.
                info = KINDS[item_kind]
                item = {"apiVersion": doc.get("apiVersion", info.api_version), "kind": item_kind, **item}
            yield f"{where} item {j}".strip(), item, []
        return
    yield where, doc, []


def load_resources(
    text: str, source: str = "<input>", *, defaults: bool = True, validate: bool = True
) -> list[Resource]:
    """Every resource of a YAML or JSON manifest, in order.

    Raises :class:`ResourceError` listing every problem of every document.
    """
    docs = [(i, d) for i, d in enumerate(_documents(text, source), 1)]
    several = len(docs) > 1
    resources: list[Resource] = []
    errors: list[str] = []
    for index, doc in docs:
        if doc is None:
            continue  # an empty document, as between two "---"
        if several:
            where = f"{source} document {index}"
        else:
            where = source if source != "<input>" else ""
        for location, item, early in _items(doc, where):
            if early:
                errors += _located(location, "", early)
                continue
            resource, lines = _structure(item, defaults, validate)
            if lines or resource is None:
                errors += _located(location, _header(item), lines)
            else:
                resources.append(resource)
    if errors:
        raise ResourceError(errors)
    return resources


def dump_resources(resources: Iterable[Resource], fmt: str = "yaml") -> str:
    """Resources as a manifest: YAML documents, or JSON (one object, or a ``List``)."""
    docs = [to_dict(r) for r in resources]
    if fmt == "yaml":
        return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, allow_unicode=True) if docs else ""
    if fmt == "json":
        body: Any = docs[0] if len(docs) == 1 else {"apiVersion": "v1", "kind": "List", "items": docs}
        return json.dumps(body, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}: use 'yaml' or 'json'")
