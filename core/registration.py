"""This node's own Node resource, as calico-node's startup writes it.

Level-based like the reconcilers: every pass compares the Node in the desired state
with what this node says of itself (its name, its IPv4 address and prefix, its AS when
configured) and writes only a difference. Fields owned by others (route reflector
cluster ID, tunnel addresses, labels set by an operator) are kept as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from pycalico.core.calc import DesiredState
from pycalico.core.config import Config
from pycalico.core.datastore import Datastore
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
        from pycalico.core.autodetect import detect
    return str(detect(config.node.ip_autodetection_method).address)


def desired_node(current: Node | None, name: str, address: str | None, as_number: int | None) -> Node:
    node = current or Node(metadata=ObjectMeta(name=name))
    bgp = node.spec.bgp or NodeBGPSpec()
    bgp = attrs.evolve(bgp, ipv4_address=address)
    if as_number is not None:
        bgp = attrs.evolve(bgp, as_number=as_number)
    spec = node.spec or NodeSpec()
    # Calico drops an empty bgp section (policy-only nodes with IP=none).
    return attrs.evolve(node, spec=attrs.evolve(spec, bgp=None if bgp == NodeBGPSpec() else bgp))


def register(state: DesiredState, config: Config, datastore: Datastore, detect: Callable | None = None) -> list[str]:
    """Create or update this node's Node so that it says what this node is; return
    one line per write. Conflict (someone else wrote meanwhile) propagates: the next
    pass sees their write and tries again."""
    current = state.node
    wanted = desired_node(current, state.node_name, node_address(config, detect), config.node.as_number)
    if current is not None and wanted == current:
        return []
    address = wanted.spec.bgp.ipv4_address if wanted.spec.bgp else None
    if current is None:
        datastore.create(wanted)
        return [f"Node {state.node_name} registered with {address or 'no IPv4 address'}"]
    datastore.update(wanted)
    return [f"Node {state.node_name} updated: ipv4Address {address}"]
