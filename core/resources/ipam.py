"""The IPAM records: IPAMBlock, BlockAffinity, IPAMHandle, IPAMConfig.

Two forms each. As resources they follow the CRD specs (``crd.projectcalico.org/v1``,
``libcalico-go/lib/apis/internalapi/``); ``to_etcd()`` / ``from_etcd()`` convert to and
from the JSON value Calico keeps under ``/calico/ipam/v2/...`` in etcd
(``libcalico-go/lib/backend/model/block.go``, ``block_affinity.go``, ``ipam_handle.go``,
``ipam_config.go``), whose keys are partly snake_case (``handle_id``, ``strict_affinity``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from pycalico.core.resources.base import ResourceError, field, model
from pycalico.core.resources.meta import CRD_V1, V3, ObjectMeta, Resource
from pycalico.core.resources.types import check_cidr, parse_cidr
from pycalico.core.schema import check, in_range, matches, one_of, validated

PREFIX = "/calico/ipam/v2"
AFFINITY_STATES = ("confirmed", "pending", "pendingDeletion")
# Attribute keys Calico writes on allocations, and the tunnel types.
ATTR_POD, ATTR_NAMESPACE, ATTR_NODE, ATTR_TYPE = "pod", "namespace", "node", "type"
ATTR_TIMESTAMP, ATTR_SERVICE = "timestamp", "service"
TUNNEL_TYPES = (
    "ipipTunnelAddress",
    "vxlanTunnelAddress",
    "vxlanV6TunnelAddress",
    "wireguardTunnelAddress",
    "wireguardV6TunnelAddress",
)


def cidr_name(cidr: str) -> str:
    """A CIDR as a resource name: ``10.0.0.0/26`` -> ``10-0-0-0-26``."""
    return re.sub(r"[.:/]", "-", cidr)


def _cidr_key(cidr: str) -> tuple[int, str]:
    """(IP version, ``10.0.0.0-26``): the CIDR as it appears in an etcd key."""
    net = ipaddress.ip_network(cidr, strict=False)
    return net.version, str(net).replace("/", "-", 1)


def _json_value(value: Any, what: str) -> dict:
    if isinstance(value, (bytes, bytearray)):
        value = value.decode()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ResourceError([f"{what}: invalid JSON: {exc}"]) from None
    if not isinstance(value, dict):
        raise ResourceError([f"{what}: expected a JSON object, got {type(value).__name__}"])
    return value


def _expect(data: dict, what: str, keys: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ResourceError([f"{what}: unknown key {k!r}; valid keys: {', '.join(keys)}" for k in unknown])


def _load(cls: type, data: dict, what: str) -> Any:
    """Structure and validate an etcd value converted to its resource document."""
    from pycalico.core.resources.codec import from_dict  # the codec imports this module

    resource = from_dict(data, source=what)
    assert isinstance(resource, cls)
    return resource


# --- IPAMBlock ------------------------------------------------------------------------


@model
class AllocationAttribute:
    """Who holds an allocation: the handle and the owner's attributes (pod, namespace, node...)."""

    handle: str | None = field(key="handle_id")
    secondary: dict[str, str] | None = field()
    alternate_owner_attrs: dict[str, str] | None = field()
    alternate: dict[str, str] | None = field()  # the same, as older CRDs name it
    released_at: str | None = field()


@model
class IPAMBlockSpec:
    cidr: str | None = field(validated(check_cidr))
    affinity: str | None = field(
        matches(r"(host|virtual):[a-zA-Z0-9.\-_]+", "of the form host:<name> or virtual:<name>")
    )
    affinity_claim_time: str | None = field()
    allocations: tuple[int | None, ...] | None = field()
    unallocated: tuple[int, ...] | None = field()
    attributes: tuple[AllocationAttribute, ...] | None = field()
    sequence_number: int | None = field(in_range(0, 2**64 - 1))
    sequence_number_for_allocation: dict[str, int] | None = field()
    deleted: bool | None = field()
    strict_affinity: bool | None = field()  # deprecated, unused

    def _checks(self):
        if not self.cidr:
            yield "cidr", "is required"
            return
        try:
            net = parse_cidr(self.cidr)[1]
        except ValueError:
            return
        size = net.num_addresses
        if self.allocations is not None and len(self.allocations) != size:
            yield "allocations", f"must have one entry per address of {net} ({size}), got {len(self.allocations)}"
        attrs_count = len(self.attributes or ())
        for i, index in enumerate(self.allocations or ()):
            if index is not None and not 0 <= index < attrs_count:
                yield f"allocations[{i}]", f"attribute index {index} is out of range (there are {attrs_count})"
        for i, ordinal in enumerate(self.unallocated or ()):
            if not 0 <= ordinal < size:
                yield f"unallocated[{i}]", f"ordinal {ordinal} is outside {net}"


@model
class IPAMBlock(Resource):
    KIND = "IPAMBlock"
    PLURAL = "ipamblocks"
    API_VERSIONS = (CRD_V1, V3)

    spec: IPAMBlockSpec = field(factory=IPAMBlockSpec)

    @classmethod
    def new(cls, cidr: str, affinity: str | None = None, sequence_number: int = 0) -> IPAMBlock:
        """An empty block: every ordinal free, in order, as Calico creates one."""
        net = ipaddress.ip_network(cidr)
        size = net.num_addresses
        spec = IPAMBlockSpec(
            cidr=str(net),
            affinity=affinity,
            allocations=(None,) * size,
            unallocated=tuple(range(size)),
            attributes=(),
            sequence_number=sequence_number,
            sequence_number_for_allocation={},
            deleted=False,
        )
        return cls(metadata=ObjectMeta(name=cidr_name(str(net))), spec=spec)

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return parse_cidr(self.spec.cidr or "")[1]

    @property
    def host(self) -> str | None:
        """The node this block is affine to (``host:<node>``), if any."""
        a = self.spec.affinity
        return a[len("host:") :] if a and a.startswith("host:") else None

    def ip(self, ordinal: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return self.network.network_address + ordinal

    def ordinal(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
        addr = ipaddress.ip_address(ip)
        if addr not in self.network:
            raise ValueError(f"{addr} is not in block {self.network}")
        return int(addr) - int(self.network.network_address)

    def etcd_key(self) -> str:
        version, text = _cidr_key(self.spec.cidr or "")
        return f"{PREFIX}/assignment/ipv{version}/block/{text}"

    def to_etcd(self) -> dict:
        """The etcd value (``model.AllocationBlock``), as Calico's json.Marshal writes it."""
        s = self.spec
        value: dict[str, Any] = {"cidr": s.cidr, "affinity": s.affinity}
        if s.affinity_claim_time is not None:
            value["affinity_claim_time"] = s.affinity_claim_time
        value["allocations"] = list(s.allocations or ())
        value["unallocated"] = list(s.unallocated or ())
        value["attributes"] = [_attribute_to_etcd(a) for a in s.attributes or ()]
        value["sequenceNumber"] = s.sequence_number or 0
        value["sequenceNumberForAllocation"] = (
            dict(s.sequence_number_for_allocation) if s.sequence_number_for_allocation is not None else None
        )
        value["deleted"] = bool(s.deleted)
        if s.strict_affinity is not None:
            value["strictAffinity"] = s.strict_affinity
        return value

    @classmethod
    def from_etcd(cls, value: Any, key: str | None = None) -> IPAMBlock:
        """The block stored as ``value`` (JSON text or its dict) under ``key``."""
        data = _json_value(value, key or "IPAMBlock")
        what = key or "IPAMBlock"
        _expect(data, what, _BLOCK_KEYS)
        affinity = data.get("affinity")
        if affinity is None and data.get("hostAffinity"):
            affinity = f"host:{data['hostAffinity']}"  # the legacy field
        attributes = []
        for i, a in enumerate(data.get("attributes") or []):
            _expect(a, f"{what}: attributes[{i}]", _ATTRIBUTE_KEYS)
            attributes.append(
                {
                    "handle_id": a.get("handle_id"),
                    "secondary": a.get("secondary"),
                    "alternateOwnerAttrs": a.get("alternateOwnerAttrs"),
                    "releasedAt": a.get("releasedAt"),
                }
            )
        spec = {
            "cidr": data.get("cidr"),
            "affinity": affinity,
            "affinityClaimTime": data.get("affinity_claim_time"),
            "allocations": data.get("allocations"),
            "unallocated": data.get("unallocated"),
            "attributes": attributes,
            "sequenceNumber": data.get("sequenceNumber"),
            "sequenceNumberForAllocation": data.get("sequenceNumberForAllocation"),
            "deleted": data.get("deleted"),
            "strictAffinity": data.get("strictAffinity"),
        }
        cidr = data.get("cidr") or ""
        doc = {
            "apiVersion": CRD_V1,
            "kind": "IPAMBlock",
            "metadata": {"name": cidr_name(cidr)},
            "spec": _drop_none(spec),
        }
        return _load(cls, doc, what)


_BLOCK_KEYS = (
    "cidr",
    "affinity",
    "affinity_claim_time",
    "allocations",
    "unallocated",
    "attributes",
    "sequenceNumber",
    "sequenceNumberForAllocation",
    "deleted",
    "hostAffinity",
    "strictAffinity",
)
_ATTRIBUTE_KEYS = ("handle_id", "secondary", "alternateOwnerAttrs", "releasedAt")


def _attribute_to_etcd(a: AllocationAttribute) -> dict:
    out: dict[str, Any] = {"handle_id": a.handle, "secondary": a.secondary}
    owner = a.alternate_owner_attrs if a.alternate_owner_attrs is not None else a.alternate
    if owner is not None:
        out["alternateOwnerAttrs"] = owner
    if a.released_at is not None:
        out["releasedAt"] = a.released_at
    return out


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


# --- BlockAffinity --------------------------------------------------------------------

_AFFINITY_KEY = re.compile(r"/?calico/ipam/v2/(host|virtual)/([^/]+)/ipv([46])/block/([^/]+)")


@model
class BlockAffinitySpec:
    state: str | None = field(one_of(*AFFINITY_STATES))
    node: str | None = field()
    type: str | None = field()
    cidr: str | None = field(validated(check_cidr))
    deleted: str | None = field(one_of("true", "false"))  # a string in the CRD, for old releases

    def _checks(self):
        for name in ("state", "node", "cidr"):
            if not getattr(self, name):
                yield name, "is required"
        if self.deleted == "true":
            yield "deleted", 'cannot be set to "true"'


@model
class BlockAffinity(Resource):
    KIND = "BlockAffinity"
    PLURAL = "blockaffinities"

    spec: BlockAffinitySpec = field(factory=BlockAffinitySpec)

    @staticmethod
    def name_for(node: str, cidr: str) -> str:
        """Calico's resource name for the affinity of ``cidr`` to ``node``: ``<node>-<cidr-name>``."""
        return f"{node}-{cidr_name(cidr)}"

    def etcd_key(self) -> str:
        version, text = _cidr_key(self.spec.cidr or "")
        kind = self.spec.type or "host"
        return f"{PREFIX}/{kind}/{self.spec.node}/ipv{version}/block/{text}"

    def to_etcd(self) -> dict:
        """The etcd value (``model.BlockAffinity``): ``{"state": ..., "deleted": ...}``."""
        return {"state": self.spec.state or "", "deleted": self.spec.deleted == "true"}

    @classmethod
    def from_etcd(cls, value: Any, key: str) -> BlockAffinity:
        """The affinity stored as ``value`` under ``key`` (which names the node and block)."""
        m = _AFFINITY_KEY.fullmatch(key)
        if not m:
            raise ResourceError([f"{key}: not a block affinity key ({PREFIX}/host/<node>/ipv4/block/<cidr>)"])
        kind, node, _version, cidr_text = m.groups()
        cidr = _undash(cidr_text)
        data = _json_value(value, key)
        _expect(data, key, ("state", "deleted"))
        spec = {"state": data.get("state"), "node": node, "type": kind, "cidr": cidr}
        if "deleted" in data:
            spec["deleted"] = "true" if data["deleted"] else "false"
        doc = {"apiVersion": V3, "kind": "BlockAffinity", "metadata": {"name": cls.name_for(node, cidr)}, "spec": spec}
        return _load(cls, doc, key)


def _undash(text: str) -> str:
    """``fd00::-122`` -> ``fd00::/122``: only the last dash of an etcd CIDR is the slash."""
    head, _, prefix = text.rpartition("-")
    return f"{head}/{prefix}"


# --- IPAMHandle -----------------------------------------------------------------------

_HANDLE_KEY = re.compile(r"/?calico/ipam/v2/handle/([^/]+)")


@model
class IPAMHandleSpec:
    handle_id: str | None = field(key="handleID")
    block: dict[str, int] | None = field()
    deleted: bool | None = field()

    def _checks(self):
        if not self.handle_id:
            yield "handleID", "is required"
        for cidr, count in (self.block or {}).items():
            try:
                check_cidr(cidr)
            except ValueError as exc:
                yield f"block.{cidr}", str(exc)
            if count < 0:
                yield f"block.{cidr}", f"count must not be negative, got {count}"


@model
class IPAMHandle(Resource):
    KIND = "IPAMHandle"
    PLURAL = "ipamhandles"
    API_VERSIONS = (CRD_V1, V3)

    spec: IPAMHandleSpec = field(factory=IPAMHandleSpec)

    def _name_problem(self, name: str) -> str | None:
        return None  # handle IDs (e.g. "k8s-pod-network.<container ID>") are used as they are

    def etcd_key(self) -> str:
        return f"{PREFIX}/handle/{self.spec.handle_id}"

    def to_etcd(self) -> dict:
        """The etcd value (``model.IPAMHandle``): ``{"block": {cidr: count}, "deleted": ...}``."""
        return {"block": dict(self.spec.block or {}), "deleted": bool(self.spec.deleted)}

    @classmethod
    def from_etcd(cls, value: Any, key: str) -> IPAMHandle:
        m = _HANDLE_KEY.fullmatch(key)
        if not m:
            raise ResourceError([f"{key}: not an IPAM handle key ({PREFIX}/handle/<id>)"])
        data = _json_value(value, key)
        _expect(data, key, ("block", "deleted"))
        spec = {"handleID": m[1], "block": data.get("block") or {}}
        if "deleted" in data:
            spec["deleted"] = data["deleted"]
        doc = {"apiVersion": CRD_V1, "kind": "IPAMHandle", "metadata": {"name": m[1]}, "spec": spec}
        return _load(cls, doc, key)


# --- IPAMConfig -----------------------------------------------------------------------

CONFIG_KEY = f"{PREFIX}/config"
DEFAULT_MAX_BLOCKS_PER_HOST = 20  # what maxBlocksPerHost 0 means to the allocator


@model
class IPAMConfigSpec:
    strict_affinity: bool | None = field()
    auto_allocate_blocks: bool | None = field()
    max_blocks_per_host: int | None = field(in_range(0, 2147483647))
    kube_virt_vm_address_persistence: str | None = field(
        one_of("Enabled", "Disabled"), key="kubeVirtVMAddressPersistence"
    )
    ip_cooldown_seconds: int | None = field(check(lambda v: 0 <= v <= 1200, "must be between 0 and 1200, got {value}"))

    def _checks(self):
        if not self.strict_affinity and not self.auto_allocate_blocks:
            yield "autoAllocateBlocks", "cannot be false when strictAffinity is false"
        if self.max_blocks_per_host and not self.strict_affinity:
            yield "maxBlocksPerHost", "can only be set when strictAffinity is true"


@model
class IPAMConfig(Resource):
    """IPAM settings; ``IPAMConfiguration`` in projectcalico.org/v3, ``IPAMConfig`` in the CRD."""

    KIND = "IPAMConfiguration"
    KINDS = ("IPAMConfiguration", "IPAMConfig")
    PLURAL = "ipamconfigs"

    spec: IPAMConfigSpec = field(factory=IPAMConfigSpec)

    @classmethod
    def default(cls) -> IPAMConfig:
        """What IPAM uses while no configuration is stored."""
        return cls(
            metadata=ObjectMeta(name="default"), spec=IPAMConfigSpec(strict_affinity=False, auto_allocate_blocks=True)
        )

    @property
    def max_blocks(self) -> int:
        return self.spec.max_blocks_per_host or DEFAULT_MAX_BLOCKS_PER_HOST

    def etcd_key(self) -> str:
        return CONFIG_KEY

    def to_etcd(self) -> dict:
        """The etcd value (``model.IPAMConfig``); like Go's omitempty, zero values are left out."""
        s = self.spec
        value: dict[str, Any] = {}
        if s.strict_affinity:
            value["strict_affinity"] = True
        if s.auto_allocate_blocks:
            value["auto_allocate_blocks"] = True
        if s.max_blocks_per_host:
            value["maxBlocksPerHost"] = s.max_blocks_per_host
        if s.ip_cooldown_seconds:
            value["ipCooldownSeconds"] = s.ip_cooldown_seconds
        if s.kube_virt_vm_address_persistence:
            value["kubeVirtVMAddressPersistence"] = s.kube_virt_vm_address_persistence
        return value

    @classmethod
    def from_etcd(cls, value: Any, key: str = CONFIG_KEY) -> IPAMConfig:
        data = _json_value(value, key)
        _expect(
            data,
            key,
            (
                "strict_affinity",
                "auto_allocate_blocks",
                "maxBlocksPerHost",
                "ipCooldownSeconds",
                "kubeVirtVMAddressPersistence",
            ),
        )
        spec = {
            "strictAffinity": bool(data.get("strict_affinity", False)),
            "autoAllocateBlocks": bool(data.get("auto_allocate_blocks", False)),
            "maxBlocksPerHost": data.get("maxBlocksPerHost"),
            "ipCooldownSeconds": data.get("ipCooldownSeconds"),
            "kubeVirtVMAddressPersistence": data.get("kubeVirtVMAddressPersistence"),
        }
        doc = {"apiVersion": V3, "kind": "IPAMConfiguration", "metadata": {"name": "default"}, "spec": _drop_none(spec)}
        return _load(cls, doc, key)
