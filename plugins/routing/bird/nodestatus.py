"""A CalicoNodeStatus read from BIRD's control socket, as calico-node's status reporter
reads it (``node/pkg/status/populators/``): ``show status`` for the daemon (class
``Agent``), ``show protocols all`` for Calico's BGP sessions (``BGP``), ``show route``
for the routes BIRD knows (``Routes``).

One BIRD 2 serves both address families (as one BIRD 3 does in current Calico), so
``birdV4`` and ``birdV6`` are that daemon's status alike; a session goes to ``peersV4``
or ``peersV6`` by its neighbor's address, a route to ``routesV4`` or ``routesV6`` by its
destination. A BIRD that accepts no connection is what Calico reports when BGP is off:
both daemons ``NotReady``, no sessions, no routes.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

import attrs

from pycalico.core.ctl.node import PEER_NAME, peer_address
from pycalico.core.resources.nodestatus import (
    AGENT,
    BGP,
    FIB,
    NO_BGP_DAEMON,
    NO_GATEWAY,
    PEER_TYPES,
    READY,
    RIB,
    ROUTES,
    SESSION_STATES,
    BGPDaemonStatus,
    CalicoNodeAgentStatus,
    CalicoNodeBGPRouteStatus,
    CalicoNodeBGPStatus,
    CalicoNodePeer,
    CalicoNodeRoute,
    CalicoNodeRouteLearnedFrom,
    CalicoNodeStatusStatus,
)

from . import control

# The source types of routes from BIRD's unnamed protocols, by their automatic names
# (kernel1, static2, ...); routes from Calico's BGP sessions are NodeMesh or BGPPeer.
SOURCE_TYPES = {"kernel": "Kernel", "static": "Static", "direct": "Direct"}
# "10.65.7.0/26   unicast [Mesh_198_51_100_12 22:25:08.210 from 198.51.100.12] * (100) [i]";
# the destination is left out on a net's second and later routes.
_ROUTE = re.compile(r"(?P<dest>\S+)?\s+(?P<kind>\w+)\s+\[(?P<proto>\S+)[^\]]*\](?P<primary> \*)?")
# The lines under a unicast route, one per next hop.
_VIA = re.compile(r"via (?P<gateway>\S+) on (?P<iface>\S+)")
_DEV = re.compile(r"dev (?P<iface>\S+)")


def read(socket: str | Path, classes: Collection[str]) -> CalicoNodeStatusStatus:
    """The parts of the status that ``classes`` name (``agent``, ``bgp``, ``routes``),
    read from the BIRD on ``socket``; the other parts None. ``NO_BGP_DAEMON`` when no
    BIRD accepts a connection there; BirdError when BIRD answers unexpectedly."""
    try:
        return CalicoNodeStatusStatus(
            agent=agent(socket) if AGENT in classes else None,
            bgp=sessions(socket) if BGP in classes else None,
            routes=routes(socket) if ROUTES in classes else None,
        )
    except control.BirdUnreachable:
        return NO_BGP_DAEMON


def agent(socket: str | Path) -> CalicoNodeAgentStatus:
    """``show status``: Ready (BIRD greeted us), version, router ID, last boot and
    reconfiguration."""
    reply = control.command(socket, "show status")
    if reply.failed:
        raise control.BirdError(f"show status: {reply.text}")
    said: dict[str, str] = {}
    for _, text in reply.lines:
        for field, prefix in (("version", "BIRD "), ("router_id", "Router ID is "), ("last_boot_time", "Last reboot on "),
                              ("last_reconfiguration_time", "Last reconfiguration on ")):
            if text.startswith(prefix):
                said[field] = text[len(prefix):]
    daemon = BGPDaemonStatus(state=READY, **said)
    return CalicoNodeAgentStatus(bird_v4=daemon, bird_v6=daemon)


def sessions(socket: str | Path) -> CalicoNodeBGPStatus:
    """``show protocols all``: every BGP protocol with a Calico peer name, its neighbor
    address and BGP state; counted Established when the protocol is ``up``."""
    by_family: dict[int, list[tuple[CalicoNodePeer, bool]]] = {4: [], 6: []}
    for p in control.protocols(socket, details=True):
        m = PEER_NAME.match(p.name)
        # Calico skips a row without its info column.
        if p.proto != "BGP" or not m or not p.info:
            continue
        said = _details(p.details)
        state = said.get("BGP state")
        address = said.get("Neighbor address") or None
        peer = CalicoNodePeer(peer_ip=address, type=PEER_TYPES[m[1]], since=p.since,
                              state=state if state in SESSION_STATES else None)
        by_family[6 if address and ":" in address else 4].append((peer, p.state == "up"))
    v4, v6 = by_family[4], by_family[6]
    return CalicoNodeBGPStatus(
        number_established_v4=sum(up for _, up in v4),
        number_not_established_v4=sum(not up for _, up in v4),
        number_established_v6=sum(up for _, up in v6),
        number_not_established_v6=sum(not up for _, up in v6),
        peers_v4=tuple(p for p, _ in v4) or None,
        peers_v6=tuple(p for p, _ in v6) or None,
    )


def _details(lines: tuple[str, ...]) -> dict[str, str]:
    """``  BGP state:          Established`` lines as {"BGP state": "Established"}."""
    out: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


def routes(socket: str | Path) -> CalicoNodeBGPRouteStatus:
    """``show route``: every route of every table, FIB when BIRD prefers it (``*``),
    else RIB; one entry per next hop."""
    reply = control.command(socket, "show route")
    if reply.failed:
        raise control.BirdError(f"show route: {reply.text}")
    found: list[CalicoNodeRoute] = []
    dest = ""
    pending: CalicoNodeRoute | None = None  # a unicast route waiting for its next hops
    for code, text in reply.lines:
        if code != "1007" or not text.strip() or (text.startswith("Table ") and text.endswith(":")):
            continue
        if text.startswith("\t"):
            if pending is None:
                raise control.BirdError(f"show route: a next hop without its route: {text.strip()!r}")
            hop = _VIA.match(text.strip()) or _DEV.match(text.strip())
            if hop is None:
                raise control.BirdError(f"show route: unknown next hop {text.strip()!r}")
            gateway = hop.groupdict().get("gateway") or NO_GATEWAY
            found.append(attrs.evolve(pending, gateway=gateway, interface=hop["iface"]))
            continue
        m = _ROUTE.match(text)
        if m is None:
            raise control.BirdError(f"show route: unexpected line {text!r}")
        dest = m["dest"] or dest
        if not dest:
            raise control.BirdError(f"show route: a route without a destination: {text!r}")
        route = CalicoNodeRoute(type=FIB if m["primary"] else RIB, destination=dest,
                                learned_from=_learned_from(m["proto"]))
        if m["kind"] == "unicast":
            pending = route
        else:  # blackhole, unreachable, prohibited: no next hop, the kind stands for it
            pending = None
            found.append(attrs.evolve(route, gateway=NO_GATEWAY, interface=m["kind"]))
    return CalicoNodeBGPRouteStatus(
        routes_v4=tuple(r for r in found if ":" not in (r.destination or "")) or None,
        routes_v6=tuple(r for r in found if ":" in (r.destination or "")) or None,
    )


def _learned_from(protocol: str) -> CalicoNodeRouteLearnedFrom:
    for prefix, source in SOURCE_TYPES.items():
        if protocol.startswith(prefix):
            return CalicoNodeRouteLearnedFrom(source_type=source)
    m = PEER_NAME.match(protocol)
    address = peer_address(m[2]) if m else None
    if address is None:
        # As Calico: a route from a protocol it cannot place fails the whole update.
        raise control.BirdError(f"show route: route from protocol {protocol!r}, which is not a Calico peer")
    return CalicoNodeRouteLearnedFrom(source_type="NodeMesh" if m[1] == "Mesh" else "BGPPeer", peer_ip=address)

