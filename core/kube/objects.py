"""Building the Calico resource a Kubernetes object converts to."""

from __future__ import annotations

from typing import Any

from pycalico.core.resources.base import ResourceError
from pycalico.core.resources.codec import from_dict
from pycalico.core.resources.meta import Resource

V3 = "projectcalico.org/v3"


class ConversionError(ValueError):
    """A Kubernetes object that does not make a valid Calico resource."""


def meta_of(obj: dict) -> dict:
    """The object's metadata (an empty one when it has none)."""
    return obj.get("metadata") or {}


def build(kind: str, metadata: dict, spec: dict) -> Resource:
    """The v3 resource of ``kind`` as stored (no defaults filled, not validated: what the
    conversion gives is what Calico would hold); ConversionError when it does not
    structure."""
    doc: dict[str, Any] = {"apiVersion": V3, "kind": kind, "metadata": metadata, "spec": spec}
    try:
        return from_dict(doc, defaults=False, validate=False)
    except ResourceError as exc:
        raise ConversionError(str(exc)) from None
