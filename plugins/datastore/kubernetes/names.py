"""Names and identities Calico derives when it keeps resources in Kubernetes.

* Policies (``libcalico-go/lib/names/policy.go``): the prefixes of converted
  Kubernetes policies (``knp.default.``) and the tier of a policy name.
* WorkloadEndpoints (``libcalico-go/lib/names/workloadendpoint.go``): ``<node>-k8s-<pod>-<iface>``,
  each segment's ``-`` doubled; the host veth ``cali`` + 11 hex digits of
  SHA-1(``<namespace>.<pod>``) (``.../k8s/conversion/workload_endpoint_default.go``).
* Profiles: the static ``projectcalico-default-allow`` (``libcalico-go/lib/resources/profile.go``).

The names every reader of Kubernetes objects shares (``kns.``/``ksa.`` profiles, the
``knp.default.`` prefix, the ``k8s`` orchestrator, UID conversion) are
:mod:`pycalico.core.kube.names`'; the ones this plugin uses are imported here.
"""

from __future__ import annotations

import hashlib
import os
import re

from pycalico.core.kube.names import (  # noqa: F401  (kept in core for every reader of Kubernetes objects)
    K8S_NETWORK_POLICY_PREFIX,
    ORCHESTRATOR_K8S,
    convert_uid,
    convert_uid_or_none,
    parse_profile,
)
from pycalico.core.resources.ipam import cidr_name

# --- policies ---------------------------------------------------------------------------

DEFAULT_TIER = "default"
# Prefixes of names that are already complete backend names (never tier-prefixed).
_FORMATTED = (K8S_NETWORK_POLICY_PREFIX, "kcnp.kube-admin.", "kcnp.kube-baseline.", "ossg.")


def is_k8s_policy(name: str) -> bool:
    """Whether a NetworkPolicy name is a converted Kubernetes NetworkPolicy."""
    return name.startswith(K8S_NETWORK_POLICY_PREFIX)


def tier_of(name: str, tier: str | None = None) -> str:
    """The tier a policy named ``name`` belongs to (``TierFromPolicyName``), or the
    spec's ``tier`` when it names one."""
    if tier:
        return tier
    if name.startswith(_FORMATTED) or "." not in name:
        return DEFAULT_TIER
    return name.split(".", 1)[0]


def legacy_policy_name(name: str) -> str | None:
    """The name Calico before v3.32 gave the backing object of a default-tier policy
    (``default.<name>``; ``names.TieredPolicyName``), or None when it used the name as is."""
    if name.startswith(_FORMATTED) or "." in name:
        return None
    return f"{DEFAULT_TIER}.{name}"


# --- workload endpoints -------------------------------------------------------------------

DEFAULT_ENDPOINT = "eth0"


def _segment(text: str) -> str:
    if not text or text.startswith("-") or text.endswith("-"):
        raise ValueError(f"{text!r} cannot be part of a WorkloadEndpoint name (empty, or starts or ends with '-')")
    return text.replace("-", "--")


def workload_endpoint_name(node: str, pod: str, endpoint: str = DEFAULT_ENDPOINT) -> str:
    """``node-1``, ``web-0``, ``eth0`` -> ``node--1-k8s-web--0-eth0``."""
    return "-".join(_segment(s) for s in (node, ORCHESTRATOR_K8S, pod, endpoint))


_DASHES = re.compile(r"-+")


def parse_workload_endpoint_name(name: str) -> tuple[str, str, str, str] | None:
    """(node, orchestrator, workload, endpoint) of a WEP name, or None if it does not
    split into four segments (a single ``-`` separates, ``--`` is a literal ``-``)."""
    parts, current, pos = [], [], 0
    for m in _DASHES.finditer(name):
        current.append(name[pos : m.start()])
        run = len(m.group())
        if run % 2:  # an odd run: one separator (segments never start or end with '-')
            if run > 1:
                return None
            parts.append("".join(current))
            current = []
        else:
            current.append("-" * (run // 2))
        pos = m.end()
    current.append(name[pos:])
    parts.append("".join(current))
    if len(parts) != 4 or not all(parts):
        return None
    return parts[0], parts[1], parts[2], parts[3]


def pod_of_workload_endpoint(name: str) -> str | None:
    """The pod a k8s WorkloadEndpoint name is for, or None for another name."""
    parsed = parse_workload_endpoint_name(name)
    if parsed is None or parsed[1] != ORCHESTRATOR_K8S:
        return None
    return parsed[2]


def veth_name(namespace: str, pod: str) -> str:
    """The host-side interface of a pod: the first of ``$FELIX_INTERFACEPREFIX`` (else
    ``cali``) + the first 11 hex digits of SHA-1(``<namespace>.<pod>``)."""
    prefix = (os.environ.get("FELIX_INTERFACEPREFIX") or "cali").split(",")[0]
    return prefix + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


# --- profiles -----------------------------------------------------------------------------

DEFAULT_ALLOW_PROFILE = "projectcalico-default-allow"


# --- IPAM -------------------------------------------------------------------------------


def block_name(cidr: str) -> str:
    """The IPAMBlock object name: the CIDR with ``.``, ``:`` and ``/`` as ``-``."""
    return cidr_name(cidr)


def affinity_name(node: str, cidr: str) -> str:
    """The BlockAffinity object name: ``<node>-<block name>``."""
    return f"{node}-{cidr_name(cidr)}"
