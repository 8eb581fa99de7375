"""The projectcalico.org/v3 resources as typed attrs classes, and their manifests.

Modules: ``meta`` (ObjectMeta, the Resource base), ``types`` (ports, protocols, AS
numbers, durations and the value checks), ``ippool``, ``bgp``, ``node``, ``endpoints``,
``policy``, ``felix``, ``cluster``, ``nodestatus``, ``ipam`` (with the etcd forms),
``codec`` (the kinds registry, load and dump) and ``base`` (the field/check machinery).
"""

from pycalico.core.resources.base import ResourceError
from pycalico.core.resources.bgp import BGPConfiguration, BGPPeer
from pycalico.core.resources.cluster import ClusterInformation, KubeControllersConfiguration
from pycalico.core.resources.codec import (
    KINDS,
    KindInfo,
    dump_resources,
    from_dict,
    kind_info,
    known_kinds,
    load_resource,
    load_resources,
    to_dict,
)
from pycalico.core.resources.endpoints import HostEndpoint, WorkloadEndpoint
from pycalico.core.resources.felix import FelixConfiguration
from pycalico.core.resources.ipam import BlockAffinity, IPAMBlock, IPAMConfig, IPAMHandle
from pycalico.core.resources.ippool import IPPool, IPReservation
from pycalico.core.resources.meta import ObjectMeta, Resource
from pycalico.core.resources.node import Node
from pycalico.core.resources.nodestatus import CalicoNodeStatus
from pycalico.core.resources.policy import (
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    NetworkPolicy,
    NetworkSet,
    Profile,
    Tier,
)

__all__ = [
    "KINDS",
    "BGPConfiguration",
    "BGPPeer",
    "BlockAffinity",
    "CalicoNodeStatus",
    "ClusterInformation",
    "FelixConfiguration",
    "GlobalNetworkPolicy",
    "GlobalNetworkSet",
    "HostEndpoint",
    "IPAMBlock",
    "IPAMConfig",
    "IPAMHandle",
    "IPPool",
    "IPReservation",
    "KindInfo",
    "KubeControllersConfiguration",
    "NetworkPolicy",
    "NetworkSet",
    "Node",
    "ObjectMeta",
    "Profile",
    "Resource",
    "ResourceError",
    "Tier",
    "WorkloadEndpoint",
    "dump_resources",
    "from_dict",
    "kind_info",
    "known_kinds",
    "load_resource",
    "load_resources",
    "to_dict",
]
