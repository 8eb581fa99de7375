"""Where each Calico kind lives in the API server: one or more *sources*, each one
list/watch endpoint whose objects convert to resources of that kind.

=====================  ==========================================================
Calico kind            sources
=====================  ==========================================================
NetworkPolicy          ``crd.projectcalico.org/v1`` networkpolicies, and
                       ``networking.k8s.io/v1`` networkpolicies (``knp.default.*``)
Profile                ``v1`` namespaces (``kns.*``) and serviceaccounts (``ksa.*``)
WorkloadEndpoint       ``v1`` pods (scheduled, not host-networked)
Node                   ``v1`` nodes
every other kind       its ``crd.projectcalico.org/v1`` plural
=====================  ==========================================================

A source's list and watch have their own resourceVersion, so the opaque revision
of a snapshot or event is a :class:`Revision`: the position of every source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from pycalico.core.resources import codec
from pycalico.core.resources.meta import Resource

from . import convert, crds
from .api import path_of


@attrs.frozen(eq=False)
class Source:
    id: str  # "ippools", "k8s:pods", ...
    kind: str  # the Calico kind its objects become
    group: str
    version: str
    plural: str
    namespaced: bool
    convert: Callable[[dict], Resource | None]
    # Objects are named as the resources they become, so the server's order and
    # paging are the list's (no renaming, no filtering).
    plain: bool = False

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        return path_of(self.group, self.version, self.plural, namespace if self.namespaced else None, name,
                       subresource)

    def __repr__(self) -> str:
        return f"Source({self.id})"


def _cr_converter(kind: str) -> Callable[[dict], Resource]:
    return lambda obj: convert.from_cr(obj, kind)


def _build() -> dict[str, tuple[Source, ...]]:
    out: dict[str, tuple[Source, ...]] = {}
    for info in crds.crd_kinds():
        # Policies may sit under their pre-v3.32 names ("default.<name>"), which
        # sort differently from the names they are read as.
        plain = info.kind not in convert.POLICY_KINDS
        out[info.kind] = (Source(info.plural, info.kind, crds.GROUP, crds.VERSION, info.plural, info.namespaced,
                                 _cr_converter(info.kind), plain),)
    out["NetworkPolicy"] = out["NetworkPolicy"] + (
        Source("k8s:networkpolicies", "NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies", True,
               convert.knp_to_calico),
    )
    out["Node"] = (Source("k8s:nodes", "Node", "", "v1", "nodes", False, convert.node_to_calico, plain=True),)
    out["WorkloadEndpoint"] = (Source("k8s:pods", "WorkloadEndpoint", "", "v1", "pods", True, convert.pod_to_wep),)
    out["Profile"] = (
        Source("k8s:namespaces", "Profile", "", "v1", "namespaces", False, convert.namespace_to_profile),
        Source("k8s:serviceaccounts", "Profile", "", "v1", "serviceaccounts", True,
               convert.service_account_to_profile),
    )
    return out


KIND_SOURCES: dict[str, tuple[Source, ...]] = _build()
ALL_SOURCES: tuple[Source, ...] = tuple(s for kind in sorted(KIND_SOURCES) for s in KIND_SOURCES[kind])
SOURCES_BY_ID: dict[str, Source] = {s.id: s for s in ALL_SOURCES}


def kinds_of(kinds: Iterable[str] | None) -> list[str]:
    """Canonical kind names (every kind when None), in a stable order."""
    if kinds is None:
        return sorted(KIND_SOURCES)
    out = []
    for k in kinds:
        kind = codec.kind_info(k).kind
        if kind not in out:
            out.append(kind)
    return out


def sources_of(kinds: Iterable[str] | None) -> list[Source]:
    """The sources of ``kinds``: kind names (all of a kind's sources) or source ids
    (``k8s:networkpolicies``: that source alone, for a reader of Kubernetes' own
    objects where the kind's custom resource is not installed)."""
    wanted = None if kinds is None else list(kinds)
    out: list[Source] = [SOURCES_BY_ID[k] for k in wanted or () if k in SOURCES_BY_ID]
    for kind in kinds_of(None if wanted is None else [k for k in wanted if k not in SOURCES_BY_ID]):
        for s in KIND_SOURCES[kind]:
            if s not in out:
                out.append(s)
    return out


@attrs.frozen
class Revision:
    """The opaque revision of KDD: each source's resourceVersion (the position a
    watch of that source resumes from). ``str()`` and :meth:`parse` give a text form."""

    positions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, positions: dict[str, str]) -> Revision:
        return cls(tuple(sorted((k, v) for k, v in positions.items() if v is not None)))

    def get(self, source: str) -> str | None:
        for k, v in self.positions:
            if k == source:
                return v
        return None

    def as_dict(self) -> dict[str, str]:
        return dict(self.positions)

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.positions)

    @classmethod
    def parse(cls, value: Any) -> Revision | None:
        """A Revision from itself, its text form or a mapping; None stays None."""
        if value is None or isinstance(value, Revision):
            return value
        if isinstance(value, dict):
            return cls.of({str(k): str(v) for k, v in value.items()})
        if isinstance(value, str):
            pairs = {}
            for part in filter(None, value.split(",")):
                k, sep, v = part.partition("=")
                if not sep or k not in SOURCES_BY_ID:
                    raise ValueError(f"not a Kubernetes datastore revision: {value!r}")
                pairs[k] = v
            return cls.of(pairs)
        raise TypeError(f"not a Kubernetes datastore revision: {value!r}")
