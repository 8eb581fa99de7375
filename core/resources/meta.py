"""Kubernetes object metadata, status conditions, and the ``Resource`` base of every kind."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from pycalico.core.resources.base import Many, Problem, ResourceError, deferred_checks, field, model, problems
from pycalico.core.resources.types import (
    annotation_problems,
    check_dns_label,
    check_name,
    label_problems,
)
from pycalico.core.schema import validated

V3 = "projectcalico.org/v3"
CRD_V1 = "crd.projectcalico.org/v1"


@model
class OwnerReference:
    api_version: str | None = field()
    kind: str | None = field()
    name: str | None = field()
    uid: str | None = field()
    controller: bool | None = field()
    block_owner_deletion: bool | None = field()


@model
class ManagedFieldsEntry:
    manager: str | None = field()
    operation: str | None = field()
    api_version: str | None = field()
    time: str | None = field()
    fields_type: str | None = field()
    fields_v1: dict[str, Any] | None = field()
    subresource: str | None = field()


@model
class ObjectMeta:
    """``metadata``: the Kubernetes ObjectMeta fields a Calico manifest may carry.

    Timestamps stay the RFC 3339 strings they were written as.
    """

    name: str | None = field()
    generate_name: str | None = field()
    namespace: str | None = field(validated(check_dns_label))
    self_link: str | None = field()
    uid: str | None = field()
    resource_version: str | None = field()
    generation: int | None = field()
    creation_timestamp: str | None = field()
    deletion_timestamp: str | None = field()
    deletion_grace_period_seconds: int | None = field()
    labels: dict[str, str] | None = field(Many(label_problems))
    annotations: dict[str, str] | None = field(Many(annotation_problems))
    owner_references: tuple[OwnerReference, ...] | None = field()
    finalizers: tuple[str, ...] | None = field()
    managed_fields: tuple[ManagedFieldsEntry, ...] | None = field()


@model
class Condition:
    """A Kubernetes ``metav1.Condition`` (IPPool and policy status)."""

    type: str | None = field()
    status: str | None = field()
    observed_generation: int | None = field()
    last_transition_time: str | None = field()
    reason: str | None = field()
    message: str | None = field()


@model
class ConditionStatus:
    """``status: {conditions: [...]}`` as IPPool and the policies carry it."""

    conditions: tuple[Condition, ...] | None = field()


def _default_api_version(self: Any) -> str:
    return type(self).API_VERSIONS[0]


def _default_kind(self: Any) -> str:
    return type(self).KIND


@model
class Resource:
    """A projectcalico.org/v3 resource: apiVersion, kind, metadata, spec (and status).

    Class attributes describe the kind: ``KIND`` (canonical name), ``KINDS`` (every
    name Calico accepts for it), ``API_VERSIONS`` (accepted, the first is written by
    default), ``PLURAL`` (the etcd/CRD plural) and ``NAMESPACED``. ``apiVersion`` and
    ``kind`` are kept as written so that a manifest dumps back unchanged.
    """

    KIND: ClassVar[str] = ""
    KINDS: ClassVar[tuple[str, ...]] = ()
    API_VERSIONS: ClassVar[tuple[str, ...]] = (V3, CRD_V1)
    PLURAL: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = False

    api_version: str = attrs.field(default=attrs.Factory(_default_api_version, takes_self=True))
    kind: str = attrs.field(default=attrs.Factory(_default_kind, takes_self=True))
    metadata: ObjectMeta = attrs.field(factory=ObjectMeta)

    # --- identity ---

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or ""

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name); the namespace is "" for cluster-wide kinds."""
        return self.namespace, self.name

    # --- defaults and validation ---

    def with_defaults(self) -> Resource:
        """A copy with the defaults Calico fills in when the resource is created."""
        with deferred_checks():  # filling defaults must not trip over values still to be checked
            res = self
            if type(self).NAMESPACED and not self.metadata.namespace:
                # calicoctl puts a namespaced resource without a namespace in "default".
                res = attrs.evolve(res, metadata=attrs.evolve(res.metadata, namespace="default"))
            return res._defaults()

    def _defaults(self) -> Resource:
        return self

    def problems(self) -> list[Problem]:
        """Every problem Calico's validation would report, as (path, message)."""
        return problems(self)

    def validate(self) -> None:
        """Raise :class:`ResourceError` listing every problem, as ``load_resources`` does."""
        found = self.problems()
        if found:
            name = f"{self.namespace}/{self.name}" if self.namespace else self.name
            header = f'{self.kind} "{name}"' if self.name else f"{self.kind} (no name)"
            raise ResourceError([f"{header}: {path or '(top level)'}: {message}" for path, message in found])

    def _checks(self):
        kinds = type(self).KINDS or (type(self).KIND,)
        if self.kind not in kinds:
            yield "kind", f"must be {' or '.join(kinds)}, got {self.kind!r}"
        if self.api_version not in type(self).API_VERSIONS:
            yield "apiVersion", f"must be {' or '.join(type(self).API_VERSIONS)}, got {self.api_version!r}"
        if not self.metadata.name:
            yield "metadata.name", "is required"
        else:
            problem = self._name_problem(self.metadata.name)
            if problem:
                yield "metadata.name", problem
        if self.metadata.namespace and not type(self).NAMESPACED:
            yield "metadata.namespace", f"must not be set: {type(self).KIND} is not namespaced"
        yield from self._resource_checks()

    def _name_problem(self, name: str) -> str | None:
        try:
            check_name(name)
        except ValueError as exc:
            return str(exc)
        return None

    def _resource_checks(self):
        return ()
