"""The names and labels Calico derives from Kubernetes objects.

From ``libcalico-go/lib/backend/k8s/conversion/constants.go`` and ``conversion.go``:

* profiles ``kns.<namespace>`` (labels ``pcns.<key>``) and
  ``ksa.<namespace>.<serviceaccount>`` (labels ``pcsa.<key>``), each also labelled
  ``projectcalico.org/name`` (prefixed) with the object's name;
* ``knp.default.<name>``: a converted Kubernetes NetworkPolicy;
* the labels every Kubernetes workload endpoint carries: ``projectcalico.org/namespace``,
  ``projectcalico.org/orchestrator`` (``k8s``) and ``projectcalico.org/serviceaccount``;
* UIDs (``ConvertUID``): a Calico resource derived from a Kubernetes object never shows
  that object's UID but a deterministic transform of it (the bits of each byte reversed,
  the UUID version and variant bytes kept), so that garbage collection never sees two
  objects with one UID. The transform is its own inverse.
"""

from __future__ import annotations

import uuid

ORCHESTRATOR_K8S = "k8s"
K8S_NETWORK_POLICY_PREFIX = "knp.default."
NAMESPACE_PROFILE_PREFIX = "kns."
SERVICE_ACCOUNT_PROFILE_PREFIX = "ksa."
NAMESPACE_LABEL_PREFIX = "pcns."
SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."
NAME_LABEL = "projectcalico.org/name"
LABEL_NAMESPACE = "projectcalico.org/namespace"
LABEL_ORCHESTRATOR = "projectcalico.org/orchestrator"
LABEL_SERVICE_ACCOUNT = "projectcalico.org/serviceaccount"
# The service account Kubernetes' admission gives a pod that names none.
DEFAULT_SERVICE_ACCOUNT = "default"


def namespace_profile(namespace: str) -> str:
    return NAMESPACE_PROFILE_PREFIX + namespace


def service_account_profile(namespace: str, service_account: str) -> str:
    return f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace or 'default'}.{service_account}"


def parse_profile(name: str) -> tuple[str, str | None] | None:
    """(namespace, service account or None) a profile name stands for, or None."""
    if name.startswith(NAMESPACE_PROFILE_PREFIX):
        ns = name[len(NAMESPACE_PROFILE_PREFIX) :]
        return (ns, None) if ns else None
    if name.startswith(SERVICE_ACCOUNT_PROFILE_PREFIX):
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[1] and parts[2]:
            return parts[1], parts[2]
    return None


_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def convert_uid(uid: str) -> str:
    """Calico's ``ConvertUID``: reverse the bits of every byte of the UUID except the
    version (6) and variant (8) bytes. Its own inverse."""
    raw = uuid.UUID(uid).bytes
    out = bytes(b if i in (6, 8) else _REVERSED[b] for i, b in enumerate(raw))
    return str(uuid.UUID(bytes=out))


def convert_uid_or_none(uid: str | None) -> str | None:
    if not uid:
        return None
    try:
        return convert_uid(uid)
    except ValueError:
        return None
