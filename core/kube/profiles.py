"""Profiles from Namespaces and ServiceAccounts (``NamespaceToProfile``,
``ServiceAccountToProfile`` in ``libcalico-go/lib/backend/k8s/conversion/conversion.go``).

A namespace's profile allows everything both ways (what a pod no policy selects gets)
and hands the namespace's labels, ``pcns.``-prefixed, to its pods, which is what a
rule's namespaceSelector matches. A service account's profile has no rules and hands
down ``pcsa.`` labels for serviceAccountSelectors. The resourceVersion is the
source object's, on its side of a ``/`` (``<ns rv>/`` and ``/<sa rv>``), as KDD
composes the two.
"""

from __future__ import annotations

from pycalico.core.kube import names
from pycalico.core.kube.objects import build, meta_of
from pycalico.core.resources.meta import Resource


def namespace_to_profile(ns: dict) -> Resource:
    """``kns.<ns>``, allow-all both ways, labels ``pcns.*``."""
    meta = meta_of(ns)
    name = meta.get("name", "")
    labels = {names.NAMESPACE_LABEL_PREFIX + k: v for k, v in (meta.get("labels") or {}).items()}
    labels[names.NAMESPACE_LABEL_PREFIX + names.NAME_LABEL] = name
    return _profile(names.namespace_profile(name), meta, f"{meta.get('resourceVersion', '')}/",
                    {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
                     "labelsToApply": dict(sorted(labels.items()))})


def service_account_to_profile(sa: dict) -> Resource:
    """``ksa.<ns>.<sa>``, no rules, labels ``pcsa.*``."""
    meta = meta_of(sa)
    name = meta.get("name", "")
    labels = {names.SERVICE_ACCOUNT_LABEL_PREFIX + k: v for k, v in (meta.get("labels") or {}).items()}
    labels[names.SERVICE_ACCOUNT_LABEL_PREFIX + names.NAME_LABEL] = name
    return _profile(names.service_account_profile(meta.get("namespace") or "", name), meta,
                    f"/{meta.get('resourceVersion', '')}", {"labelsToApply": dict(sorted(labels.items()))})


def _profile(name: str, meta: dict, revision: str, spec: dict) -> Resource:
    out_meta = {"name": name, "uid": names.convert_uid_or_none(meta.get("uid")), "resourceVersion": revision,
                "creationTimestamp": meta.get("creationTimestamp")}
    return build("Profile", {k: v for k, v in out_meta.items() if v}, spec)
