"""Any Kubernetes object Calico turns into a resource of its own, by apiVersion and kind."""

from __future__ import annotations

from collections.abc import Callable

from pycalico.core.kube.objects import ConversionError
from pycalico.core.kube.policy import knp_to_calico
from pycalico.core.kube.profiles import namespace_to_profile, service_account_to_profile
from pycalico.core.resources.meta import Resource

CONVERTERS: dict[tuple[str, str], Callable[[dict], Resource]] = {
    ("v1", "Namespace"): namespace_to_profile,
    ("v1", "ServiceAccount"): service_account_to_profile,
    ("networking.k8s.io/v1", "NetworkPolicy"): knp_to_calico,
}


def type_of(obj: dict) -> tuple[str, str]:
    return obj.get("apiVersion") or "", obj.get("kind") or ""


def is_kubernetes(obj: dict) -> bool:
    """Whether ``obj`` belongs to a Kubernetes API group rather than Calico's."""
    api_version = type_of(obj)[0]
    return bool(api_version) and not api_version.startswith(("projectcalico.org/", "crd.projectcalico.org/"))


def to_calico(obj: dict) -> Resource:
    """The Calico resource of a Namespace, ServiceAccount or NetworkPolicy;
    ConversionError for another type."""
    convert = CONVERTERS.get(type_of(obj))
    if convert is None:
        known = ", ".join(f"{v} {k}" for v, k in CONVERTERS)
        api_version, kind = type_of(obj)
        raise ConversionError(f"{api_version or '(no apiVersion)'} {kind or '(no kind)'}: Calico converts only "
                              f"{known}")
    return convert(obj)
