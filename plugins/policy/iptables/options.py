"""``[policy.iptables]`` in calico.toml: how the iptables dataplane is written.

Felix's settings for the same things are IptablesBackend, IptablesFilterDenyAction,
DefaultEndpointToHostAction, FailsafeInboundHostPorts / FailsafeOutboundHostPorts,
LogPrefix, IptablesMarkMask, ChainInsertMode and IptablesRefreshInterval
(``felix/config/config_params.go``). Like Felix's environment variables, a key set here
wins over the FelixConfiguration resource; an empty value (``""``, or the key left out
for the failsafe lists) takes the FelixConfiguration value, else Felix's default::

    [policy]
    type = "iptables"

    [policy.iptables]
    backend = "auto"                  # auto | nft | legacy
    deny_action = ""                  # DROP | REJECT; "" = FelixConfiguration (DROP)
    endpoint_to_host_action = "ACCEPT"  # ACCEPT | DROP | REJECT | RETURN; "" = FelixConfiguration
    # failsafe_inbound = ["tcp:22", "udp:68"]     # default: FelixConfiguration, else Felix's list
    # failsafe_outbound = ["udp:53", "tcp:179"]
    log_prefix = ""                   # "" = FelixConfiguration logPrefix (calico-packet)
    mark_mask = 0xffff0000
    chain_insert_mode = "insert"      # insert | append
    refresh_seconds = 90.0
    ipv6 = "auto"                     # auto | on | off
"""

from __future__ import annotations

import re
from typing import Literal

import attrs

from pycalico.core.schema import FieldError, in_range

_PROTO_PORT = re.compile(r"^(tcp|udp|sctp):(\d{1,5})(?:@(\S+))?$")


def parse_proto_port(text: str) -> tuple[str, int, str | None]:
    """``"tcp:22"`` or ``"tcp:22@10.0.0.0/8"`` as (protocol, port, net or None)."""
    m = _PROTO_PORT.match(text.strip().lower())
    if not m or not 0 <= int(m.group(2)) <= 65535:
        raise ValueError(f"{text!r} is not protocol:port (tcp, udp or sctp; port 0-65535), optionally @CIDR")
    return m.group(1), int(m.group(2)), m.group(3)


def _mark_bits(mask: int) -> int:
    return bin(mask & 0xFFFFFFFF).count("1")


@attrs.frozen
class Options:
    """The ``[policy.iptables]`` table (see the module docstring)."""

    backend: Literal["auto", "nft", "legacy"] = attrs.field(default="auto", metadata={
        "doc": "Which iptables to write (Felix's IptablesBackend); `auto` picks the one that already "
               "holds rules."})
    deny_action: Literal["", "DROP", "REJECT"] = attrs.field(default="", metadata={
        "doc": "What a policy's Deny does (IptablesFilterDenyAction). Empty: the FelixConfiguration's, "
               "else DROP."})
    endpoint_to_host_action: Literal["", "ACCEPT", "DROP", "REJECT", "RETURN"] = attrs.field(
        default="ACCEPT", metadata={
            "doc": "What happens to traffic from a pod to its own host after policy "
                   "(DefaultEndpointToHostAction). Empty: the FelixConfiguration's."})
    failsafe_inbound: tuple[str, ...] | None = attrs.field(default=None, metadata={
        "doc": "Host ports always open inbound, `protocol:port[@CIDR]` (FailsafeInboundHostPorts). "
               "Unset: the FelixConfiguration's, else Felix's list.",
        "example": ["tcp:22", "udp:68"]})
    failsafe_outbound: tuple[str, ...] | None = attrs.field(default=None, metadata={
        "doc": "Host ports always open outbound, `protocol:port[@CIDR]` (FailsafeOutboundHostPorts). "
               "Unset: the FelixConfiguration's, else Felix's list.",
        "example": ["udp:53", "tcp:179"]})
    log_prefix: str = attrs.field(default="", metadata={
        "doc": "Prefix of the kernel log lines of rules with action Log (LogPrefix); at most 27 "
               "characters. Empty: the FelixConfiguration's, else calico-packet."})
    mark_mask: int = attrs.field(default=0xFFFF0000, validator=in_range(0, 0xFFFFFFFF), metadata={
        "doc": "The packet mark bits policy may use (IptablesMarkMask), at least 4: accept, pass and "
               "two scratch bits, lowest first."})
    chain_insert_mode: Literal["insert", "append"] = attrs.field(default="insert", metadata={
        "doc": "Whether the jumps to Calico's chains go before (`insert`) or after (`append`) rules "
               "others put in the built-in chains (ChainInsertMode)."})
    refresh_seconds: float = attrs.field(default=90.0, validator=in_range(0, 86400), metadata={
        "doc": "The tables are read back in full at least this often, to repair changes made by "
               "others (IptablesRefreshInterval); 0: every pass."})
    ipv6: Literal["auto", "on", "off"] = attrs.field(default="auto", metadata={
        "doc": "Write ip6tables too: `auto` when the FelixConfiguration's ipv6Support is on and the "
               "kernel has IPv6."})

    def __attrs_post_init__(self) -> None:
        problems = list(self._problems())
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise ExceptionGroup("invalid [policy.iptables]", problems)

    def _problems(self):
        if _mark_bits(self.mark_mask) < 4:
            yield FieldError("mark_mask", f"needs at least 4 bits set (accept, pass, 2 scratch), got {self.mark_mask:#x}")
        for field in ("failsafe_inbound", "failsafe_outbound"):
            for i, text in enumerate(getattr(self, field) or ()):
                try:
                    parse_proto_port(text)
                except ValueError as exc:
                    yield FieldError(f"{field}[{i}]", str(exc))
        if len(self.log_prefix) > 27:
            yield FieldError("log_prefix", f"must be at most 27 characters (iptables LOG limit), got {len(self.log_prefix)}")
        if any(c in self.log_prefix for c in "\"\\\n"):
            yield FieldError("log_prefix", "must not contain quotes, backslashes or newlines")
