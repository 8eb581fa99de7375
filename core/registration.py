"""This node's own Node resource and the cluster's ClusterInformation, as
calico-node's startup writes them.

Level-based like the reconcilers: every pass compares the Node in the desired state
with what this node says of itself (its name, its IPv4 address and prefix, its AS when
configured) and writes only a difference. Fields owned by others (route reflector
cluster ID, tunnel addresses, labels set by an operator) are kept as they are.
ClusterInformation ``default`` gets a cluster GUID once, the running version (what
calicoctl's version-mismatch check compares with) and ``datastoreReady``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import attrs

from pycalico.core.calc import DesiredState
from pycalico.core.config import Config
from pycalico.core.datastore import AlreadyExists, Datastore, OperationNotSupported
from pycalico.core.resources.cluster import ClusterInformation
from pycalico.core.resources.meta import ObjectMeta
from pycalico.core.resources.node import Node, NodeBGPSpec, NodeSpec


def node_address(config: Config, detect: Callable[[str], object] | None = None) -> str | None:
    """``spec.bgp.ipv4Address`` for this node: the configured one, the detected one, or
    None for ``ip = "none"``."""
    ip = config.node.ip
    if ip == "none":
        return None
    if ip != "autodetect":
        return ip
    if detect is None:
        detect = PolledDetect()
    return str(detect(config.node.ip_autodetection_method, config.node.autodetect_poll_seconds).address)


class PolledDetect:
    """Address detection whose answer is kept for ``[node] autodetect_poll_seconds``, as
    calico-node's address monitor re-checks on its poll interval rather than on every
    datastore change. A failed detection is not kept: the next pass tries again."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, detect: Callable | None = None):
        self._clock = clock
        self._detect = detect
        self._kept: tuple[str, float, object] | None = None  # method, when, address

    def __call__(self, method: str, poll_seconds: float) -> object:
        now = self._clock()
        if self._kept is not None:
            kept_method, when, address = self._kept
            if kept_method == method and now - when < poll_seconds:
                return address
        if self._detect is None:
            from pycalico.core.autodetect import detect as found

            self._detect = found
        address = self._detect(method)
        self._kept = (method, now, address)
        return address


def desired_node(current: Node | None, name: str, address: str | None, as_number: int | None) -> Node:
    node = current or Node(metadata=ObjectMeta(name=name))
    bgp = node.spec.bgp or NodeBGPSpec()
    bgp = attrs.evolve(bgp, ipv4_address=address)
    if as_number is not None:
        bgp = attrs.evolve(bgp, as_number=as_number)
    spec = node.spec or NodeSpec()
    # Calico drops an empty bgp section (policy-only nodes with IP=none).
    return attrs.evolve(node, spec=attrs.evolve(spec, bgp=None if bgp == NodeBGPSpec() else bgp))


def desired_cluster_information(current: ClusterInformation | None, config: Config) -> ClusterInformation:
    from pycalico.core.ctl.version import client_version

    info = current or ClusterInformation(metadata=ObjectMeta(name="default"))
    spec = info.spec
    types = [t for t in (spec.cluster_type or "").split(",") if t]
    # Calico's startup adds these to CLUSTER_TYPE for the datastore and the backend.
    for wanted, needed in (("kdd", config.datastore.type == "kubernetes"), ("bgp", config.routing.type == "bird")):
        if needed and wanted not in types:
            types.append(wanted)
    spec = attrs.evolve(
        spec,
        cluster_guid=spec.cluster_guid or uuid.uuid4().hex,
        cluster_type=",".join(types) or None,
        calico_version=client_version(),
        datastore_ready=True if spec.datastore_ready is None else spec.datastore_ready,
    )
    return attrs.evolve(info, spec=spec)


def _cluster_information(state: DesiredState, config: Config, datastore: Datastore) -> list[str]:
    current = next(iter(state.of_kind("ClusterInformation")), None)
    wanted = desired_cluster_information(current, config)
    if current is not None and wanted == current:
        return []
    if current is None:
        try:
            datastore.create(wanted)
        except AlreadyExists:  # another node's first pass won: the next pass sees it
            return []
    else:
        datastore.update(wanted)
    return [f"ClusterInformation default: calicoVersion {wanted.spec.calico_version}"]


def register(state: DesiredState, config: Config, datastore: Datastore, detect: Callable | None = None) -> list[str]:
    """Create or update this node's Node so that it says what this node is; return
    one line per write. Conflict (someone else wrote meanwhile) propagates: the next
    pass sees their write and tries again. A read-only datastore (writes raise
    OperationNotSupported) keeps no records of nodes: nothing to do."""
    try:
        return _register(state, config, datastore, detect)
    except OperationNotSupported:
        return []


def _register(state: DesiredState, config: Config, datastore: Datastore, detect: Callable | None) -> list[str]:
    lines = _cluster_information(state, config, datastore)
    current = state.node
    wanted = desired_node(current, state.node_name, node_address(config, detect), config.node.as_number)
    if current is not None and wanted == current:
        return lines
    address = wanted.spec.bgp.ipv4_address if wanted.spec.bgp else None
    if current is None:
        datastore.create(wanted)
        return [*lines, f"Node {state.node_name} registered with {address or 'no IPv4 address'}"]
    datastore.update(wanted)
    return [*lines, f"Node {state.node_name} updated: ipv4Address {address}"]
