"""FelixConfiguration (``api/pkg/apis/projectcalico/v3/felixconfig.go``).

Every field of Calico's FelixConfigurationSpec is optional (unset = Felix's own
default). The spec class is generated from ``FIELDS``, one row per Go json tag:
(JSON key, type, checks). Python attribute names are the snake_case of the keys
(``ipipMTU`` -> ``ipip_mtu``, ``bpfDSROptoutCIDRs`` -> ``bpf_dsr_optout_cidrs``).
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from pycalico.core.resources.base import Many, each, field, model, register_keys
from pycalico.core.resources.meta import Resource
from pycalico.core.resources.types import (
    Duration,
    Port,
    check_cidr,
    check_duration,
    check_iface_filter,
    check_interface,
    check_ipv4,
    check_ipv6,
    check_key_value_list,
    check_port,
    check_regexp,
    is_named_port,
    parse_cidr,
)
from pycalico.core.schema import check, in_range, matches, one_of, validated

LOG_LEVELS = ("Trace", "Debug", "Info", "Warning", "Error", "Fatal")
UINT32 = in_range(0, 0xFFFFFFFF)
MIN_MINUS_ONE = check(lambda v: v >= -1, "must be -1 or more, got {value}")


def _any_case(*choices: str):
    """A case-insensitive choice, as the CRD's ``(?i)`` patterns allow."""
    lowered = {c.lower() for c in choices}
    return check(lambda v: v.lower() in lowered, f"must be one of {', '.join(choices)}, got {{value!r}}")


@model
class ProtoPort:
    """A failsafe port: protocol (TCP, UDP, SCTP), port and optional source/destination net."""

    protocol: str | None = field(_any_case("TCP", "UDP", "SCTP"))
    port: int | None = field(in_range(0, 65535))
    net: str | None = field(validated(check_cidr))

    def _checks(self):
        if self.port is None:
            yield "port", "is required"


@model
class HealthTimeoutOverride:
    name: str | None = field(matches(r"[a-zA-Z0-9_ -]+", "a valid name (letters, digits, '_', ' ', '-')"))
    timeout: Duration | None = field(validated(check_duration))

    def _checks(self):
        if not self.name:
            yield "name", "is required"
        if self.timeout is None:
            yield "timeout", "is required"
        elif self.timeout.startswith("-"):
            yield "timeout", "must not be negative"


@model
class RouteTableRange:
    min: int | None = field()
    max: int | None = field()

    def _checks(self):
        low, high = self.min or 0, self.max or 0
        if not (1 <= low <= high <= 250):
            yield "", "must be a range of route table indices within 1..250"


@model
class RouteTableIDRange:
    min: int | None = field()
    max: int | None = field()

    def _checks(self):
        low, high = self.min or 0, self.max or 0
        if low > high:
            yield "", "min cannot be greater than max"
        if low < 1:
            yield "min", "cannot target indices < 1"
        if high > 0xFFFFFFFF:
            yield "max", "max index too high"


_CT_TIMEOUT = r"(([0-9]*(\.[0-9]*)?(ms|s|h|m|us)+)+|Auto)"
_ct = matches(_CT_TIMEOUT, "a duration (e.g. '10s', '1h') or 'Auto'")


@model
class BPFConntrackTimeouts:
    creation_grace_period: str | None = field(_ct)
    tcp_syn_sent: str | None = field(_ct)
    tcp_established: str | None = field(_ct)
    tcp_fins_seen: str | None = field(_ct)
    tcp_reset_seen: str | None = field(_ct)
    udp_timeout: str | None = field(_ct)
    generic_timeout: str | None = field(_ct)
    icmp_timeout: str | None = field(_ct)


def _bpf_log_filter_keys(filters: dict):
    for k in filters:
        try:
            check_interface(k)
        except ValueError as exc:
            yield k, str(exc)


BOOL, INT, STR = bool, int, str
SL = tuple[str, ...]
DUR = validated(check_duration)
LOG = one_of(*LOG_LEVELS)
ACCEPT_RETURN = one_of("Accept", "Return")
DROP_REJECT = one_of("Drop", "Reject")
ENABLED = one_of("Enabled", "Disabled")
KV = validated(check_key_value_list)
REGEXP = validated(check_regexp)

# (JSON key, type, checks...) in the order of the Go struct.
FIELDS: tuple[tuple[Any, ...], ...] = (
    ("useInternalDataplaneDriver", BOOL),
    ("dataplaneDriver", STR),
    ("dataplaneWatchdogTimeout", Duration, DUR),
    ("ipv6Support", BOOL),
    ("routeRefreshInterval", Duration, DUR),
    ("interfaceRefreshInterval", Duration, DUR),
    ("iptablesRefreshInterval", Duration, DUR),
    ("iptablesPostWriteCheckInterval", Duration, DUR),
    ("iptablesLockFilePath", STR),
    ("iptablesLockTimeout", Duration, DUR),
    ("iptablesLockProbeInterval", Duration, DUR),
    ("featureDetectOverride", STR, KV),
    ("featureGates", STR, KV),
    ("ipsetsRefreshInterval", Duration, DUR),
    ("maxIpsetSize", INT),
    ("iptablesBackend", STR, one_of("Legacy", "NFT", "Auto")),
    ("xdpRefreshInterval", Duration, DUR),
    ("netlinkTimeout", Duration, DUR),
    ("metadataAddr", STR),
    ("metadataPort", INT),
    ("openstackRegion", STR),
    ("interfacePrefix", STR),
    ("interfaceExclude", STR),
    ("chainInsertMode", STR, _any_case("Insert", "Append")),
    ("defaultEndpointToHostAction", STR, one_of("Drop", "Accept", "Return")),
    ("iptablesFilterAllowAction", STR, ACCEPT_RETURN),
    ("iptablesMangleAllowAction", STR, ACCEPT_RETURN),
    ("iptablesFilterDenyAction", STR, DROP_REJECT),
    ("logPrefix", STR),
    ("logFilePath", STR),
    ("logSeverityFile", STR, LOG),
    ("logSeverityScreen", STR, LOG),
    ("logSeveritySys", STR, LOG),
    ("logDebugFilenameRegex", STR, REGEXP),
    ("ipipEnabled", BOOL),
    ("ipipMTU", INT),
    ("vxlanEnabled", BOOL),
    ("vxlanMTU", INT),
    ("vxlanMTUV6", INT),
    ("vxlanPort", INT),
    ("vxlanVNI", INT),
    ("allowVXLANPacketsFromWorkloads", BOOL),
    ("allowIPIPPacketsFromWorkloads", BOOL),
    ("reportingInterval", Duration, DUR),
    ("reportingTTL", Duration, DUR),
    ("endpointReportingEnabled", BOOL),
    ("endpointReportingDelay", Duration, DUR),
    ("endpointStatusPathPrefix", STR),
    ("iptablesMarkMask", INT, UINT32),
    ("disableConntrackInvalidCheck", BOOL),
    ("healthEnabled", BOOL),
    ("healthHost", STR),
    ("healthPort", INT),
    ("healthTimeoutOverrides", tuple[HealthTimeoutOverride, ...]),
    ("prometheusMetricsEnabled", BOOL),
    ("prometheusMetricsHost", STR, matches(r"[a-zA-Z0-9:._+-]{1,64}", "a valid host (1-64 of a-z A-Z 0-9 : . _ + -)")),
    ("prometheusMetricsPort", INT),
    ("prometheusGoMetricsEnabled", BOOL),
    ("prometheusProcessMetricsEnabled", BOOL),
    ("prometheusWireGuardMetricsEnabled", BOOL),
    ("failsafeInboundHostPorts", tuple[ProtoPort, ...]),
    ("failsafeOutboundHostPorts", tuple[ProtoPort, ...]),
    ("kubeNodePortRanges", tuple[Port, ...], each(check_port)),
    ("policySyncPathPrefix", STR),
    ("usageReportingEnabled", BOOL),
    ("usageReportingInitialDelay", Duration, DUR),
    ("usageReportingInterval", Duration, DUR),
    ("natPortRange", Port, validated(check_port)),
    ("natOutgoingAddress", STR, validated(check_ipv4)),
    ("natOutgoingExclusions", STR, one_of("IPPoolsOnly", "IPPoolsAndHostIPs")),
    ("deviceRouteSourceAddress", STR, validated(check_ipv4)),
    ("deviceRouteSourceAddressIPv6", STR, validated(check_ipv6)),
    ("deviceRouteProtocol", INT),
    ("removeExternalRoutes", BOOL),
    ("programClusterRoutes", STR, ENABLED),
    ("ipForwarding", STR, ENABLED),
    ("externalNodesList", SL, each(check_cidr)),
    ("debugMemoryProfilePath", STR),
    ("debugDisableLogDropping", BOOL),
    ("debugSimulateCalcGraphHangAfter", Duration, DUR),
    ("debugSimulateDataplaneHangAfter", Duration, DUR),
    ("debugSimulateDataplaneApplyDelay", Duration, DUR),
    ("debugHost", STR),
    ("debugPort", INT, in_range(0, 65535)),
    ("iptablesNATOutgoingInterfaceFilter", STR, validated(check_iface_filter)),
    ("sidecarAccelerationEnabled", BOOL),
    ("xdpEnabled", BOOL),
    ("genericXDPEnabled", BOOL),
    ("nftablesMode", STR, one_of("Disabled", "Enabled", "Auto")),
    ("nftablesRefreshInterval", Duration, DUR),
    ("nftablesFilterAllowAction", STR, ACCEPT_RETURN),
    ("nftablesMangleAllowAction", STR, ACCEPT_RETURN),
    ("nftablesFilterDenyAction", STR, DROP_REJECT),
    ("nftablesMarkMask", INT, UINT32),
    ("bpfEnabled", BOOL),
    ("bpfDisableUnprivileged", BOOL),
    ("bpfLogLevel", STR, one_of("Debug", "Info", "Off")),
    ("bpfConntrackLogLevel", STR, one_of("Off", "Debug")),
    ("bpfConntrackMode", STR, one_of("Auto", "Userspace", "BPFProgram")),
    ("bpfConntrackTimeouts", BPFConntrackTimeouts),
    ("bpfLogFilters", dict[str, str], Many(_bpf_log_filter_keys)),
    ("bpfCTLBLogFilter", STR),
    ("bpfDataIfacePattern", STR, REGEXP),
    ("bpfL3IfacePattern", STR, REGEXP),
    ("bpfConnectTimeLoadBalancingEnabled", BOOL),
    ("bpfConnectTimeLoadBalancing", STR, one_of("TCP", "Enabled", "Disabled")),
    ("bpfHostNetworkedNATWithoutCTLB", STR, ENABLED),
    ("bpfExternalServiceMode", STR, one_of("Tunnel", "DSR")),
    ("bpfDSROptoutCIDRs", SL, each(check_cidr)),
    ("bpfExtToServiceConnmark", INT, UINT32),
    ("bpfKubeProxyIptablesCleanupEnabled", BOOL),
    ("bpfKubeProxyMinSyncPeriod", Duration, DUR),
    ("bpfKubeProxyEndpointSlicesEnabled", BOOL),
    ("bpfKubeProxyHealthzPort", INT, in_range(0, 65535)),
    ("bpfPSNATPorts", Port, validated(check_port)),
    ("bpfMapSizeNATFrontend", INT),
    ("bpfMapSizeNATBackend", INT),
    ("bpfMapSizeNATAffinity", INT),
    ("bpfMapSizeRoute", INT),
    ("bpfMapSizeConntrack", INT),
    ("bpfMapSizePerCpuConntrack", INT),
    ("bpfMapSizeConntrackScaling", STR, _any_case("Disabled", "DoubleIfFull")),
    ("bpfMapSizeConntrackCleanupQueue", INT, check(lambda v: v >= 1, "must be 1 or more, got {value}")),
    ("bpfMapSizeIPSets", INT),
    ("bpfMapSizeIfState", INT),
    ("bpfHostConntrackBypass", BOOL),
    ("bpfEnforceRPF", STR, _any_case("Disabled", "Strict", "Loose")),
    ("bpfPolicyDebugEnabled", BOOL),
    ("bpfForceTrackPacketsFromIfaces", SL, each(check_iface_filter)),
    ("bpfDisableGROForIfaces", STR, REGEXP),
    ("bpfExcludeCIDRsFromNAT", SL, each(check_cidr)),
    ("bpfExportBufferSizeMB", INT),
    ("bpfRedirectToPeer", STR, one_of("Enabled", "Disabled", "L2Only")),
    ("bpfAttachType", STR, one_of("TC", "TCX")),
    ("bpfProfiling", STR, ENABLED),
    ("bpfMaglevMaxEndpointsPerService", INT, in_range(1, 3000)),
    ("bpfMaglevMaxServices", INT, in_range(1, 3000)),
    ("cgroupV2Path", STR),
    ("flowLogsPolicyEvaluationMode", STR, one_of("None", "Continuous")),
    ("flowLogsFlushInterval", Duration, DUR),
    ("flowLogsCollectorDebugTrace", BOOL),
    ("flowLogsGoldmaneServer", STR),
    ("flowLogsLocalReporter", STR, ENABLED),
    ("routeSource", STR, _any_case("WorkloadIPs", "CalicoIPAM")),
    ("routeTableRanges", tuple[RouteTableIDRange, ...]),
    ("routeTableRange", RouteTableRange),
    ("routeSyncDisabled", BOOL),
    ("ipv4NormalRoutePriority", INT, in_range(1, 2147483646)),
    ("ipv4ElevatedRoutePriority", INT, in_range(1, 2147483646)),
    ("ipv6NormalRoutePriority", INT, in_range(1, 2147483646)),
    ("ipv6ElevatedRoutePriority", INT, in_range(1, 2147483646)),
    ("wireguardEnabled", BOOL),
    ("wireguardEnabledV6", BOOL),
    ("wireguardThreadingEnabled", BOOL),
    ("wireguardListeningPort", INT, in_range(1, 65535)),
    ("wireguardListeningPortV6", INT, in_range(1, 65535)),
    ("wireguardRoutingRulePriority", INT, in_range(1, 32765)),
    ("wireguardInterfaceName", STR, validated(check_interface)),
    ("wireguardInterfaceNameV6", STR, validated(check_interface)),
    ("wireguardMTU", INT),
    ("wireguardMTUV6", INT),
    ("wireguardHostEncryptionEnabled", BOOL),
    ("wireguardKeepAlive", Duration, DUR),
    ("awsSrcDstCheck", STR, one_of("DoNothing", "Enable", "Disable")),
    ("serviceLoopPrevention", STR, one_of("Drop", "Reject", "Disabled")),
    ("workloadSourceSpoofing", STR, one_of("Disabled", "Any")),
    ("mtuIfacePattern", STR, REGEXP),
    ("floatingIPs", STR, ENABLED),
    ("windowsManageFirewallRules", STR, ENABLED),
    ("goGCThreshold", INT, MIN_MINUS_ONE),
    ("goMemoryLimitMB", INT, MIN_MINUS_ONE),
    ("goMaxProcs", INT, MIN_MINUS_ONE),
    ("requireMTUFile", BOOL),
)

_WORD = re.compile(
    r"IPv\d|[A-Z]{2,}s(?![a-z])|[A-Z]+(?=[A-Z][a-z])|[A-Z]+(?=[A-Z]\d)|[A-Z]?[a-z]+\d*|[A-Z]\d+|[A-Z]+\d*|\d+"
)


def snake_name(json_key: str) -> str:
    """``ipipMTU`` -> ``ipip_mtu``; ``bpfDSROptoutCIDRs`` -> ``bpf_dsr_optout_cidrs``."""
    return "_".join(w.lower() for w in _WORD.findall(json_key))


# Calico's libcalico-go sets these on write (the CRD schema now does it instead).
WRITE_DEFAULTS = {
    "floatingIPs": "Disabled",
    "bpfConnectTimeLoadBalancing": "TCP",
    "bpfHostNetworkedNATWithoutCTLB": "Enabled",
}


def _spec_checks(self):
    ranges = self.kube_node_port_ranges
    if ranges is not None:
        if len(ranges) > 7:
            yield "kubeNodePortRanges", "node port ranges list is too long (max 7)"
        if any(is_named_port(p) for p in ranges):
            yield "kubeNodePortRanges", "node port ranges should not contain named ports"
    for i, text in enumerate(self.external_nodes_list or ()):
        try:
            if parse_cidr(text)[0].version != 4:
                yield f"externalNodesList[{i}]", f"{text!r} is not an IPv4 CIDR"
        except ValueError:
            pass  # reported by the field check
    region = self.openstack_region
    if region:
        limit = 63 - len("openstack-region-")
        if len(region) > limit:
            yield "openstackRegion", f"is too long (at most {limit} characters)"
        elif not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", region):
            yield "openstackRegion", "must be a valid DNS label"
    if self.route_table_range is not None and self.route_table_ranges is not None:
        yield "routeTableRange", "cannot be set when routeTableRanges is also set"
    total = sum((r.max or 0) - (r.min or 0) + 1 for r in self.route_table_ranges or ())
    if total > 0xFFFF:
        yield "routeTableRanges", "targets too many tables"


def _build_spec() -> type:
    attributes = {}
    names: dict[str, str] = {}
    for json_key, typ, *checks in FIELDS:
        name = snake_name(json_key)
        if name in names:
            raise TypeError(f"{json_key} and {names[name]} share the attribute name {name}")
        names[name] = json_key
        attributes[name] = field(*checks, key=json_key, type=typ | None)
    cls = attrs.make_class("FelixConfigurationSpec", attributes, frozen=True, kw_only=True)
    cls.__module__ = __name__
    cls.__doc__ = "The values of the Felix configuration; every field optional (see ``FIELDS``)."
    cls._checks = _spec_checks
    register_keys(cls)
    return cls


FelixConfigurationSpec = _build_spec()
FIELD_NAMES = {json_key: snake_name(json_key) for json_key, *_ in FIELDS}


@model
class FelixConfiguration(Resource):
    KIND = "FelixConfiguration"
    PLURAL = "felixconfigurations"

    spec: FelixConfigurationSpec = field(factory=FelixConfigurationSpec)

    def _defaults(self) -> FelixConfiguration:
        changes = {FIELD_NAMES[k]: v for k, v in WRITE_DEFAULTS.items() if getattr(self.spec, FIELD_NAMES[k]) is None}
        return attrs.evolve(self, spec=attrs.evolve(self.spec, **changes)) if changes else self
