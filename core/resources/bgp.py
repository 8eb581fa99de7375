"""BGPConfiguration and BGPPeer (``api/pkg/apis/projectcalico/v3/bgpconfig.go``, ``bgppeer.go``)."""

from __future__ import annotations

import re

from pycalico.core.resources.base import each, field, model
from pycalico.core.resources.meta import Resource
from pycalico.core.resources.types import (
    ASNumber,
    Duration,
    as_number_value,
    check_as_number,
    check_duration,
    check_ignored_interface,
    check_ip,
    check_ip_port,
    check_ipv4,
    check_ipv6,
    check_name,
    check_net,
    check_selector,
    parse_ip,
    split_ip_port,
)
from pycalico.core.schema import in_range, one_of, validated

LOG_LEVELS = ("Trace", "Debug", "Info", "Warning", "Error", "Fatal")
DEFAULT_AS_NUMBER = 64512
DEFAULT_LISTEN_PORT = 179


@model
class SecretKeySelector:
    """A key of a Secret in calico-node's namespace (Kubernetes ``SecretKeySelector``)."""

    name: str | None = field()
    key: str | None = field()
    optional: bool | None = field()

    def _checks(self):
        if not self.key:
            yield "key", "is required"


@model
class BGPPassword:
    secret_key_ref: SecretKeySelector | None = field()


@model
class CIDRBlock:
    """``{cidr: ...}``: one entry of serviceClusterIPs / serviceExternalIPs / serviceLoadBalancerIPs."""

    cidr: str | None = field(validated(check_net))


_STANDARD_COMMUNITY = re.compile(r"(\d+):(\d+)")
_LARGE_COMMUNITY = re.compile(r"(\d+):(\d+):(\d+)")


def community_problem(value: str) -> str | None:
    """None for a valid ``aa:nn`` (16-bit parts) or ``aa:nn:mm`` (32-bit parts) value."""
    for regex, bits in ((_STANDARD_COMMUNITY, 16), (_LARGE_COMMUNITY, 32)):
        m = regex.fullmatch(value)
        if m:
            if any(int(part) >= 1 << bits for part in m.groups()):
                return f"invalid community value {value!r}: expected {bits} bit numbers"
            return None
    return f"invalid community value {value!r}: use aa:nn or aa:nn:mm"


@model
class Community:
    name: str | None = field(validated(check_name))
    value: str | None = field()

    def _checks(self):
        if not self.name:
            yield "name", "is required"
        if not self.value:
            yield "value", "is required"
        else:
            problem = community_problem(self.value)
            if problem:
                yield "value", problem


@model
class PrefixAdvertisement:
    cidr: str | None = field(validated(check_net))
    communities: tuple[str, ...] | None = field()

    def _checks(self):
        if not self.cidr:
            yield "cidr", "is required"
        if not self.communities:
            yield "communities", "is required"


@model
class BGPConfigurationSpec:
    log_severity_screen: str | None = field(one_of(*LOG_LEVELS))
    node_to_node_mesh_enabled: bool | None = field()
    as_number: ASNumber | None = field(validated(check_as_number))
    service_load_balancer_ips: tuple[CIDRBlock, ...] | None = field(key="serviceLoadBalancerIPs")
    service_external_ips: tuple[CIDRBlock, ...] | None = field(key="serviceExternalIPs")
    service_cluster_ips: tuple[CIDRBlock, ...] | None = field(key="serviceClusterIPs")
    communities: tuple[Community, ...] | None = field()
    prefix_advertisements: tuple[PrefixAdvertisement, ...] | None = field()
    listen_port: int | None = field(in_range(1, 65535))
    node_mesh_password: BGPPassword | None = field()
    node_mesh_max_restart_time: Duration | None = field(validated(check_duration))
    bind_mode: str | None = field(one_of("None", "NodeIP"))
    ignored_interfaces: tuple[str, ...] | None = field(each(check_ignored_interface))
    service_load_balancer_aggregation: str | None = field(one_of("Enabled", "Disabled"))
    local_workload_peering_ipv4: str | None = field(validated(check_ipv4), key="localWorkloadPeeringIPV4")
    local_workload_peering_ipv6: str | None = field(validated(check_ipv6), key="localWorkloadPeeringIPV6")
    program_cluster_routes: str | None = field(one_of("Enabled", "Disabled"))
    ipv4_normal_route_priority: int | None = field(in_range(1, 2147483646))
    ipv6_normal_route_priority: int | None = field(in_range(1, 2147483646))

    # Calico applies these defaults where the configuration is used, not on create.
    @property
    def effective_as_number(self) -> int:
        return DEFAULT_AS_NUMBER if self.as_number is None else as_number_value(self.as_number)

    @property
    def effective_node_to_node_mesh(self) -> bool:
        return True if self.node_to_node_mesh_enabled is None else self.node_to_node_mesh_enabled

    @property
    def effective_listen_port(self) -> int:
        return self.listen_port or DEFAULT_LISTEN_PORT

    def _checks(self):
        communities = self.communities or ()
        names = {c.name for c in communities}
        if communities and not self.prefix_advertisements:
            yield "communities", "communities are defined but not used in prefixAdvertisements"
        for i, pa in enumerate(self.prefix_advertisements or ()):
            for j, value in enumerate(pa.communities or ()):
                if community_problem(value) and value not in names:
                    yield (
                        f"prefixAdvertisements[{i}].communities[{j}]",
                        (f"community {value!r} is neither a valid value (aa:nn, aa:nn:mm) nor defined in communities"),
                    )
        if self.node_to_node_mesh_enabled is False:
            if self.node_mesh_password is not None:
                yield "nodeMeshPassword", "cannot be set when nodeToNodeMeshEnabled is false"
            if self.node_mesh_max_restart_time is not None:
                yield "nodeMeshMaxRestartTime", "cannot be set when nodeToNodeMeshEnabled is false"


@model
class BGPConfiguration(Resource):
    KIND = "BGPConfiguration"
    PLURAL = "bgpconfigurations"

    spec: BGPConfigurationSpec = field(factory=BGPConfigurationSpec)


@model
class BGPPeerSpec:
    node: str | None = field(validated(check_name))
    node_selector: str | None = field(validated(check_selector))
    peer_ip: str | None = field(validated(check_ip_port), key="peerIP")
    as_number: ASNumber | None = field(validated(check_as_number))
    local_as_number: ASNumber | None = field(validated(check_as_number), key="localASNumber")
    peer_selector: str | None = field(validated(check_selector))
    local_workload_selector: str | None = field(validated(check_selector))
    keep_original_next_hop: bool | None = field()
    next_hop_mode: str | None = field(one_of("Auto", "Self", "Keep"))
    reverse_peering: str | None = field(one_of("Auto", "Manual"))
    password: BGPPassword | None = field()
    source_address: str | None = field(one_of("UseNodeIP", "None"))
    max_restart_time: Duration | None = field(validated(check_duration))
    keepalive_time: Duration | None = field(validated(check_duration))
    num_allowed_local_as_numbers: int | None = field(in_range(0, 2147483647), key="numAllowedLocalASNumbers")
    ttl_security: int | None = field(in_range(0, 255))
    reachable_by: str | None = field(validated(check_ip))
    filters: tuple[str, ...] | None = field(each(check_name))

    def _checks(self):
        if self.node and self.node_selector:
            yield "node", "must be empty when nodeSelector is specified"
        if self.peer_ip and self.peer_selector:
            yield "peerIP", "must be empty when peerSelector is specified"
        as_set = self.as_number is not None and _as_or_zero(self.as_number) != 0
        if as_set and self.peer_selector:
            yield "asNumber", "must be empty when peerSelector is specified"
        if self.local_workload_selector:
            if not as_set:
                yield "asNumber", "is required when localWorkloadSelector is specified"
            if self.peer_ip:
                yield "peerIP", "must be empty when localWorkloadSelector is specified"
            if self.peer_selector:
                yield "peerSelector", "must be empty when localWorkloadSelector is specified"
        if self.reachable_by:
            if not self.peer_ip:
                yield "reachableBy", "must be empty when peerIP is empty"
            else:
                try:
                    peer, _ = split_ip_port(self.peer_ip)
                    if parse_ip(peer).version != parse_ip(self.reachable_by).version:
                        yield "reachableBy", "reachableBy and peerIP address families differ"
                except ValueError:
                    pass  # reported by the field checks
        if self.keep_original_next_hop and self.next_hop_mode is not None:
            yield "keepOriginalNextHop", "is deprecated and must not be true when nextHopMode is set"

    @property
    def peer_address(self) -> tuple[str, int | None] | None:
        """(IP, port or None) of ``peerIP``."""
        return split_ip_port(self.peer_ip) if self.peer_ip else None


def _as_or_zero(value) -> int:
    try:
        return as_number_value(value)
    except ValueError:
        return -1


@model
class BGPPeer(Resource):
    KIND = "BGPPeer"
    PLURAL = "bgppeers"

    spec: BGPPeerSpec = field(factory=BGPPeerSpec)
