"""Calico NetworkPolicies from ``networking.k8s.io/v1`` NetworkPolicies
(``K8sNetworkPolicyToCalico`` in ``libcalico-go/lib/backend/k8s/conversion/conversion.go``).

* name ``knp.default.<name>`` in the policy's namespace, order 1000, in the default tier;
* the pod selector becomes ``projectcalico.org/orchestrator == 'k8s'`` AND'ed with its
  matchLabels (``k == 'v'``) and matchExpressions (in, not in, has, ! has);
* a peer's namespaceSelector becomes the rule's namespaceSelector (empty: ``all()``);
  an ipBlock becomes nets and notNets (its ``except``);
* one Allow rule per (protocol, peer), with every port of that protocol in it (numeric
  ports merged into the fewest ranges, named ports first); a port without protocol is
  TCP; ``endPort`` makes a range;
* no policyTypes means Ingress only.

A rule that does not convert is dropped (and logged), as Calico does.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from pycalico.core.kube import names
from pycalico.core.kube.objects import build, meta_of
from pycalico.core.resources.meta import Resource

log = logging.getLogger(__name__)

K8S_POLICY_ORDER = 1000.0


def k8s_selector(sel: dict | None, pods: bool) -> str:
    """``k8sSelectorToCalico``: a pod selector gains ``projectcalico.org/orchestrator
    == 'k8s'``; an empty namespace selector is ``all()``; None is "" (same namespace)."""
    parts = [f"{names.LABEL_ORCHESTRATOR} == '{names.ORCHESTRATOR_K8S}'"] if pods else []
    if sel is None:
        return " && ".join(parts)
    labels, exprs = sel.get("matchLabels") or {}, sel.get("matchExpressions") or []
    if not pods and not labels and not exprs:
        return "all()"
    parts += [f"{k} == '{labels[k]}'" for k in sorted(labels)]
    for e in exprs:
        key, op, values = e.get("key"), e.get("operator"), "', '".join(e.get("values") or [])
        if op == "In":
            parts.append(f"{key} in {{ '{values}' }}")
        elif op == "NotIn":
            parts.append(f"{key} not in {{ '{values}' }}")
        elif op == "Exists":
            parts.append(f"has({key})")
        elif op == "DoesNotExist":
            parts.append(f"! has({key})")
    return " && ".join(parts)


def port_value(text: str) -> int | str:
    """numorstring.PortFromString, marshalled: a number, ``min:max`` or a name."""
    if text.isdigit():
        value = int(text)
        if not 1 <= value <= 65535:
            raise ValueError(f"port {value} out of range")
        return value
    low, sep, high = text.partition(":")
    if sep:
        if not (low.isdigit() and high.isdigit()) or not 1 <= int(low) <= int(high) <= 65535:
            raise ValueError(f"invalid port range {text!r}")
        return text if low != high else int(low)
    if not text or ":" in text:
        raise ValueError(f"invalid port {text!r}")
    return text


def _port_range(port: int | str) -> tuple[int, int] | None:
    if isinstance(port, int):
        return port, port
    low, sep, high = port.partition(":")
    if sep:
        return int(low), int(high)
    return None  # a named port


def simplify_ports(ports: list) -> list:
    """``SimplifyPorts``: named ports first, then the numeric ports as the fewest ranges."""
    if len(ports) <= 1:
        return ports
    named, numbers = [], []
    for p in ports:
        r = _port_range(p)
        if r is None:
            named.append(p)
        else:
            numbers.extend(range(r[0], r[1] + 1))
    if len(numbers) <= 1:
        return ports
    numbers.sort()
    out = list(named)
    i = 0
    while i < len(numbers):
        first = last = numbers[i]
        i += 1
        while i < len(numbers) and numbers[i] <= last + 1:
            last = numbers[i]
            i += 1
        out.append(first if first == last else f"{first}:{last}")
    return out


def _peer_fields(peer: dict | None) -> dict:
    if peer is None:
        return {}
    block = peer.get("ipBlock")
    if block is not None:
        nets = [str(ipaddress.ip_network(block.get("cidr", ""), strict=False))]
        not_nets = [str(ipaddress.ip_network(e, strict=False)) for e in block.get("except") or []]
        return {"nets": nets, **({"notNets": not_nets} if not_nets else {})}
    out = {"selector": k8s_selector(peer.get("podSelector"), pods=True)}
    ns_sel = k8s_selector(peer.get("namespaceSelector"), pods=False)
    if ns_sel:
        out["namespaceSelector"] = ns_sel
    return out


def _k8s_rules(peers: list | None, ports: list | None, ingress: bool) -> list[dict]:
    """``k8sRuleToCalico``: one rule per (protocol, peer), all ports of a protocol in one rule."""
    peer_list = list(peers or []) or [None]
    port_list = list(ports or []) or [None]
    by_protocol: dict[str, list | None] = {}
    for p in port_list:
        if p is None:
            by_protocol = {"": None}
            break
        proto = p.get("protocol") or "TCP"  # the implicit default of NetworkPolicyPort
        calico_ports = None
        if p.get("port") is not None:
            text = str(p["port"])
            if p.get("endPort") is not None:
                text = f"{text}:{p['endPort']}"
            calico_ports = [port_value(text)]
        if calico_ports is None:
            by_protocol[proto] = None  # every port of that protocol
        elif proto not in by_protocol or by_protocol[proto]:
            by_protocol[proto] = (by_protocol.get(proto) or []) + calico_ports
    rules = []
    for proto in sorted(by_protocol):
        ports_of = by_protocol[proto]
        ports_of = simplify_ports(ports_of) if ports_of else None
        for peer in peer_list:
            entity = _peer_fields(peer)
            rule: dict[str, Any] = {"action": "Allow"}
            if proto:
                rule["protocol"] = proto
            if ingress:
                if entity:
                    rule["source"] = entity
                if ports_of:
                    rule["destination"] = {"ports": ports_of}
            else:
                dest = {**({"ports": ports_of} if ports_of else {}), **entity}
                if dest:
                    rule["destination"] = dest
            rules.append(rule)
    return rules


def knp_to_calico(np: dict) -> Resource:
    """The Calico NetworkPolicy ``knp.default.<name>`` of a Kubernetes NetworkPolicy."""
    meta, spec = meta_of(np), np.get("spec") or {}
    name, ns = meta.get("name", ""), meta.get("namespace") or "default"
    ingress, egress = [], []
    for field_name, peers_key, is_ingress, out in (("ingress", "from", True, ingress), ("egress", "to", False, egress)):
        for i, rule in enumerate(spec.get(field_name) or []):
            try:
                out.extend(_k8s_rules(rule.get(peers_key), rule.get("ports"), is_ingress))
            except (ValueError, TypeError) as exc:
                log.warning("NetworkPolicy %s/%s: dropping %s rule %d that cannot be converted: %s",
                            ns, name, field_name, i, exc)
    declared = spec.get("policyTypes") or []
    types = [t for t in ("Ingress", "Egress") if t in declared] or ["Ingress"]
    out_meta = {"name": names.K8S_NETWORK_POLICY_PREFIX + name, "namespace": ns,
                "uid": names.convert_uid_or_none(meta.get("uid")), "resourceVersion": meta.get("resourceVersion"),
                "creationTimestamp": meta.get("creationTimestamp")}
    calico_spec: dict[str, Any] = {"order": K8S_POLICY_ORDER,
                                   "selector": k8s_selector(spec.get("podSelector"), pods=True)}
    if ingress:
        calico_spec["ingress"] = ingress
    if egress:
        calico_spec["egress"] = egress
    calico_spec["types"] = types
    return build("NetworkPolicy", {k: v for k, v in out_meta.items() if v is not None}, calico_spec)
