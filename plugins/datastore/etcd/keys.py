"""Calico's etcd v3 key layout, and resources to and from the values stored there.

v3 resources live at ``/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>``
(``libcalico-go/lib/backend/model/resource.go``) as the JSON of the whole object, the way
``json.Marshal`` writes it after ``clientv3`` has cleared ``resourceVersion`` and
``selfLink`` and set apiVersion and kind (``libcalico-go/lib/clientv3/resources.go``). On
read, ``resourceVersion`` is the key's ``mod_revision`` (``etcdv3/conversion.go``).

The IPAM records live under ``/calico/ipam/v2/`` in their own (v1 model) JSON; the record
classes know their keys and values (``etcd_key``, ``to_etcd``, ``from_etcd``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import attrs

from pycalico.core.resources.base import deferred_checks
from pycalico.core.resources.codec import KINDS, KindInfo, from_dict, to_dict
from pycalico.core.resources.ipam import (
    CONFIG_KEY,
    BlockAffinity,
    IPAMBlock,
    IPAMConfig,
    IPAMHandle,
    cidr_name,
)
from pycalico.core.resources.meta import V3, Resource

ROOT = "/calico/"
RESOURCES = "/calico/resources/v3/projectcalico.org/"
IPAM = "/calico/ipam/v2/"
SYNC_PREFIXES = (RESOURCES, IPAM)

# IPAM records: kind -> the prefixes their keys live under.
IPAM_PREFIXES: dict[str, tuple[str, ...]] = {
    IPAMBlock.KIND: (f"{IPAM}assignment/",),
    BlockAffinity.KIND: (f"{IPAM}host/", f"{IPAM}virtual/"),
    IPAMHandle.KIND: (f"{IPAM}handle/",),
    IPAMConfig.KIND: (CONFIG_KEY,),
}
IPAM_CLASSES: dict[str, type] = {c.KIND: c for c in (IPAMBlock, BlockAffinity, IPAMHandle, IPAMConfig)}

_BY_PLURAL: dict[str, KindInfo] = {i.plural: i for i in KINDS.values() if i.kind not in IPAM_PREFIXES}
_BLOCK_KEY = re.compile(r"/calico/ipam/v2/assignment/ipv[46]/block/[^/]+")
_AFFINITY_KEY = re.compile(r"/calico/ipam/v2/(?:host|virtual)/[^/]+/ipv[46]/block/[^/]+")
_HANDLE_KEY = re.compile(r"/calico/ipam/v2/handle/[^/]+")


FELIX_STATUS = "/calico/felix/v2/no-region/host/"  # Felix's, with no OpenStack region


def felix_status_keys(hostname: str) -> tuple[str, str]:
    """Felix's status keys for ``hostname``: the live one (under a TTL) and the last
    report (``libcalico-go/lib/backend/model/statusreports.go``)."""
    if not hostname or "/" in hostname:
        raise ValueError(f"hostname {hostname!r} cannot name a status key")
    return f"{FELIX_STATUS}{hostname}/status", f"{FELIX_STATUS}{hostname}/last_reported_status"


class LayoutError(ValueError):
    """A key or value that is not Calico's."""


def info(kind: str) -> KindInfo:
    """The registry entry of a kind name (any alias); ValueError if unknown."""
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}") from None


def all_kinds() -> list[str]:
    """Every canonical kind this plugin stores."""
    return sorted({i.kind for i in KINDS.values()})


def is_ipam(kind: str) -> bool:
    return info(kind).kind in IPAM_PREFIXES


# --- key <-> identity -------------------------------------------------------------------


def prefixes(kind: str, namespace: str | None = None) -> tuple[str, ...]:
    """The key prefixes holding every resource of ``kind`` (in ``namespace``), in key order."""
    i = info(kind)
    if i.kind in IPAM_PREFIXES:
        return IPAM_PREFIXES[i.kind]
    base = f"{RESOURCES}{i.plural}/"
    if i.namespaced and namespace:
        return (f"{base}{namespace}/",)
    return (base,)


def resource_key(kind: str, name: str, namespace: str | None = None) -> str | None:
    """The key of one resource, or None if only a scan can find it (an IPAM record
    whose name does not spell out its key)."""
    i = info(kind)
    if i.kind == IPAMConfig.KIND:
        return CONFIG_KEY if name == "default" else None
    if i.kind == IPAMHandle.KIND:
        return f"{IPAM}handle/{name}"
    if i.kind == IPAMBlock.KIND:
        cidr = _cidr_from_name(name)
        return IPAMBlock.new(cidr).etcd_key() if cidr and cidr_name(cidr) == name else None
    if i.kind == BlockAffinity.KIND:
        return None  # host or virtual: see affinity_keys()
    if i.namespaced:
        if not namespace:
            raise ValueError(f"{i.kind} is namespaced: a namespace is required")
        return f"{RESOURCES}{i.plural}/{namespace}/{name}"
    return f"{RESOURCES}{i.plural}/{name}"


def affinity_keys(name: str) -> tuple[str, ...]:
    """The keys a BlockAffinity named ``<node>-<a>-<b>-<c>-<d>-<len>`` (IPv4) may have."""
    parts = name.rsplit("-", 5)
    if len(parts) != 6 or not parts[0]:
        return ()
    cidr = _cidr_from_name("-".join(parts[1:]))
    if cidr is None or ipaddress.ip_network(cidr).version != 4:
        return ()
    text = cidr.replace("/", "-")
    return tuple(f"{IPAM}{kind}/{parts[0]}/ipv4/block/{text}" for kind in ("host", "virtual"))


def _cidr_from_name(name: str) -> str | None:
    """``10-0-0-0-26`` -> ``10.0.0.0/26``; ``fd00---122`` -> ``fd00::/122``."""
    head, sep, length = name.rpartition("-")
    if not sep or not length.isdigit():
        return None
    for text in (head.replace("-", "."), head.replace("-", ":")):
        try:
            return str(ipaddress.ip_network(f"{text}/{length}"))
        except ValueError:
            continue
    return None


def parse(key: str) -> tuple[str, str | None, str] | None:
    """(kind, namespace, name) of a key of Calico's layout, None for any other key.

    IPAM keys are only recognised here; their names come from decoding the value.
    """
    if key.startswith(RESOURCES):
        parts = key[len(RESOURCES) :].split("/")
        i = _BY_PLURAL.get(parts[0])
        if i is None:
            return None
        if i.namespaced and len(parts) == 3 and parts[1] and parts[2]:
            return i.kind, parts[1], parts[2]
        if not i.namespaced and len(parts) == 2 and parts[1]:
            return i.kind, None, parts[1]
        return None
    if key.startswith(IPAM):
        if key == CONFIG_KEY:
            return IPAMConfig.KIND, None, "default"
        if _BLOCK_KEY.fullmatch(key):
            return IPAMBlock.KIND, None, ""
        if _AFFINITY_KEY.fullmatch(key):
            return BlockAffinity.KIND, None, ""
        if _HANDLE_KEY.fullmatch(key):
            return IPAMHandle.KIND, None, key.rsplit("/", 1)[1]
    return None


# --- values -----------------------------------------------------------------------------


def encode(resource: Resource) -> tuple[str, bytes]:
    """The key and value Calico would store for ``resource``."""
    i = info(resource.kind)
    if i.kind in IPAM_PREFIXES:
        return resource.etcd_key(), _json(resource.to_etcd())
    key = resource_key(i.kind, resource.name, resource.metadata.namespace)
    assert key is not None
    doc = to_dict(resource)
    meta = doc.get("metadata", {})
    meta.pop("resourceVersion", None)
    meta.pop("selfLink", None)
    if not i.namespaced:
        meta.pop("namespace", None)
    # clientv3 sets the group/version/kind before storing; Go writes kind first.
    ordered = {"kind": i.kind, "apiVersion": V3}
    ordered.update((k, v) for k, v in doc.items() if k not in ("kind", "apiVersion"))
    return key, _json(ordered)


def decode(key: str, value: bytes, mod_revision: int | str) -> Resource:
    """The typed resource stored as ``value`` at ``key``, ``resourceVersion`` set.

    Values are read as Calico reads them: no defaults filled in, no validation (they
    were checked when written). Raises ValueError (ResourceError) for a value that does
    not decode, or a key that is not Calico's.
    """
    found = parse(key)
    if found is None:
        raise LayoutError(f"{key}: not a key of Calico's datastore layout")
    kind, namespace, name = found
    rv = str(mod_revision)
    if kind in IPAM_CLASSES:
        res = IPAM_CLASSES[kind].from_etcd(value, key)
        return _with_version(res, rv)
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LayoutError(f"{key}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise LayoutError(f"{key}: expected a JSON object, got {type(data).__name__}")
    i = info(kind)
    data.setdefault("kind", i.kind)
    data.setdefault("apiVersion", V3)
    meta = data.get("metadata")
    if meta is None:
        meta = data["metadata"] = {}
    if not isinstance(meta, dict):
        raise LayoutError(f"{key}: metadata: expected a JSON object")
    # The key names the resource, as in Calico (the key's name wins over the value's).
    meta["name"] = name
    if namespace:
        meta["namespace"] = namespace
    meta["resourceVersion"] = rv
    meta.pop("selfLink", None)
    return from_dict(data, defaults=False, validate=False, source=key)


def _with_version(res: Any, rv: str) -> Any:
    with deferred_checks():
        return attrs.evolve(res, metadata=attrs.evolve(res.metadata, resource_version=rv))


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
