"""BGP in the lab: route reflectors, and each node's sessions and BIRD routes.

``calico-lab up --routing bird --route-reflectors N`` sets the cluster up as Calico's
documentation does ("Configure a node to act as a route reflector"): the first N nodes
get ``routeReflectorClusterID`` 244.0.0.1 and the label ``route-reflector=true``, the
BGPPeer ``peer-with-route-reflectors`` peers every node with them, and then the
BGPConfiguration ``default`` turns the node-to-node mesh off (in that order, so routes
never go missing between the two topologies).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from .cluster import Lab
from .state import LabError, NodeRecord

RR_CLUSTER_ID = "244.0.0.1"
RR_LABEL = "route-reflector"
RR_PEER = "peer-with-route-reflectors"
CAS_TRIES = 20  # calico-node rewrites its Node every pass; retry a write that lost the race


def setup_route_reflectors(lab: Lab, count: int) -> list[str]:
    """Make the first ``count`` nodes route reflectors and turn the mesh off; the
    reflectors' names. Needs the nodes registered (their agents running)."""
    if not 1 <= count <= len(lab.nodes):
        raise LabError(f"--route-reflectors must be between 1 and the number of nodes ({len(lab.nodes)}), not {count}")
    from .pods import with_datastore

    reflectors = [n.name for n in lab.nodes[:count]]

    def configure(ds: Any) -> None:
        from pycalico.core.resources import load_resources

        for name in reflectors:
            _make_reflector(ds, name)
        _create_or_replace(ds, load_resources(
            f"apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: {RR_PEER}}}\n"
            f"spec: {{nodeSelector: all(), peerSelector: {RR_LABEL} == 'true'}}\n")[0])
        _create_or_replace(ds, load_resources(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n"
            "spec: {nodeToNodeMeshEnabled: false}\n")[0])

    with_datastore(lab, lab.nodes[0], configure)
    return reflectors


def _make_reflector(ds: Any, name: str) -> None:
    from pycalico.core.datastore import Conflict

    for _ in range(CAS_TRIES):
        node = ds.get("Node", name)
        labels = {**(node.metadata.labels or {}), RR_LABEL: "true"}
        bgp = attrs.evolve(node.spec.bgp, route_reflector_cluster_id=RR_CLUSTER_ID)
        try:
            ds.update(attrs.evolve(node, metadata=attrs.evolve(node.metadata, labels=labels),
                                   spec=attrs.evolve(node.spec, bgp=bgp)))
            return
        except Conflict:
            continue
    raise LabError(f"could not update Node {name}: it kept changing under us")


def _create_or_replace(ds: Any, resource: Any) -> None:
    from pycalico.core.datastore import NotFound

    try:
        current = ds.get(resource.kind, resource.metadata.name)
    except NotFound:
        ds.create(resource)
        return
    ds.update(attrs.evolve(current, spec=resource.spec))


def node_bgp(lab: Lab, node: NodeRecord) -> dict:
    """One node's BGP sessions (as ``calicoctl node status`` lists them) and the
    routes BIRD put in its kernel."""
    from pycalico.core.ctl import node as ctl_node
    from pycalico.plugins.routing.bird import control

    from . import netns

    socket = ctl_node.socket_of(Path(node.config_path))
    out: dict = {"sessions": [], "routes": [], "error": None}
    try:
        rows = ctl_node.peers(netns.run_in_netns(node.netns, lambda: control.protocols(socket), timeout=10))
        out["sessions"] = [dict(zip(("peer", "type", "state", "since", "info"), r)) for r in rows]
    except control.BirdError as exc:
        out["error"] = str(exc)
    res = lab.exec(node, ["ip", "-j", "route", "show", "proto", "bird"], capture_output=True, text=True)
    for route in json.loads(res.stdout or "[]") if res.returncode == 0 else []:
        out["routes"].append({"dst": route["dst"], "via": route.get("gateway"), "type": route.get("type", "unicast")})
    return out


def status(lab: Lab) -> dict[str, dict]:
    """:func:`node_bgp` of every node whose namespace exists."""
    from . import netns

    return {n.name: node_bgp(lab, n) for n in lab.nodes if netns.exists(n.netns)}


def format_status(bgp: dict[str, dict]) -> list[str]:
    """The ``bgp:`` section of ``calico-lab status``."""
    lines = ["bgp:"]
    for name, info in bgp.items():
        if info["error"]:
            lines.append(f"  {name:<8} BIRD: {info['error']}")
            continue
        up = sum(1 for s in info["sessions"] if s["info"].startswith("Established"))
        lines.append(f"  {name:<8} {up} of {len(info['sessions'])} sessions Established")
        lines += [f"           {s['peer']:<15} {s['type']:<17} {s['state']:<5} {s['info']}" for s in info["sessions"]]
        lines += [
            f"           route {r['dst']:<18} " + ("blackhole" if r["type"] == "blackhole" else f"via {r['via']}")
            for r in info["routes"]
        ]
    return lines
