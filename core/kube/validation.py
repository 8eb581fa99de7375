"""What the Kubernetes API server checks and fills in before it stores the objects Calico
converts, so that a stand-in for it (the lab) refuses what a cluster would refuse.

:func:`admit` returns the object as stored, or raises :class:`Invalid` listing every
problem at its path (``spec.ingress[0].ports[1].port: ...``). Checks, from
``k8s.io/apimachinery/pkg/util/validation`` and ``pkg/apis/networking/validation``:
names (DNS-1123 labels for namespaces, subdomains otherwise), label keys and values,
label selectors, NetworkPolicy peers (an ipBlock alone, with ``except`` inside its
cidr), ports (1-65535 or an IANA service name; endPort only after a numeric port, not
below it), protocols (TCP, UDP, SCTP) and policyTypes. Defaults: a namespaced object's
namespace is ``default``; a Namespace gets ``kubernetes.io/metadata.name``; a
NetworkPolicy without policyTypes gets Ingress, plus Egress when it has egress rules.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterator
from typing import Any

from pycalico.core.kube.convert import type_of
from pycalico.core.resources.types import check_dns_label, check_name, label_value_problem, qualified_name_problem

SERVICE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
METADATA_NAME_LABEL = "kubernetes.io/metadata.name"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")
NAMESPACED = {"Namespace": False, "ServiceAccount": True, "NetworkPolicy": True}

Problem = tuple[str, str]


class Invalid(ValueError):
    """An object the API server would refuse; ``problems`` are (path, message) pairs."""

    def __init__(self, what: str, problems: list[Problem]):
        self.what = what
        self.problems = problems
        super().__init__("; ".join(f"{what}: {path}: {msg}" for path, msg in problems))


def _name(value: Any, path: str, label: bool) -> Iterator[Problem]:
    if not isinstance(value, str) or not value:
        yield path, "is required"
        return
    try:
        (check_dns_label if label else check_name)(value)
    except ValueError as exc:
        yield path, str(exc)


def _label_key(key: Any, path: str) -> Iterator[Problem]:
    problem = qualified_name_problem(key) if isinstance(key, str) else f"a label key must be a string, got {key!r}"
    if problem:
        yield path, problem


def _label_value(value: Any, path: str) -> Iterator[Problem]:
    problem = label_value_problem(value) if isinstance(value, str) else f"a label value must be a string, got {value!r}"
    if problem:
        yield path, problem


def labels(value: Any, path: str) -> Iterator[Problem]:
    """Problems of a label map at ``path``."""
    if value is None:
        return
    if not isinstance(value, dict):
        yield path, "must be a map of label keys to values"
        return
    for k, v in value.items():
        yield from _label_key(k, f"{path}.{k}")
        yield from _label_value(v, f"{path}.{k}")


def _selector(sel: Any, path: str) -> Iterator[Problem]:
    if sel is None:
        return
    if not isinstance(sel, dict):
        yield path, "must be a label selector (matchLabels, matchExpressions)"
        return
    unknown = set(sel) - {"matchLabels", "matchExpressions"}
    if unknown:
        yield path, f"unknown field(s) {', '.join(sorted(unknown))} (a label selector has matchLabels, matchExpressions)"
    yield from labels(sel.get("matchLabels"), f"{path}.matchLabels")
    exprs = sel.get("matchExpressions") or []
    if not isinstance(exprs, list):
        yield f"{path}.matchExpressions", "must be a list"
        return
    for i, e in enumerate(exprs):
        where = f"{path}.matchExpressions[{i}]"
        if not isinstance(e, dict):
            yield where, "must be {key, operator, values}"
            continue
        yield from _label_key(e.get("key"), f"{where}.key")
        op, values = e.get("operator"), e.get("values") or []
        if op not in OPERATORS:
            yield f"{where}.operator", f"must be one of {', '.join(OPERATORS)}, got {op!r}"
        elif op in ("In", "NotIn") and not values:
            yield f"{where}.values", f"must be non-empty with operator {op}"
        elif op in ("Exists", "DoesNotExist") and values:
            yield f"{where}.values", f"must be empty with operator {op}"
        for j, v in enumerate(values if isinstance(values, list) else [values]):
            yield from _label_value(v, f"{where}.values[{j}]")


def _cidr(value: Any, path: str) -> Iterator[Problem]:
    try:
        ipaddress.ip_network(value, strict=False)
    except (ValueError, TypeError):
        yield path, f"must be a CIDR such as 10.0.0.0/16, got {value!r}"


def _peer(peer: Any, path: str) -> Iterator[Problem]:
    if not isinstance(peer, dict):
        yield path, "must be a peer (podSelector, namespaceSelector or ipBlock)"
        return
    block = peer.get("ipBlock")
    if block is not None:
        if "podSelector" in peer or "namespaceSelector" in peer:
            yield path, "ipBlock may not be combined with podSelector or namespaceSelector"
        if not isinstance(block, dict):
            yield f"{path}.ipBlock", "must be {cidr, except}"
            return
        found = list(_cidr(block.get("cidr"), f"{path}.ipBlock.cidr"))
        yield from found
        for i, text in enumerate(block.get("except") or []):
            bad = list(_cidr(text, f"{path}.ipBlock.except[{i}]"))
            yield from bad
            if not bad and not found:
                outer = ipaddress.ip_network(block["cidr"], strict=False)
                inner = ipaddress.ip_network(text, strict=False)
                if inner.version != outer.version or not inner.subnet_of(outer) or inner == outer:
                    yield f"{path}.ipBlock.except[{i}]", f"must be strictly within the cidr {block['cidr']}"
        return
    if "podSelector" not in peer and "namespaceSelector" not in peer:
        yield path, "must have a podSelector, a namespaceSelector or an ipBlock"
    yield from _selector(peer.get("podSelector"), f"{path}.podSelector")
    yield from _selector(peer.get("namespaceSelector"), f"{path}.namespaceSelector")


def _port(p: Any, path: str) -> Iterator[Problem]:
    if not isinstance(p, dict):
        yield path, "must be {protocol, port, endPort}"
        return
    proto = p.get("protocol", "TCP")
    if proto not in PROTOCOLS:
        yield f"{path}.protocol", f"must be one of {', '.join(PROTOCOLS)}, got {proto!r}"
    port, end = p.get("port"), p.get("endPort")
    if isinstance(port, bool) or not isinstance(port, (int, str, type(None))):
        yield f"{path}.port", f"must be a number or a port name, got {port!r}"
    elif isinstance(port, int) and not 1 <= port <= 65535:
        yield f"{path}.port", f"must be between 1 and 65535, got {port}"
    elif isinstance(port, str) and (len(port) > 15 or not SERVICE_NAME.match(port) or "--" in port
                                    or not re.search("[a-z]", port)):
        yield f"{path}.port", f"a port name must be 1-15 lower case letters, digits and '-' with a letter, got {port!r}"
    if end is not None:
        if not isinstance(port, int) or isinstance(port, bool):
            yield f"{path}.endPort", "needs a numeric port"
        elif not isinstance(end, int) or isinstance(end, bool) or not port <= end <= 65535:
            yield f"{path}.endPort", f"must be a number from port ({port}) to 65535, got {end!r}"


def _network_policy(spec: Any) -> Iterator[Problem]:
    if not isinstance(spec, dict):
        yield "spec", "is required (podSelector, ingress, egress, policyTypes)"
        return
    yield from _selector(spec.get("podSelector"), "spec.podSelector")
    for field, peers_key in (("ingress", "from"), ("egress", "to")):
        rules = spec.get(field) or []
        if not isinstance(rules, list):
            yield f"spec.{field}", "must be a list"
            continue
        for i, rule in enumerate(rules):
            where = f"spec.{field}[{i}]"
            if not isinstance(rule, dict):
                yield where, f"must be {{{peers_key}, ports}}"
                continue
            for j, peer in enumerate(rule.get(peers_key) or []):
                yield from _peer(peer, f"{where}.{peers_key}[{j}]")
            for j, p in enumerate(rule.get("ports") or []):
                yield from _port(p, f"{where}.ports[{j}]")
    types = spec.get("policyTypes") or []
    for i, t in enumerate(types if isinstance(types, list) else [types]):
        if t not in POLICY_TYPES:
            yield f"spec.policyTypes[{i}]", f"must be Ingress or Egress, got {t!r}"


def admit(obj: dict) -> dict:
    """The object as the API server would store it (a copy, defaults filled in);
    :class:`Invalid` naming every problem."""
    api_version, kind = type_of(obj)
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    what = f"{kind} {meta.get('name', '') if isinstance(meta, dict) else ''}".strip()
    if not isinstance(meta, dict):
        raise Invalid(what, [("metadata", "must be a map (name, namespace, labels)")])
    problems: list[Problem] = []
    namespaced = NAMESPACED.get(kind)
    if namespaced is None:
        problems.append(("kind", f"{api_version} {kind} is not one of Namespace, ServiceAccount, NetworkPolicy"))
    problems += _name(meta.get("name"), "metadata.name", label=kind == "Namespace")
    if namespaced:
        meta.setdefault("namespace", "default")
        problems += _name(meta["namespace"], "metadata.namespace", label=True)
    elif namespaced is False and meta.get("namespace"):
        problems.append(("metadata.namespace", f"a {kind} is not namespaced"))
    problems += labels(meta.get("labels"), "metadata.labels")
    if kind == "NetworkPolicy":
        problems += _network_policy(obj.get("spec"))
    if problems:
        raise Invalid(what, problems)
    if kind == "Namespace":
        meta["labels"] = {**(meta.get("labels") or {}), METADATA_NAME_LABEL: meta["name"]}
    if kind == "NetworkPolicy":
        spec = obj["spec"]
        if not spec.get("policyTypes"):
            spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
    return obj
