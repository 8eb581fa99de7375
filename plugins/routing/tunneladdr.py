"""This node's tunnel address on its Node, allocated from IPAM.

calico-node's ``allocate-tunnel-addrs`` (``node/pkg/allocateip/allocateip.go``) for one
encapsulation: while an enabled IPv4 pool of that encapsulation (mode Always or
CrossSubnet) allows tunnel addresses and selects this node, the node holds one address
of such a pool, assigned from IPAM with handle ``<kind>-tunnel-addr-<node>`` and
attributes ``node=<node>``, ``type=<kind>TunnelAddress``, and recorded on the Node
(``ipv4VXLANTunnelAddr``, ``bgp.ipv4IPIPTunnelAddr``). An address that is no longer
ours, no longer assigned or in a pool that no longer qualifies is replaced; when no pool
qualifies, the address is released and taken off the Node.

Level-based and cheap when nothing is to be done: whether the recorded address is
still assigned to our handle is read from the IPAM blocks of the desired state, so a
pass that changes nothing makes no datastore request. Writes go through the IPAM and a
compare-and-swap update of the Node read fresh from the datastore.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import attrs

from pycalico.core import selector
from pycalico.core.datastore import Conflict
from pycalico.core.resources.node import NodeBGPSpec, NodeSpec

from .routes import NEVER, pool_mode, pool_network

log = logging.getLogger(__name__)
CAS_RETRIES = 5

SpecEdit = Callable[[NodeSpec], NodeSpec]


@attrs.frozen
class TunnelKind:
    """One encapsulation's tunnel address: its IPAM handle and type, the pool field
    that enables it, and where the Node keeps it."""

    handle_prefix: str
    attr_type: str
    mode_field: str
    field: str  # its name on the Node, for the report lines
    get: Callable[[NodeSpec], str | None]
    put: Callable[[NodeSpec, str | None], NodeSpec]

    def handle(self, node: str) -> str:
        return f"{self.handle_prefix}{node}"


def _put_ipip(spec: NodeSpec, addr: str | None) -> NodeSpec:
    bgp = attrs.evolve(spec.bgp or NodeBGPSpec(), ipv4_ipip_tunnel_addr=addr)
    # A Node's bgp section must not be empty: drop it when the address was all it held.
    return attrs.evolve(spec, bgp=None if bgp == NodeBGPSpec() else bgp)


VXLAN = TunnelKind(
    handle_prefix="vxlan-tunnel-addr-",
    attr_type="vxlanTunnelAddress",
    mode_field="vxlan_mode",
    field="ipv4VXLANTunnelAddr",
    get=lambda spec: spec.ipv4_vxlan_tunnel_addr,
    put=lambda spec, addr: attrs.evolve(spec, ipv4_vxlan_tunnel_addr=addr),
)
IPIP = TunnelKind(
    handle_prefix="ipip-tunnel-addr-",
    attr_type="ipipTunnelAddress",
    mode_field="ipip_mode",
    field="bgp.ipv4IPIPTunnelAddr",
    get=lambda spec: spec.bgp.ipv4_ipip_tunnel_addr if spec.bgp else None,
    put=_put_ipip,
)


def tunnel_pools(state: Any, node: Any, kind: TunnelKind) -> list[Any]:
    """The pools this node may take its tunnel address from (Calico's
    determineEnabledPoolCIDRs), by name."""
    labels = dict(node.metadata.labels or {})
    out = []
    for pool in state.of_kind("IPPool"):
        net = pool_network(pool)
        spec = pool.spec
        if net is None or net.version != 4 or spec.disabled or pool_mode(pool, kind.mode_field) == NEVER:
            continue
        if "Tunnel" not in (spec.allowed_uses or ("Workload", "Tunnel")):
            continue
        if spec.node_selector and not selector.parse(spec.node_selector).evaluate(labels):
            continue
        out.append(pool)
    return sorted(out, key=lambda p: p.name)


def holder(state: Any, addr: str) -> tuple[str | None, dict[str, str]] | None:
    """Who holds ``addr`` according to the synced IPAM blocks: (handle, attributes),
    or None if it is free, cooling down or in no block."""
    ip = ipaddress.ip_address(addr)
    for block in state.of_kind("IPAMBlock"):
        try:
            net = ipaddress.ip_network(block.spec.cidr or "")
        except ValueError:
            continue
        if ip.version != net.version or ip not in net:
            continue
        allocations = block.spec.allocations or ()
        ordinal = int(ip) - int(net.network_address)
        index = allocations[ordinal] if ordinal < len(allocations) else None
        attributes = block.spec.attributes or ()
        if index is None or index >= len(attributes) or attributes[index].released_at:
            return None
        return attributes[index].handle, dict(attributes[index].secondary or {})
    return None


def reconcile(state: Any, datastore: Any, ipam: Any, kind: TunnelKind, edit: SpecEdit | None = None) -> list[str]:
    """Give this node's Node the tunnel address of ``kind`` that its pools call for;
    ``edit`` makes any further change the plugin wants on the Node (a VTEP MAC). One
    line per write. Without an IPAM (ipam slot ``none``) no address is assigned or
    released."""
    node = state.node
    if node is None:
        return []  # core registers the Node first; the next pass has it
    handle = kind.handle(state.node_name)
    pools = tunnel_pools(state, node, kind)
    current = kind.get(node.spec)
    held = holder(state, current) if current else None
    ours = held is not None and held[0] == handle and held[1].get("type") == kind.attr_type
    keep = ours and any(ipaddress.ip_address(current) in pool_network(p) for p in pools)
    # Calico releases by handle before assigning anew, unless the recorded address now
    # belongs to someone else; and releases it when no pool wants a tunnel address.
    has_handle = any(h.spec.handle_id == handle and not h.spec.deleted for h in state.of_kind("IPAMHandle"))
    release = has_handle and not keep and (held is None or ours or not pools)
    assign = bool(pools) and not keep
    if assign and ipam is None:
        log.warning("%s: no IPAM (ipam type none), so no tunnel address for pools %s",
                    kind.field, ", ".join(p.name for p in pools))
    if ipam is None:
        release = assign = False
    wanted = current if keep else None
    if not release and not assign and _edited(kind.put(node.spec, wanted), edit) == node.spec:
        return []
    lines: list[str] = []
    if release:
        lines += [f"IPAM {ip} released from {handle}" for ip in ipam.release_by_handle(handle)]
    if assign:
        got = ipam.auto_assign(handle, {"node": state.node_name, "type": kind.attr_type}, num_v4=1,
                               pools=[p.name for p in pools], use="Tunnel")
        wanted = str(got.v4[0].ip)
        lines.append(f"IPAM {wanted} assigned to {handle}")
    try:
        lines += _write_node(datastore, state.node_name, lambda s: _edited(kind.put(s, wanted), edit), kind)
    except BaseException:
        if assign:
            # As Calico does: an address the Node never got is given back at once.
            ipam.release_by_handle(handle)
        raise
    return lines


def _edited(spec: NodeSpec, edit: SpecEdit | None) -> NodeSpec:
    return edit(spec) if edit is not None else spec


def _write_node(datastore: Any, name: str, change: SpecEdit, kind: TunnelKind) -> list[str]:
    """Apply ``change`` to the stored Node with compare-and-swap, reading it again
    after a conflict (core or another writer got there first)."""
    for attempt in range(CAS_RETRIES):
        stored = datastore.get("Node", name)
        spec = change(stored.spec)
        if spec == stored.spec:
            return []
        try:
            datastore.update(attrs.evolve(stored, spec=spec))
        except Conflict:
            if attempt == CAS_RETRIES - 1:
                raise
            continue
        return [f"Node {name} {line}" for line in _differences(stored.spec, spec, kind)]
    return []


def _differences(old: NodeSpec, new: NodeSpec, kind: TunnelKind) -> list[str]:
    out = []
    if kind.get(old) != kind.get(new):
        out.append(f"{kind.field} {kind.get(new) or '(removed)'}")
    if old.vxlan_tunnel_mac_addr != new.vxlan_tunnel_mac_addr:
        out.append(f"vxlanTunnelMACAddr {new.vxlan_tunnel_mac_addr or '(removed)'}")
    return out
