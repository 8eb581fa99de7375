"""``[policy.nftables]`` in calico.toml.

Every key is optional. The first five, left out, take their value from the
FelixConfiguration in the datastore (``node.<name>`` over ``default``), and from Felix's
default when that has none; set here, they win over both. The last two are the plugin's::

    [policy]
    type = "nftables"

    [policy.nftables]
    deny_action = "reject"               # nftablesFilterDenyAction: drop | reject
    endpoint_to_host_action = "accept"   # defaultEndpointToHostAction: drop | accept | return
    log_prefix = "calico-packet"         # logPrefix, for rules with action Log
    failsafe_inbound = ["tcp:22", "udp:68", "tcp:10.0.0.0/8:6443"]   # [] for none
    failsafe_outbound = ["udp:53", "tcp:179"]
    refresh_seconds = 180                # re-read the table at least this often (as nftablesRefreshInterval)
    nft = "nft"                          # the nft executable

A failsafe entry is ``<port>``, ``<protocol>:<port>`` or ``<protocol>:<net>:<port>``
(protocol tcp, udp or sctp, tcp when left out; the net is the peer's: the source inbound,
the destination outbound), as the entries of Felix's ``FailsafeInboundHostPorts``.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

import attrs

from pycalico.core.policy.model import ProtoPort
from pycalico.core.schema import FieldError, in_range

PROTOCOLS = ("tcp", "udp", "sctp")


def parse_failsafe(text: str) -> ProtoPort:
    """``22``, ``tcp:22`` or ``tcp:10.0.0.0/8:22`` (an IPv6 net keeps its colons)."""
    if text.isdigit():
        text = f"tcp:{text}"
    proto, sep, rest = text.partition(":")
    net, _, port = rest.rpartition(":")
    if not sep or proto.lower() not in PROTOCOLS or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not [<tcp|udp|sctp>:[<net>:]]<port>")
    if net:
        try:
            net = str(ipaddress.ip_network(net, strict=False))
        except ValueError:
            raise ValueError(f"{text!r}: {net!r} is not a CIDR") from None
    return ProtoPort(proto.lower(), int(port), net or None)


def _failsafe_list(value) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen
class Options:
    deny_action: Literal["drop", "reject"] | None = attrs.field(default=None, metadata={
        "doc": "What a policy's Deny does (nftablesFilterDenyAction). Unset: the FelixConfiguration's, "
               "else drop.",
        "example": "drop"})
    endpoint_to_host_action: Literal["drop", "accept", "return"] | None = attrs.field(default=None, metadata={
        "doc": "What happens to traffic from a pod to its own host after policy "
               "(defaultEndpointToHostAction). Unset: the FelixConfiguration's, else drop.",
        "example": "accept"})
    log_prefix: str | None = attrs.field(default=None, metadata={
        "doc": "Prefix of the log lines of rules with action Log (logPrefix). Unset: the "
               "FelixConfiguration's, else calico-packet.",
        "example": "calico-packet"})
    failsafe_inbound: tuple[str, ...] | None = attrs.field(default=None, converter=_failsafe_list, metadata={
        "doc": "Host ports always open inbound, `port`, `protocol:port` or `protocol:net:port` "
               "(FailsafeInboundHostPorts); [] for none. Unset: the FelixConfiguration's, else Felix's list.",
        "example": ["tcp:22", "udp:68", "tcp:10.0.0.0/8:6443"]})
    failsafe_outbound: tuple[str, ...] | None = attrs.field(default=None, converter=_failsafe_list, metadata={
        "doc": "Host ports always open outbound, as failsafe_inbound (FailsafeOutboundHostPorts). "
               "Unset: the FelixConfiguration's, else Felix's list.",
        "example": ["udp:53", "tcp:179"]})
    refresh_seconds: float = attrs.field(default=180.0, validator=in_range(0, 86400), metadata={
        "doc": "The table is read back in full at least this often, to repair changes made by "
               "others (as nftablesRefreshInterval); 0: every pass."})
    nft: str = attrs.field(default="nft", metadata={"doc": "The nft executable."})

    def __attrs_post_init__(self) -> None:
        problems = []
        for field in ("failsafe_inbound", "failsafe_outbound"):
            for i, text in enumerate(getattr(self, field) or ()):
                try:
                    parse_failsafe(text)
                except ValueError as exc:
                    problems.append(FieldError(f"{field}[{i}]", str(exc)))
        if self.log_prefix is not None and ('"' in self.log_prefix or len(self.log_prefix) > 127):
            problems.append(FieldError("log_prefix", "must have no double quote and at most 127 characters"))
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise ExceptionGroup("invalid [policy.nftables]", problems)

    def failsafe(self, direction: str) -> tuple[ProtoPort, ...] | None:
        value = self.failsafe_inbound if direction == "inbound" else self.failsafe_outbound
        return None if value is None else tuple(parse_failsafe(t) for t in value)
