"""Calico resources <-> the Kubernetes objects KDD keeps them in.

Custom resources (``libcalico-go/lib/backend/k8s/resources/resources.go``,
``ConvertCalicoResourceToK8sResource`` and back): ``apiVersion:
crd.projectcalico.org/v1``, ``kind`` the Calico kind (``IPAMConfig`` for
IPAMConfiguration), ``spec`` (and ``status``) as in projectcalico.org/v3. The v3
metadata is kept whole in the annotation ``projectcalico.org/metadata`` (JSON of the
ObjectMeta without namespace, resourceVersion and uid; with the name only for
policies); the custom resource's own labels and annotations carry only Calico's
(``projectcalico.org/``, ``operator.tigera.io/``) keys. The v3 uid is the custom
resource's uid through ``names.convert_uid``; the resourceVersion is the custom
resource's.

Native objects (``libcalico-go/lib/backend/k8s/conversion/`` and
``.../resources/node.go``): Node <- k8s Node and its ``projectcalico.org/*``
annotations; WorkloadEndpoint <- Pod. Profile <- Namespace and ServiceAccount,
NetworkPolicy ``knp.default.<name>`` <- networking.k8s.io/v1 NetworkPolicy, and a pod's
endpoint labels, profiles and ports are :mod:`pycalico.core.kube`'s, shared with the lab
and kube-controllers.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
from typing import Any

import attrs

from pycalico.core.kube.objects import ConversionError
from pycalico.core.kube.pods import endpoint_ports, workload_labels, workload_profiles
from pycalico.core.kube.policy import knp_to_calico  # noqa: F401  (the sources read it from here)
from pycalico.core.kube.profiles import (  # noqa: F401  (the sources read them from here)
    namespace_to_profile,
    service_account_to_profile,
)
from pycalico.core.resources import codec
from pycalico.core.resources import types as rtypes
from pycalico.core.resources.base import ResourceError, deferred_checks
from pycalico.core.resources.base import key as json_key
from pycalico.core.resources.codec import from_dict, to_dict
from pycalico.core.resources.meta import Resource
from pycalico.core.resources.types import (
    as_number_value,
    check_cidr_v4,
    check_cidr_v6,
    check_ipv4,
    check_ipv6,
    check_mac,
    parse_cidr,
)
from pycalico.core.times import rfc3339

from . import crds, names

log = logging.getLogger(__name__)

METADATA_ANNOTATION = "projectcalico.org/metadata"
LABELS_ANNOTATION = "projectcalico.org/labels"
ANNOTATIONS_ANNOTATION = "projectcalico.org/annotations"
KUBE_LABELS_ANNOTATION = "projectcalico.org/kube-labels"
POLICY_KINDS = frozenset({"NetworkPolicy", "GlobalNetworkPolicy"})
IPAM_KINDS = frozenset({"IPAMBlock", "BlockAffinity", "IPAMHandle"})
V3 = "projectcalico.org/v3"
# ObjectMeta's JSON keys in Go struct order (the order json.Marshal writes).
META_KEYS = (
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
    "managedFields",
)


def now() -> str:
    return rfc3339()


def ours(key: str) -> bool:
    """Label and annotation keys Calico keeps on the custom resource itself."""
    return "projectcalico.org/" in key or "operator.tigera.io/" in key


def object_key(obj: dict) -> str:
    """``<namespace>/<name>`` or ``<name>``: the key (and sort order) of the API server."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name', '')}" if ns else meta.get("name", "")


def resource_key(resource: Resource) -> str:
    ns = resource.metadata.namespace
    return f"{ns}/{resource.name}" if ns else resource.name


_CRD_KINDS = frozenset(info.kind for info in crds.crd_kinds())


def _build(doc: dict, kind: str) -> Resource:
    try:
        return from_dict(doc, defaults=False, validate=False)
    except ResourceError as first:
        spec_schema = crds.spec_schema(kind) if kind in _CRD_KINDS else None
        if spec_schema and isinstance(doc.get("spec"), dict):
            # Written by a newer Calico: drop what the types do not know, as an API
            # server with these CRDs would, and try again.
            pruned = {**doc, "spec": prune(doc["spec"], spec_schema)}
            try:
                return from_dict(pruned, defaults=False, validate=False)
            except ResourceError:
                pass
        raise ConversionError(str(first)) from None


def prune(value: Any, schema: dict) -> Any:
    """``value`` without the object fields ``schema`` does not declare."""
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: prune(v, props[k]) for k, v in value.items() if k in props}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(v, schema["items"]) for v in value]
    return value


# --- custom resources ------------------------------------------------------------------


def _owner_refs(refs: list, to_crd: bool) -> list:
    out = []
    for ref in refs or []:
        ref = dict(ref)
        src, dst = (V3, crds.API_VERSION) if to_crd else (crds.API_VERSION, V3)
        if ref.get("apiVersion") in (src, V3):
            ref["apiVersion"] = dst
            ref["uid"] = names.convert_uid_or_none(ref.get("uid")) or ref.get("uid")
        out.append(ref)
    return out


def _spec_class(info: codec.KindInfo) -> type | None:
    spec = {a.name: a for a in attrs.fields(attrs.resolve_types(info.cls))}.get("spec")
    return crds.unoptional(spec.type)[0] if spec is not None else None


def _as_number_keys(spec_cls: type | None) -> tuple[str, ...]:
    if spec_cls is None:
        return ()
    return tuple(json_key(a.name) for a in attrs.fields(attrs.resolve_types(spec_cls))
                 if crds.unoptional(a.type)[0] is rtypes.ASNumber)


# Per custom-resource kind: the spec keys holding AS numbers, and the fields Calico's
# Go types always serialize (with their zero values).
_AS_KEYS = {info.kind: _as_number_keys(_spec_class(info)) for info in crds.crd_kinds()}
_GO_ZEROES = {
    info.kind: {k: v for k, v in crds.REQUIRED.get(getattr(_spec_class(info), "__name__", ""), {}).items()
                if v is not None}
    for info in crds.crd_kinds()
}


def backend_spec(spec: dict, info: codec.KindInfo) -> dict:
    """The spec as Calico's Go types serialize it: AS numbers as integers and the
    fields without omitempty present (with Go's zero value)."""
    spec = dict(spec)
    for k in _AS_KEYS.get(info.kind, ()):
        if isinstance(spec.get(k), str):
            spec[k] = as_number_value(spec[k])
    for k, zero in _GO_ZEROES.get(info.kind, {}).items():
        if k not in spec:
            spec[k] = copy.deepcopy(zero)
    return spec


def to_cr(resource: Resource, backend_name: str | None = None) -> dict:
    """The custom resource Calico writes for ``resource``."""
    info = codec.kind_info(resource)
    doc = to_dict(resource)
    meta = doc.get("metadata") or {}
    calico: dict[str, Any] = {}
    for k in META_KEYS:
        if k in ("namespace", "resourceVersion", "uid"):
            continue
        if k == "name" and info.kind not in POLICY_KINDS:
            continue
        if k == "creationTimestamp":
            calico[k] = meta.get(k)  # a zero metav1.Time marshals as null
        elif meta.get(k) is not None:
            value = meta[k]
            if k in ("labels", "annotations"):
                value = dict(sorted(value.items()))
            elif k == "ownerReferences":
                value = _owner_refs(value, to_crd=True)
            calico[k] = value
    cr_meta: dict[str, Any] = {"name": backend_name or meta.get("name")}
    if info.namespaced and meta.get("namespace"):
        cr_meta["namespace"] = meta["namespace"]
    if meta.get("resourceVersion"):
        cr_meta["resourceVersion"] = meta["resourceVersion"]
    uid = names.convert_uid_or_none(meta.get("uid"))
    if uid:
        cr_meta["uid"] = uid
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if ours(k)}
    if labels:
        cr_meta["labels"] = labels
    annotations = {METADATA_ANNOTATION: json.dumps(calico, separators=(",", ":"))}
    annotations.update({k: v for k, v in (meta.get("annotations") or {}).items() if ours(k) and k != METADATA_ANNOTATION})
    cr_meta["annotations"] = annotations
    body: dict[str, Any] = {
        "apiVersion": crds.API_VERSION,
        "kind": crds.crd_kind(info.kind),
        "metadata": cr_meta,
        "spec": backend_spec(doc.get("spec") or {}, info),
    }
    if doc.get("status") is not None:
        body["status"] = doc["status"]
    return body


def from_cr(obj: dict, kind: str) -> Resource:
    """The Calico resource a custom resource holds (``ConvertK8sResourceToCalicoResource``)."""
    info = codec.kind_info(kind)
    meta = obj.get("metadata") or {}
    annotations = dict(meta.get("annotations") or {})
    calico: dict[str, Any] = {}
    raw = annotations.pop(METADATA_ANNOTATION, None)
    if raw:
        try:
            loaded = json.loads(raw)
            calico = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            log.warning("kdd: %s %s: the %s annotation is not JSON; ignoring it", kind, object_key(obj),
                        METADATA_ANNOTATION)
    labels = dict(meta.get("labels") or {})
    labels.update(calico.get("labels") or {})
    annotations.update(calico.get("annotations") or {})
    out: dict[str, Any] = {}
    for k in META_KEYS:
        if k == "name":
            value = calico.get("name") or meta.get("name")
        elif k == "namespace":
            value = meta.get("namespace") if info.namespaced else None
        elif k == "resourceVersion":
            value = meta.get("resourceVersion")
        elif k == "uid":
            value = names.convert_uid_or_none(meta.get("uid"))
        elif k == "creationTimestamp":
            value = calico.get(k) or meta.get(k)
        elif k == "labels":
            value = labels or None
        elif k == "annotations":
            value = annotations or None
        elif k == "ownerReferences":
            value = _owner_refs(calico.get(k), to_crd=False) or None
        else:
            value = calico.get(k)
        if value is not None:
            out[k] = value
    doc: dict[str, Any] = {"apiVersion": info.api_version, "kind": info.kind, "metadata": out,
                           "spec": obj.get("spec") or {}}
    if obj.get("status") is not None and any(a.name == "status" for a in attrs.fields(info.cls)):
        doc["status"] = obj["status"]
    return _build(doc, info.kind)


# --- Node <- k8s Node -----------------------------------------------------------------------

NODE_ANNOTATIONS = {
    "ipv4_address": "projectcalico.org/IPv4Address",
    "ipv6_address": "projectcalico.org/IPv6Address",
    "ipv4_ipip": "projectcalico.org/IPv4IPIPTunnelAddr",
    "ipv4_vxlan": "projectcalico.org/IPv4VXLANTunnelAddr",
    "vxlan_mac": "projectcalico.org/VXLANTunnelMACAddr",
    "ipv6_vxlan": "projectcalico.org/IPv6VXLANTunnelAddr",
    "vxlan_mac_v6": "projectcalico.org/VXLANTunnelMACAddrV6",
    "as_number": "projectcalico.org/ASNumber",
    "rr_cluster_id": "projectcalico.org/RouteReflectorClusterID",
    "wg_ipv4": "projectcalico.org/IPv4WireguardInterfaceAddr",
    "wg_ipv6": "projectcalico.org/IPv6WireguardInterfaceAddr",
    "wg_key": "projectcalico.org/WireguardPublicKey",
    "wg_key_v6": "projectcalico.org/WireguardPublicKeyV6",
}


def _checked(annotations: dict, which: str, check) -> str | None:
    value = annotations.get(NODE_ANNOTATIONS[which]) or ""
    if not value:
        return None
    try:
        check(value)
    except ValueError:
        log.info("kdd: annotation %s=%s is invalid, ignoring it", NODE_ANNOTATIONS[which], value)
        return None
    return value


def _json_map(text: str | None, what: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        log.warning("kdd: cannot parse the %s annotation; ignoring it", what)
        return {}
    return value if isinstance(value, dict) else {}


def node_to_calico(k8s: dict) -> Resource:
    """``K8sNodeToCalico``: the Calico Node of a Kubernetes Node."""
    meta = k8s.get("metadata") or {}
    ann = meta.get("annotations") or {}
    k8s_labels = meta.get("labels")
    name = meta.get("name", "")
    labels = _json_map(ann.get(LABELS_ANNOTATION), LABELS_ANNOTATION)
    labels.update(k8s_labels or {})
    calico_annotations = _json_map(ann.get(ANNOTATIONS_ANNOTATION), ANNOTATIONS_ANNOTATION)
    # Kept so that a write-back can tell inherited labels from Calico's own.
    calico_annotations[KUBE_LABELS_ANNOTATION] = json.dumps(
        dict(sorted(k8s_labels.items())) if k8s_labels is not None else None, separators=(",", ":"))
    bgp: dict[str, Any] = {}
    for field_name, which, check in (
        ("ipv4Address", "ipv4_address", check_cidr_v4),
        ("ipv6Address", "ipv6_address", check_cidr_v6),
        ("routeReflectorClusterID", "rr_cluster_id", check_ipv4),
        ("ipv4IPIPTunnelAddr", "ipv4_ipip", check_ipv4),
    ):
        value = _checked(ann, which, check)
        if value:
            bgp[field_name] = value
    asn = ann.get(NODE_ANNOTATIONS["as_number"])
    if asn:
        try:
            bgp["asNumber"] = as_number_value(asn)
        except ValueError:
            log.info("kdd: node %s: invalid AS number annotation %r, ignoring it", name, asn)
    spec: dict[str, Any] = {}
    if bgp:
        spec["bgp"] = dict(sorted(bgp.items()))
    for field_name, which, check in (
        ("ipv4VXLANTunnelAddr", "ipv4_vxlan", check_ipv4),
        ("vxlanTunnelMACAddr", "vxlan_mac", check_mac),
        ("ipv6VXLANTunnelAddr", "ipv6_vxlan", check_ipv6),
        ("vxlanTunnelMACAddrV6", "vxlan_mac_v6", check_mac),
    ):
        value = _checked(ann, which, check)
        if value:
            spec[field_name] = value
    spec["orchRefs"] = [{"nodeName": name, "orchestrator": names.ORCHESTRATOR_K8S}]
    wireguard = {}
    for field_name, which, check in (("interfaceIPv4Address", "wg_ipv4", check_ipv4),
                                     ("interfaceIPv6Address", "wg_ipv6", check_ipv6)):
        value = _checked(ann, which, check)
        if value:
            wireguard[field_name] = value
    if wireguard:
        spec["wireguard"] = wireguard
    addresses = [{"address": bgp[k], "type": "CalicoNodeIP"} for k in ("ipv4Address", "ipv6Address") if k in bgp]
    for addr in (k8s.get("status") or {}).get("addresses") or []:
        kind = {"InternalIP": "InternalIP", "ExternalIP": "ExternalIP"}.get(addr.get("type"))
        if kind and addr.get("address"):
            addresses.append({"address": addr["address"], "type": kind})
    if addresses:
        spec["addresses"] = addresses
    status: dict[str, Any] = {}
    if ann.get(NODE_ANNOTATIONS["wg_key"]):
        status["wireguardPublicKey"] = ann[NODE_ANNOTATIONS["wg_key"]]
    if ann.get(NODE_ANNOTATIONS["wg_key_v6"]):
        status["wireguardPublicKeyV6"] = ann[NODE_ANNOTATIONS["wg_key_v6"]]
    pod_cidrs = (k8s.get("spec") or {}).get("podCIDRs")
    if pod_cidrs:
        status["podCIDRs"] = list(pod_cidrs)
    out_meta = {"name": name, "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion"),
                "creationTimestamp": meta.get("creationTimestamp"), "labels": labels or None,
                "annotations": calico_annotations or None}
    doc = {"apiVersion": V3, "kind": "Node", "metadata": {k: v for k, v in out_meta.items() if v is not None},
           "spec": spec}
    if status:
        doc["status"] = status
    return _build(doc, "Node")


def merge_node(node: Resource, k8s: dict) -> dict:
    """``mergeCalicoNodeIntoK8sNode``: ``k8s`` (a copy) carrying ``node``'s Calico
    fields as annotations. The Kubernetes labels are never touched."""
    k8s = json.loads(json.dumps(k8s))
    meta = k8s.setdefault("metadata", {})
    ann = dict(meta.get("annotations") or {})
    labels = dict(node.metadata.labels or {})
    calico_annotations = dict(node.metadata.annotations or {})
    inherited = calico_annotations.pop(KUBE_LABELS_ANNOTATION, None)
    if inherited:
        for k in _json_map(inherited, KUBE_LABELS_ANNOTATION):
            labels.pop(k, None)  # inherited from the k8s Node: not Calico's to store
    for key, value in ((LABELS_ANNOTATION, labels), (ANNOTATIONS_ANNOTATION, calico_annotations)):
        if value:
            ann[key] = json.dumps(dict(sorted(value.items())), separators=(",", ":"))
        else:
            ann.pop(key, None)
    spec, bgp = node.spec, node.spec.bgp
    wireguard = spec.wireguard
    status = node.status
    values = {
        "ipv4_vxlan": spec.ipv4_vxlan_tunnel_addr,
        "vxlan_mac": spec.vxlan_tunnel_mac_addr,
        "ipv6_vxlan": spec.ipv6_vxlan_tunnel_addr,
        "vxlan_mac_v6": spec.vxlan_tunnel_mac_addr_v6,
        "ipv4_address": bgp.ipv4_address if bgp else None,
        "ipv6_address": bgp.ipv6_address if bgp else None,
        "ipv4_ipip": bgp.ipv4_ipip_tunnel_addr if bgp else None,
        "as_number": str(as_number_value(bgp.as_number)) if bgp and bgp.as_number is not None else None,
        "rr_cluster_id": bgp.route_reflector_cluster_id if bgp else None,
        "wg_ipv4": wireguard.interface_ipv4_address if wireguard else None,
        "wg_ipv6": wireguard.interface_ipv6_address if wireguard else None,
        "wg_key": status.wireguard_public_key if status else None,
        "wg_key_v6": status.wireguard_public_key_v6 if status else None,
    }
    for which, value in values.items():
        if value:
            ann[NODE_ANNOTATIONS[which]] = value
        else:
            ann.pop(NODE_ANNOTATIONS[which], None)
    meta["annotations"] = ann
    return k8s


# --- WorkloadEndpoint <- Pod -------------------------------------------------------------

POD_IP_ANNOTATION = "cni.projectcalico.org/podIP"
POD_IPS_ANNOTATION = "cni.projectcalico.org/podIPs"
CONTAINER_ID_ANNOTATION = "cni.projectcalico.org/containerID"
AWS_POD_IPS_ANNOTATION = "vpc.amazonaws.com/pod-ips"
FLOATING_IPS_ANNOTATION = "cni.projectcalico.org/floatingIPs"
SOURCE_PREFIXES_ANNOTATION = "cni.projectcalico.org/allowedSourcePrefixes"


def is_workload_endpoint(pod: dict) -> bool:
    """``IsValidCalicoWorkloadEndpoint``: scheduled to a node and not host-networked."""
    spec = pod.get("spec") or {}
    return bool(spec.get("nodeName")) and not spec.get("hostNetwork")


def is_finished(pod: dict) -> bool:
    """``IsFinished``: the pod no longer owns its IPs."""
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    if meta.get("deletionTimestamp"):
        if ann.get(POD_IP_ANNOTATION, None) == "" or ann.get(AWS_POD_IPS_ANNOTATION, None) == "":
            return True
    return (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded", "Completed")


def _ip_net(text: str) -> str:
    text = text.strip()
    if "/" in text:
        addr, net = parse_cidr(text)
        return f"{addr}/{net.prefixlen}"
    addr = ipaddress.ip_address(text)
    return f"{addr}/{addr.max_prefixlen}"


def pod_ips(pod: dict) -> list[str]:
    """``getPodIPs``: status.podIPs, status.podIP, then Calico's (and AWS's) annotations."""
    status = pod.get("status") or {}
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    if status.get("podIPs"):
        raw = [ip.get("ip", "") for ip in status["podIPs"]]
    elif status.get("podIP"):
        raw = [status["podIP"]]
    elif ann.get(POD_IPS_ANNOTATION):
        raw = ann[POD_IPS_ANNOTATION].split(",")
    elif ann.get(POD_IP_ANNOTATION):
        raw = [ann[POD_IP_ANNOTATION]]
    elif ann.get(AWS_POD_IPS_ANNOTATION):
        raw = ann[AWS_POD_IPS_ANNOTATION].split(",")
    else:
        return []
    return [_ip_net(ip) for ip in raw]


def pod_to_wep(pod: dict) -> Resource | None:
    """``podToDefaultWorkloadEndpoint``, or None for a pod Calico does not show
    (unscheduled or host-networked)."""
    if not is_workload_endpoint(pod):
        return None
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    ann = meta.get("annotations") or {}
    ns, pod_name, node = meta.get("namespace") or "default", meta.get("name", ""), spec["nodeName"]
    sa = spec.get("serviceAccountName") or ""
    try:
        ips = pod_ips(pod)
    except ValueError as exc:
        raise ConversionError(f"pod {ns}/{pod_name}: malformed IP: {exc}") from None
    if is_finished(pod):
        ips = []
    nats = []
    if ann.get(FLOATING_IPS_ANNOTATION) and ips:
        try:
            floating = json.loads(ann[FLOATING_IPS_ANNOTATION])
        except ValueError:
            raise ConversionError(f"pod {ns}/{pod_name}: {FLOATING_IPS_ANNOTATION} is not JSON") from None
        v4 = next((ip.split("/")[0] for ip in ips if ":" not in ip), None)
        v6 = next((ip.split("/")[0] for ip in ips if ":" in ip), None)
        for ip in floating or []:
            internal = v6 if ":" in ip else v4
            if internal:
                nats.append({"internalIP": internal, "externalIP": ip})
    prefixes = []
    if ann.get(SOURCE_PREFIXES_ANNOTATION):
        try:
            prefixes = [str(ipaddress.ip_network(p, strict=False)) for p in json.loads(ann[SOURCE_PREFIXES_ANNOTATION])]
        except (ValueError, TypeError):
            raise ConversionError(f"pod {ns}/{pod_name}: bad {SOURCE_PREFIXES_ANNOTATION} annotation") from None
    ports = endpoint_ports(cp for container in spec.get("containers") or [] for cp in container.get("ports") or [])
    wep_spec: dict[str, Any] = {
        "orchestrator": names.ORCHESTRATOR_K8S,
        "node": node,
        "pod": pod_name,
        "containerID": ann.get(CONTAINER_ID_ANNOTATION) or None,
        "endpoint": names.DEFAULT_ENDPOINT,
        "serviceAccountName": sa or None,
        "ipNetworks": ips or None,
        "ipNATs": nats or None,
        "profiles": workload_profiles(ns, sa),
        "interfaceName": names.veth_name(ns, pod_name),
        "ports": ports or None,
        "allowSpoofedSourcePrefixes": prefixes or None,
    }
    out_meta = {
        "name": names.workload_endpoint_name(node, pod_name),
        "generateName": meta.get("generateName"),
        "namespace": ns,
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
        "creationTimestamp": meta.get("creationTimestamp"),
        "labels": workload_labels(meta.get("labels") or {}, ns, sa),
    }
    doc = {
        "apiVersion": V3,
        "kind": "WorkloadEndpoint",
        "metadata": {k: v for k, v in out_meta.items() if v is not None},
        "spec": {k: v for k, v in wep_spec.items() if v is not None},
    }
    return _build(doc, "WorkloadEndpoint")


def wep_annotations(wep: Resource) -> dict[str, str]:
    """``calcCNIAnnotations``: what the CNI plugin's WEP write patches into the pod."""
    ips = list(wep.spec.ip_networks or ())
    if not ips:
        return {}
    out = {POD_IP_ANNOTATION: ips[0], POD_IPS_ANNOTATION: ",".join(ips)}
    if wep.spec.container_id:
        out[CONTAINER_ID_ANNOTATION] = wep.spec.container_id
    return out


# --- the static profile -------------------------------------------------------------------


def default_allow_profile() -> Resource:
    """The static profile KDD always has (for host endpoints), at resourceVersion "0"."""
    doc = {"apiVersion": V3, "kind": "Profile",
           "metadata": {"name": names.DEFAULT_ALLOW_PROFILE, "resourceVersion": "0"},
           "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}}
    return _build(doc, "Profile")


def with_meta(resource: Resource, **changes: Any) -> Resource:
    with deferred_checks():
        return attrs.evolve(resource, metadata=attrs.evolve(resource.metadata, **changes))
