"""WorkloadEndpoint (``libcalico-go/lib/apis/internalapi/workloadendpoint.go``) and
HostEndpoint (``api/pkg/apis/projectcalico/v3/hostendpoint.go``)."""

from __future__ import annotations

import ipaddress

from pycalico.core.resources.base import each, field, model
from pycalico.core.resources.meta import Resource
from pycalico.core.resources.types import (
    IntOrStr,
    Protocol,
    check_cidr,
    check_container_id,
    check_interface,
    check_ip,
    check_ipv4,
    check_ipv6,
    check_mac,
    check_name,
    check_net,
    check_port_name,
    check_protocol,
    parse_cidr,
    supports_ports,
)
from pycalico.core.schema import in_range, validated

_DSCP_NAMES = (
    ("DF", "EF") + tuple(f"AF{c}{d}" for c in range(1, 5) for d in range(1, 4)) + tuple(f"CS{n}" for n in range(8))
)


def check_dscp(value) -> None:
    if isinstance(value, int):
        if not 0 <= value <= 63:
            raise ValueError(f"DSCP value must be between 0 and 63, got {value}")
    elif value not in _DSCP_NAMES:
        raise ValueError(f"{value!r} is not a DSCP value (0-63 or one of {', '.join(_DSCP_NAMES)})")


def _port_checks(port):
    """An endpoint port needs a number and a protocol that has ports."""
    if port.port is None:
        yield "port", "is required"
    if port.protocol is None:
        yield "protocol", "is required"
    elif not supports_ports(port.protocol):
        yield "protocol", f"protocol {port.protocol!r} does not support ports (use TCP, UDP or SCTP)"


@model
class EndpointPort:
    """A HostEndpoint's named port."""

    name: str | None = field(validated(check_port_name))
    protocol: Protocol | None = field(validated(check_protocol))
    port: int | None = field(in_range(1, 65535))

    def _checks(self):
        if not self.name:
            yield "name", "is required"
        yield from _port_checks(self)


@model
class WorkloadEndpointPort:
    name: str | None = field(validated(check_port_name))
    protocol: Protocol | None = field(validated(check_protocol))
    port: int | None = field(in_range(1, 65535))
    host_port: int | None = field(in_range(0, 65535))
    host_ip: str | None = field(validated(check_net), key="hostIP")

    def _checks(self):
        yield from _port_checks(self)
        if not self.name and not self.host_port:
            yield "name", "is required when no hostPort is set"


@model
class IPNAT:
    internal_ip: str | None = field(validated(check_ip), key="internalIP")
    external_ip: str | None = field(validated(check_ip), key="externalIP")

    def _checks(self):
        try:
            if ipaddress.ip_address(self.internal_ip).version != ipaddress.ip_address(self.external_ip).version:
                yield "externalIP", "internal and external IP versions differ"
        except (ValueError, TypeError):
            if not self.internal_ip:
                yield "internalIP", "is required"
            if not self.external_ip:
                yield "externalIP", "is required"


@model
class QoSControls:
    ingress_bandwidth: int | None = field()
    ingress_burst: int | None = field()
    ingress_peakrate: int | None = field()
    ingress_minburst: int | None = field()
    egress_bandwidth: int | None = field()
    egress_burst: int | None = field()
    egress_peakrate: int | None = field()
    egress_minburst: int | None = field()
    ingress_packet_rate: int | None = field()
    ingress_packet_burst: int | None = field()
    egress_packet_rate: int | None = field()
    egress_packet_burst: int | None = field()
    ingress_max_connections: int | None = field()
    egress_max_connections: int | None = field()
    dscp: IntOrStr | None = field(validated(check_dscp))


@model
class WorkloadEndpointSpec:
    orchestrator: str | None = field(validated(check_name))
    workload: str | None = field(validated(check_name))
    node: str | None = field(validated(check_name))
    container_id: str | None = field(validated(check_container_id), key="containerID")
    pod: str | None = field(validated(check_name))
    endpoint: str | None = field(validated(check_name))
    service_account_name: str | None = field(validated(check_name))
    ip_networks: tuple[str, ...] | None = field(each(check_net))
    ip_nats: tuple[IPNAT, ...] | None = field(key="ipNATs")
    ipv4_gateway: str | None = field(validated(check_ipv4))
    ipv6_gateway: str | None = field(validated(check_ipv6))
    profiles: tuple[str, ...] | None = field(each(check_name))
    interface_name: str | None = field(validated(check_interface))
    mac: str | None = field(validated(check_mac))
    ports: tuple[WorkloadEndpointPort, ...] | None = field()
    allow_spoofed_source_prefixes: tuple[str, ...] | None = field(each(check_cidr))
    qos_controls: QoSControls | None = field()

    def _checks(self):
        if not self.interface_name:
            yield "interfaceName", "is required"
        nets = []
        for i, text in enumerate(self.ip_networks or ()):
            try:
                net = parse_cidr(text)[1]
            except ValueError:
                continue
            nets.append(net)
            if net.prefixlen != net.max_prefixlen:
                yield f"ipNetworks[{i}]", f"{text!r} contains several addresses; only /32 and /128 are supported"
        for i, nat in enumerate(self.ip_nats or ()):
            try:
                internal = ipaddress.ip_address(nat.internal_ip)
            except (ValueError, TypeError):
                continue
            if not any(internal in net for net in nets if net.version == internal.version):
                yield f"ipNATs[{i}].internalIP", f"{nat.internal_ip} is not in the endpoint's ipNetworks"


@model
class WorkloadEndpoint(Resource):
    KIND = "WorkloadEndpoint"
    PLURAL = "workloadendpoints"
    NAMESPACED = True
    API_VERSIONS = ("projectcalico.org/v3",)

    spec: WorkloadEndpointSpec = field(factory=WorkloadEndpointSpec)


@model
class HostEndpointSpec:
    node: str | None = field(validated(check_name))
    interface_name: str | None = field(validated(check_interface))
    expected_ips: tuple[str, ...] | None = field(each(check_ip), key="expectedIPs")
    profiles: tuple[str, ...] | None = field(each(check_name))
    ports: tuple[EndpointPort, ...] | None = field()

    def _checks(self):
        if not self.interface_name and not self.expected_ips:
            yield "interfaceName", "no interfaceName or expectedIPs have been specified"
        if not self.node:
            yield "node", "is required"


@model
class HostEndpoint(Resource):
    KIND = "HostEndpoint"
    PLURAL = "hostendpoints"

    spec: HostEndpointSpec = field(factory=HostEndpointSpec)
