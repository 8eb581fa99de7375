"""CalicoNodeStatus (``api/pkg/apis/projectcalico/v3/caliconodestatus.go``): a user's
request for one node's BGP status, which that node's calico-node fills in.

The user writes ``spec`` (the node, the classes of information wanted, how often);
calico-node writes ``status``. Calico validates the spec only: the status is its own
output.
"""

from __future__ import annotations

from pycalico.core.resources.base import each, field, model
from pycalico.core.resources.meta import Resource
from pycalico.core.resources.types import check_name, check_one_of
from pycalico.core.schema import in_range, validated

AGENT, BGP, ROUTES = CLASSES = ("Agent", "BGP", "Routes")
MAX_UPDATE_PERIOD = 86400  # one day, Calico's ``lte=86400``

READY, NOT_READY = "Ready", "NotReady"
# A session's state as BIRD names it; anything else is reported as "" (unknown).
SESSION_STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established", "Close")
PEER_TYPES = {"Mesh": "NodeMesh", "Node": "NodePeer", "Global": "GlobalPeer"}  # by peer-name prefix
FIB, RIB = "FIB", "RIB"
NO_GATEWAY = "N/A"


@model
class CalicoNodeStatusSpec:
    node: str | None = field(validated(check_name))
    classes: tuple[str, ...] | None = field(each(check_one_of(*CLASSES)))
    update_period_seconds: int | None = field(in_range(0, MAX_UPDATE_PERIOD))

    def _checks(self):
        if not self.node:
            yield "node", "is required"
        if not self.classes:
            yield "classes", "is required"
        else:
            seen: set[str] = set()
            for i, cls in enumerate(self.classes):
                if cls in seen:
                    yield f"classes[{i}]", f"{cls!r} is listed twice: classes must be unique"
                seen.add(cls)
        if self.update_period_seconds is None:
            yield "updatePeriodSeconds", f"is required (0 to {MAX_UPDATE_PERIOD}; 0 turns updates off)"


@model
class BGPDaemonStatus:
    state: str | None = field()
    version: str | None = field()
    router_id: str | None = field(key="routerID")
    last_boot_time: str | None = field()
    last_reconfiguration_time: str | None = field()


@model
class CalicoNodeAgentStatus:
    bird_v4: BGPDaemonStatus | None = field()
    bird_v6: BGPDaemonStatus | None = field()


@model
class CalicoNodePeer:
    peer_ip: str | None = field(key="peerIP")
    type: str | None = field()
    state: str | None = field()
    since: str | None = field()


@model
class CalicoNodeBGPStatus:
    number_established_v4: int | None = field()
    number_not_established_v4: int | None = field()
    number_established_v6: int | None = field()
    number_not_established_v6: int | None = field()
    peers_v4: tuple[CalicoNodePeer, ...] | None = field()
    peers_v6: tuple[CalicoNodePeer, ...] | None = field()


@model
class CalicoNodeRouteLearnedFrom:
    source_type: str | None = field()
    peer_ip: str | None = field(key="peerIP")


@model
class CalicoNodeRoute:
    type: str | None = field()
    destination: str | None = field()
    gateway: str | None = field()
    interface: str | None = field()
    learned_from: CalicoNodeRouteLearnedFrom | None = field()


@model
class CalicoNodeBGPRouteStatus:
    routes_v4: tuple[CalicoNodeRoute, ...] | None = field()
    routes_v6: tuple[CalicoNodeRoute, ...] | None = field()


@model
class CalicoNodeStatusStatus:
    last_updated: str | None = field()  # RFC 3339, UTC
    agent: CalicoNodeAgentStatus | None = field()
    bgp: CalicoNodeBGPStatus | None = field()
    routes: CalicoNodeBGPRouteStatus | None = field()


# What Calico reports when no BGP daemon answers (BGP networking off, or BIRD down):
# both daemons NotReady, no sessions, no routes.
NO_BGP_DAEMON = CalicoNodeStatusStatus(
    agent=CalicoNodeAgentStatus(bird_v4=BGPDaemonStatus(state=NOT_READY), bird_v6=BGPDaemonStatus(state=NOT_READY)),
    bgp=CalicoNodeBGPStatus(
        number_established_v4=0, number_not_established_v4=0, number_established_v6=0, number_not_established_v6=0
    ),
    routes=CalicoNodeBGPRouteStatus(),
)


@model
class CalicoNodeStatus(Resource):
    KIND = "CalicoNodeStatus"
    PLURAL = "caliconodestatuses"

    spec: CalicoNodeStatusSpec = field(factory=CalicoNodeStatusSpec)
    status: CalicoNodeStatusStatus | None = field()
