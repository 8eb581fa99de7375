"""Calico's names: WorkloadEndpoints, host-side veths, IPAM handles.

From ``libcalico-go/lib/names/workloadendpoint.go`` (endpoint names),
``libcalico-go/lib/backend/k8s/conversion/workload_endpoint_default.go`` (host veth of
a Kubernetes pod) and ``cni-plugin/pkg/plugin/plugin.go`` (host veth otherwise).
Standard library only: the executable imports this module on its fast path.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

K8S = "k8s"
CNI = "cni"
DEFAULT_VETH_PREFIX = "cali"
HOST_VETH_HASH_LEN = 11
IFNAMSIZ = 15  # longest Linux interface name


class BadName(ValueError):
    """An identifier that cannot make a Calico name; the message names the field."""


def _escape(field: str, value: str) -> str:
    if not value:
        raise BadName(f"{field}: must be set to build a WorkloadEndpoint name")
    if value.startswith("-"):
        raise BadName(f"{field}: {value!r} must not begin with a '-'")
    if value.endswith("-"):
        raise BadName(f"{field}: {value!r} must not end with a '-'")
    return value.replace("-", "--")


def wep_name(node: str, orchestrator: str, endpoint: str, *, pod: str = "", container_id: str = "",
             workload: str = "") -> str:
    """The WorkloadEndpoint name: ``<node>-k8s-<pod>-<endpoint>``,
    ``<node>-cni-<containerID>-<endpoint>`` or ``<node>-<orch>-<workload>-<endpoint>``,
    each segment's own dashes doubled (``node-1``, ``web-0`` -> ``node--1-k8s-web--0-eth0``)."""
    if orchestrator == K8S:
        middle = ("pod", pod)
    elif orchestrator == CNI:
        middle = ("containerID", container_id)
    elif orchestrator == "libnetwork":
        middle = ("orchestrator", orchestrator)
    else:
        middle = ("workload", workload)
    segments = [("node", node), ("orchestrator", orchestrator), middle, ("endpoint", endpoint)]
    return "-".join(_escape(field, value) for field, value in segments)


def parse_wep_name(name: str) -> list[str]:
    """The segments of a WorkloadEndpoint name, dashes unescaped (the inverse of
    ``wep_name``)."""
    parts, last, i = [], -1, 1
    while i < len(name):
        if name[i] == "-":
            if i < len(name) - 1 and name[i + 1] == "-":
                i += 2
                continue
            parts.append(name[last + 1:i].replace("--", "-"))
            last = i
        i += 1
    parts.append(name[last + 1:].replace("--", "-"))
    return parts


def veth_prefix(env: Mapping[str, str] = os.environ) -> str:
    """The host-side interface prefix: the first entry of ``FELIX_INTERFACEPREFIX``
    (a comma list), else ``cali``."""
    value = env.get("FELIX_INTERFACEPREFIX", "")
    return value.split(",")[0].strip() or DEFAULT_VETH_PREFIX


def host_veth_name(*, namespace: str = "", pod: str = "", container_id: str = "",
                   prefix: str = DEFAULT_VETH_PREFIX) -> str:
    """The host side of a workload's veth. A Kubernetes pod: prefix + the first 11 hex
    digits of sha1("<namespace>.<pod>"), so it is stable across the pod's sandboxes;
    anything else: ``cali`` + the first 11 characters of the container ID."""
    if pod:
        digest = hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()
        return f"{prefix}{digest[:HOST_VETH_HASH_LEN]}"
    if not container_id:
        raise BadName("CNI_CONTAINERID: must be set to name the host-side veth")
    return f"{DEFAULT_VETH_PREFIX}{container_id[:HOST_VETH_HASH_LEN]}"


def handle_id(network: str, container_id: str) -> str:
    """calico-ipam's handle for one container on one network: ``<net name>.<containerID>``."""
    return f"{network}.{container_id}"


def legacy_handle_id(orchestrator: str, namespace: str, pod: str, container_id: str) -> str:
    """The handle Calico v2 used (``<ns>.<pod>`` for Kubernetes, else the container ID);
    DEL releases it too."""
    return f"{namespace}.{pod}" if orchestrator == K8S else container_id
