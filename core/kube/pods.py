"""What a Kubernetes pod gives its WorkloadEndpoint (``podToDefaultWorkloadEndpoint`` in
``libcalico-go/lib/backend/k8s/conversion/workload_endpoint_default.go``): labels,
profiles and named ports. The KDD plugin reads pods through this; the CNI plugin, in
Kubernetes policy mode, writes endpoints with it; kube-controllers syncs pod labels
with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pycalico.core.kube import names

_PORT_PROTOCOLS = {"TCP": "TCP", "": "TCP", "UDP": "UDP", "SCTP": "SCTP"}


def workload_labels(pod_labels: Mapping[str, str], namespace: str, service_account: str) -> dict[str, str]:
    """The pod's labels plus namespace, orchestrator ``k8s`` and, when shorter than 63
    characters (a label value's limit), the service account."""
    labels = dict(pod_labels)
    labels[names.LABEL_NAMESPACE] = namespace
    labels[names.LABEL_ORCHESTRATOR] = names.ORCHESTRATOR_K8S
    if service_account and len(service_account) < 63:
        labels[names.LABEL_SERVICE_ACCOUNT] = service_account
    return labels


def workload_profiles(namespace: str, service_account: str) -> list[str]:
    """``kns.<namespace>``, then ``ksa.<namespace>.<service account>`` if it has one."""
    profiles = [names.namespace_profile(namespace)]
    if service_account:
        profiles.append(names.service_account_profile(namespace, service_account))
    return profiles


def endpoint_ports(container_ports: Iterable[Mapping[str, Any]]) -> list[dict]:
    """WorkloadEndpoint ``spec.ports`` from Kubernetes ContainerPorts: those with a
    containerPort and a name or a hostPort, of a protocol with ports (default TCP)."""
    ports = []
    for cp in container_ports:
        if not cp.get("containerPort") or not (cp.get("hostPort") or cp.get("name")):
            continue
        proto = _PORT_PROTOCOLS.get(cp.get("protocol") or "")
        if proto is None:
            continue
        port: dict[str, Any] = {}
        if cp.get("name"):
            port["name"] = cp["name"]
        port.update(protocol=proto, port=cp["containerPort"])
        if cp.get("hostPort"):
            port["hostPort"] = cp["hostPort"]
        if cp.get("hostIP"):
            port["hostIP"] = cp["hostIP"]
        ports.append(port)
    return ports
