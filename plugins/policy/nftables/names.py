"""Names in the table ``inet calico``: Felix's where Felix has them.

* Sets: Felix's IP set names (``cali40`` / ``cali60`` + Calico's set id, cut to 31
  characters) with ``:`` made ``-`` as Felix's nftables dataplane does
  (``LegalizeSetName``): ``cali40s-qMt7iLlGDhvLnCjM0l9nzxb``, ``cali40masq-ipam-pools``.
* Chains (``felix/rules/rule_defs.go``): ``cali-pi-`` / ``cali-po-`` + ``<tier>/<policy
  key>`` (policy ingress / egress), ``cali-pri-`` / ``cali-pro-`` + profile name,
  ``cali-tw-`` / ``cali-fw-`` + interface (to / from a workload), ``cali-fh-`` / ``cali-th-``
  (from / to a host endpoint), ``cali-fhfw-`` / ``cali-thfw-`` (its forward chains); longer
  than 28 characters, the suffix becomes ``_`` + a hash (``length_limited_id``). A host
  endpoint's untracked and pre-DNAT chains get the prefix of the layer they run in, as
  Felix's single nftables table does: ``raw-cali-fh-eth0``, ``mangle-cali-fh-eth0``.
* Base chains, one per hook, named like Felix's: ``raw-PREROUTING``, ``raw-OUTPUT``,
  ``mangle-PREROUTING``, ``filter-INPUT``, ``filter-FORWARD``, ``filter-OUTPUT``,
  ``nat-POSTROUTING``.
"""

from __future__ import annotations

import functools
import re

from pycalico.core.policy import ids

FAMILY = "inet"
TABLE = "calico"
MAX_CHAIN_NAME = 28  # Felix's nftables.MaxChainNameLength

# Identifiers nft reads unquoted; anything else in a name suffix is hashed.
_SAFE = re.compile(r"[A-Za-z0-9_./-]*")

ALL_INTERFACES = "any-interface-at-all"  # Felix's chain suffix for interfaceName "*"

# Static chains and the dispatch chains (each dispatch chain looks its interface up in
# the verdict map of the same name).
WL_TO_HOST = "cali-wl-to-host"
FROM_WL_DISPATCH = "cali-from-wl-dispatch"
TO_WL_DISPATCH = "cali-to-wl-dispatch"
FROM_HEP_DISPATCH = "cali-from-host-endpoint"
TO_HEP_DISPATCH = "cali-to-host-endpoint"
FROM_HEP_FORWARD = "cali-from-hep-forward"
TO_HEP_FORWARD = "cali-to-hep-forward"
RAW_FROM_HEP = "raw-cali-from-host-endpoint"
RAW_TO_HEP = "raw-cali-to-host-endpoint"
MANGLE_FROM_HEP = "mangle-cali-from-host-endpoint"
FAILSAFE_IN = "cali-failsafe-in"
FAILSAFE_OUT = "cali-failsafe-out"
NAT_OUTGOING = "cali-nat-outgoing"

# The anti-spoofing sets: (interface, allowed source) pairs of every local workload.
WL_SOURCES = {4: "cali40wl-sources", 6: "cali60wl-sources"}


@functools.lru_cache(maxsize=1 << 16)
def limited(prefix: str, suffix: str) -> str:
    """``prefix + suffix``, hashed when too long or not a plain nft identifier."""
    if not _SAFE.fullmatch(suffix):
        return ids.length_limited_id(prefix, "_" * MAX_CHAIN_NAME + suffix, MAX_CHAIN_NAME)
    return ids.length_limited_id(prefix, suffix, MAX_CHAIN_NAME)


@functools.lru_cache(maxsize=1 << 16)
def set_name(set_id: str, version: int) -> str:
    return ids.ipset_name(set_id, version).replace(":", "-")


@functools.lru_cache(maxsize=1 << 16)
def policy_chain(direction: str, tier: str, key: str) -> str:
    return limited("cali-pi-" if direction == "ingress" else "cali-po-", f"{tier}/{key}")


@functools.lru_cache(maxsize=1 << 16)
def profile_chain(direction: str, name: str) -> str:
    return limited("cali-pri-" if direction == "ingress" else "cali-pro-", name)


def _iface(interface: str) -> str:
    return ALL_INTERFACES if interface == "*" else interface


@functools.lru_cache(maxsize=1 << 16)
def workload_chain(direction: str, interface: str) -> str:
    return limited("cali-tw-" if direction == "ingress" else "cali-fw-", interface)


@functools.lru_cache(maxsize=1 << 16)
def host_chain(direction: str, interface: str, kind: str = "normal") -> str:
    """A host endpoint's chain; ``kind`` is normal, forward, untracked or pre-dnat."""
    inbound = direction == "ingress"
    if kind == "forward":
        return limited("cali-fhfw-" if inbound else "cali-thfw-", _iface(interface))
    name = limited("cali-fh-" if inbound else "cali-th-", _iface(interface))
    if kind == "untracked":
        return "raw-" + name
    if kind == "pre-dnat":
        return "mangle-" + name
    return name
