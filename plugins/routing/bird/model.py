"""What BIRD should do on this node, computed from the desired state.

This is the job of Calico's confd backend (``confd/pkg/backends/calico/client.go``
turns Nodes, BGPConfigurations and BGPPeers into peerings; the templates read IPAM
affinities and IP pools): :func:`build` returns a :class:`BirdConfig` that
:mod:`.render` writes out. Only IPv4 is modelled, as the bird.cfg half of Calico's
templates (no bird6.cfg).

Peerings follow Calico's rules:

* the node-to-node mesh (``nodeToNodeMeshEnabled``, default true): every other node
  with an IPv4 address, except route reflectors; none at all on a route reflector;
  the session is passive towards a peer whose address sorts after ours;
* BGPPeers without ``node``/``nodeSelector`` are global, the rest node-specific (a
  node-specific peering to an address that also has a global one is dropped);
  ``peerSelector`` peers with the matching nodes, ``peerIP`` with one address;
* reverse peerings: a node that a BGPPeer points at (by ``peerSelector``, or by
  ``peerIP`` with its address and AS) peers back with the BGPPeer's local nodes;
* the first peering to claim a key wins; BGPPeers are taken in name order.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import attrs

from pycalico.core.calc import DesiredState
from pycalico.core.resources.bgp import DEFAULT_AS_NUMBER, BGPPassword
from pycalico.core.resources.types import as_number_value, duration_seconds, split_ip_port
from pycalico.core.selector import parse as parse_selector

PeerKind = Literal["mesh", "global", "node"]
NAME_PREFIX: dict[PeerKind, str] = {"mesh": "Mesh", "global": "Global", "node": "Node"}
# Nodes with this label set to "true" do not advertise service addresses (Calico's
# route generator honours it the same way).
EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


@attrs.frozen
class Peer:
    """One ``protocol bgp``."""

    kind: PeerKind
    ip: str
    as_number: int
    port: int | None = None
    source_address: str | None = None
    passive: bool = False
    password: str | None = None
    ttl_security: int = 0  # hops; 0 is "ttl security off" with plain multihop
    graceful_restart: int | None = None  # seconds
    keepalive: int | None = None  # seconds
    local_as: int | None = None
    rr_cluster_id: str | None = None  # set: this node reflects routes to the peer
    next_hop: Literal["keep", "self"] | None = None
    allow_local_as: int | None = None

    @property
    def name(self) -> str:
        name = f"{NAME_PREFIX[self.kind]}_{self.ip.replace('.', '_').replace(':', '_')}"
        return f"{name}_port_{self.port}" if self.port and self.kind != "mesh" else name


@attrs.frozen
class Block:
    """An IPAM block affine to this node, with the state of its affinity."""

    cidr: str
    state: str

    @property
    def confirmed(self) -> bool:
        return self.state in ("", "confirmed")


@attrs.frozen
class Pool:
    cidr: str
    export: bool  # not disableBGPExport
    encapsulation: Literal["vxlan", "ipip"] | None


@attrs.frozen
class BirdConfig:
    node_name: str
    node_ip: str | None  # None: IPv4 disabled on this node (no BGP)
    as_number: int
    listen_address: str | None = None
    listen_port: int | None = None
    ignored_interfaces: tuple[str, ...] = ()
    debug: str | None = "{ states }"  # None: no debug lines
    peers: tuple[Peer, ...] = ()
    blocks: tuple[Block, ...] = ()
    static_routes: tuple[str, ...] = ()  # service IP ranges, advertised from every node
    pools: tuple[Pool, ...] = ()
    communities: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (cidr, community values)
    problems: tuple[str, ...] = ()  # what could not be honoured (a missing BGP password)


@attrs.frozen
class _NodeFacts:
    name: str
    ip: str | None
    as_number: int
    rr_cluster_id: str
    listen_port: int | None
    labels: dict = attrs.field(factory=dict)


def build(state: DesiredState, secrets_dir: str | Path) -> BirdConfig:
    """This node's BIRD configuration from ``state``; passwords are read from ``secrets_dir``."""
    configs = {c.metadata.name: c.spec for c in state.of_kind("BGPConfiguration")}
    glob = configs.get("default")
    mine = configs.get(f"node.{state.node_name}")
    global_as = glob.effective_as_number if glob else DEFAULT_AS_NUMBER
    global_port = glob.listen_port if glob else None
    nodes = {n.name: _facts(n, configs, global_as, global_port) for n in state.of_kind("Node")}
    me = nodes.get(state.node_name) or _NodeFacts(state.node_name, None, global_as, "", global_port)
    secrets = _Secrets(Path(secrets_dir))
    debug = _debug((mine and mine.log_severity_screen) or (glob and glob.log_severity_screen))
    base = BirdConfig(node_name=me.name, node_ip=me.ip, as_number=me.as_number, debug=debug)
    if me.ip is None:
        return base
    peers: list[Peer] = []
    if glob is None or glob.effective_node_to_node_mesh:
        peers += _mesh(me, nodes.values(), glob, secrets)
    peers += _explicit(me, nodes, sorted(state.of_kind("BGPPeer"), key=lambda p: p.name), global_as, secrets)
    advertise_services = me.labels.get(EXCLUDE_LB_LABEL) != "true"
    return attrs.evolve(
        base,
        listen_address=me.ip if glob and glob.bind_mode == "NodeIP" else None,
        listen_port=me.listen_port,
        ignored_interfaces=tuple(glob.ignored_interfaces or ()) if glob else (),
        peers=tuple(sorted(peers, key=lambda p: p.name)),
        blocks=_blocks(state),
        static_routes=_service_ranges(glob) if glob and advertise_services else (),
        pools=_pools(state),
        communities=_communities(mine if mine and mine.prefix_advertisements else glob),
        problems=tuple(secrets.problems),
    )


def _service_ranges(glob: Any) -> tuple[str, ...]:
    """The service cluster, external and LoadBalancer IP ranges BGPConfiguration
    ``default`` asks every node to advertise, as confd adds them to the static routes."""
    ranges = (glob.service_cluster_ips or ()) + (glob.service_external_ips or ()) + (glob.service_load_balancer_ips or ())
    return _v4(c.cidr for c in ranges if c.cidr)


def _facts(node: Any, configs: dict, global_as: int, global_port: int | None) -> _NodeFacts:
    bgp = node.spec.bgp
    own = configs.get(f"node.{node.name}")
    return _NodeFacts(
        name=node.name,
        ip=bgp.ipv4 if bgp else None,
        as_number=as_number_value(bgp.as_number) if bgp and bgp.as_number is not None else global_as,
        rr_cluster_id=(bgp.route_reflector_cluster_id or "") if bgp else "",
        listen_port=(own.listen_port if own and own.listen_port else None) or global_port,
        labels=dict(node.metadata.labels or {}),
    )


def _debug(severity: str | None) -> str | None:
    level = (severity or "Info").lower()
    if level == "none":
        return None
    return "all" if level in ("debug", "trace") else "{ states }"


class _Secrets:
    """BGP passwords from ``<dir>/<secret>/<key>``; what is missing is noted, as Calico logs it."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.problems: list[str] = []

    def password(self, ref: BGPPassword | None, owner: str) -> str | None:
        if ref is None or ref.secret_key_ref is None:
            return None
        sel = ref.secret_key_ref
        path = self.directory / (sel.name or "") / (sel.key or "")
        try:
            value = path.read_text().strip()
        except OSError as exc:
            self.problems.append(f"{owner}: can't read password {sel.name}/{sel.key} ({path}: {exc.strerror})")
            return None
        if '"' in value or "\n" in value:
            self.problems.append(f"{owner}: password {sel.name}/{sel.key} holds a quote or a newline; not used")
            return None
        return value


def _mesh(me: _NodeFacts, nodes: Iterable[_NodeFacts], glob: Any, secrets: _Secrets) -> list[Peer]:
    if me.rr_cluster_id:
        return []  # a route reflector takes no part in the mesh
    restart = _seconds(glob.node_mesh_max_restart_time) if glob else None
    password = secrets.password(glob.node_mesh_password, "BGPConfiguration default nodeMeshPassword") if glob else None
    return [
        Peer(
            kind="mesh",
            ip=other.ip,
            as_number=other.as_number,
            port=other.listen_port,
            source_address=me.ip,
            passive=other.ip > me.ip,  # string order, as confd compares: one side connects
            password=password,
            graceful_restart=restart,
        )
        for other in nodes
        if other.ip and other.ip != me.ip and not other.rr_cluster_id
    ]


def _explicit(
    me: _NodeFacts, nodes: dict[str, _NodeFacts], resources: list, global_as: int, secrets: _Secrets
) -> list[Peer]:
    """Peerings from BGPPeer resources that apply to this node (confd's ``updatePeersV1``)."""
    claimed: dict[tuple[str, str, int | None], dict] = {}  # (scope, ip, port) -> peering
    all_nodes = sorted(nodes.values(), key=lambda n: n.name)

    def matching(selector: str) -> list[_NodeFacts]:
        test = parse_selector(selector).evaluate
        return [n for n in all_nodes if test(n.labels)]

    def emit(scope: str, peering: dict) -> None:
        key = (scope, peering["ip"], peering["port"])
        if scope not in ("global", me.name) or ipaddress.ip_address(key[1]).version != 4 or key in claimed:
            return
        if scope != "global" and ("global", key[1], key[2]) in claimed:
            return  # a global peering to that address already covers this node
        claimed[key] = peering

    def as_peering(node: _NodeFacts) -> dict:
        return {"ip": node.ip, "port": node.listen_port, "as": node.as_number, "rr": node.rr_cluster_id, "calico": True}

    for global_pass in (True, False):
        for res in resources:
            spec = res.spec
            if global_pass != (not spec.node and not spec.node_selector):
                continue
            local = [n.name for n in matching(spec.node_selector)] if spec.node_selector else [spec.node] if spec.node else []
            if spec.peer_selector:
                targets = [as_peering(n) for n in matching(spec.peer_selector) if n.ip]
            elif spec.peer_ip:
                targets = [_ip_peering(spec, all_nodes, global_as)]
            else:
                continue
            for peering in targets:
                peering = {**peering, "res": res}
                if global_pass:
                    emit("global", peering)
                else:
                    for name in local:
                        emit(name, peering)
    # Reverse peerings, so that sessions between Calico nodes are configured on both ends.
    for res in resources:
        spec = res.spec
        if spec.peer_selector:
            local = [n.name for n in matching(spec.peer_selector)]
        elif spec.peer_ip:
            ip, port = split_ip_port(spec.peer_ip)
            want_as = _as(spec.as_number) or global_as
            local = [n.name for n in all_nodes if n.ip == ip and n.as_number == want_as and _port_fits(port, n)]
        else:
            continue
        if me.name not in local:
            continue
        if spec.node_selector:
            remote = matching(spec.node_selector)
        elif spec.node:
            remote = [nodes[spec.node]] if spec.node in nodes else []
        else:
            remote = all_nodes
        for node in remote:
            if node.ip:
                emit(me.name, {**as_peering(node), "res": res})
    return [
        _peer("global" if scope == "global" else "node", peering, me, secrets)
        for (scope, ip, _port), peering in claimed.items()
        if scope in ("global", me.name) and ip != me.ip
    ]


def _ip_peering(spec: Any, nodes: list[_NodeFacts], global_as: int) -> dict:
    ip, port = split_ip_port(spec.peer_ip)
    want_as = _as(spec.as_number) or global_as
    if not port:
        # A Calico node at that address (and AS) is reached on its own listen port.
        port = next((n.listen_port for n in nodes if n.ip == ip and n.as_number == want_as), None)
    return {
        "ip": ip,
        "port": port,
        "as": want_as,
        "rr": "",
        "calico": any(n.ip == ip for n in nodes),
    }


def _peer(kind: PeerKind, peering: dict, me: _NodeFacts, secrets: _Secrets) -> Peer:
    spec = peering["res"].spec
    local_as = _as(spec.local_as_number)
    node_as = local_as or me.as_number
    same_as = peering["as"] == node_as
    next_hop = {"Keep": "keep", "Self": "self"}.get(spec.next_hop_mode or "")
    if spec.keep_original_next_hop and not same_as:
        next_hop = "keep"  # the legacy flag, honoured for eBGP only
    reflect = same_as and me.rr_cluster_id and peering["rr"] != me.rr_cluster_id
    return Peer(
        kind=kind,
        ip=peering["ip"],
        as_number=peering["as"],
        port=peering["port"],
        source_address=me.ip if (spec.source_address or "UseNodeIP") == "UseNodeIP" else None,
        passive=kind == "global" and peering["calico"] and peering["ip"] > me.ip,
        password=secrets.password(spec.password, f"BGPPeer {peering['res'].name}"),
        ttl_security=spec.ttl_security or 0,
        graceful_restart=_seconds(spec.max_restart_time),
        keepalive=_seconds(spec.keepalive_time),
        local_as=local_as,
        rr_cluster_id=me.rr_cluster_id if reflect else None,
        next_hop=next_hop,
        allow_local_as=spec.num_allowed_local_as_numbers or None,
    )


def _as(value: Any) -> int | None:
    """An AS number, None when unset (0 means unset too, as in Calico)."""
    if value is None:
        return None
    return as_number_value(value) or None


def _port_fits(port: int | None, node: _NodeFacts) -> bool:
    # Calico compares ports only when both the peer address and the node name one.
    return not port or node.listen_port is None or port == node.listen_port


def _seconds(duration: str | None) -> int | None:
    return round(duration_seconds(duration)) if duration else None


def _blocks(state: DesiredState) -> tuple[Block, ...]:
    found = [
        Block(cidr=a.spec.cidr, state=a.spec.state or "")
        for a in state.of_kind("BlockAffinity")
        if a.spec.node == state.node_name
        and (a.spec.type or "host") == "host"
        and a.spec.deleted != "true"
        and ipaddress.ip_network(a.spec.cidr).version == 4
    ]
    return tuple(sorted(set(found), key=lambda b: ipaddress.ip_network(b.cidr)))


def _pools(state: DesiredState) -> tuple[Pool, ...]:
    pools = []
    for pool in state.of_kind("IPPool"):
        spec = pool.spec
        if not spec.cidr or spec.network.version != 4:
            continue
        encap = "vxlan" if spec.vxlan_mode not in (None, "Never") else "ipip" if spec.ipip_mode not in (None, "Never") else None
        pools.append(Pool(cidr=str(spec.network), export=not spec.disable_bgp_export, encapsulation=encap))
    return tuple(sorted(pools, key=lambda p: ipaddress.ip_network(p.cidr)))


def _v4(cidrs: Iterable[str]) -> tuple[str, ...]:
    nets = {ipaddress.ip_network(c, strict=False) for c in cidrs}
    return tuple(str(n) for n in sorted(n for n in nets if n.version == 4))


def _communities(spec: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``prefixAdvertisements`` with community names resolved to their values."""
    if spec is None or not spec.prefix_advertisements:
        return ()
    named = {c.name: c.value for c in spec.communities or ()}
    out = []
    for adv in spec.prefix_advertisements:
        if not adv.cidr or ipaddress.ip_network(adv.cidr, strict=False).version != 4:
            continue
        values = tuple(dict.fromkeys(named.get(c, c) for c in adv.communities or ()))
        if values:
            out.append((adv.cidr, values))
    return tuple(out)
