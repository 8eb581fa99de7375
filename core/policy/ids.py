"""Identifiers: Calico's IP set ids and names, and short content hashes.

IP set ids are Felix's (``libcalico-go/lib/hash/unique_id.go``,
``felix/calc/rule_scanner.go``, ``felix/ipsets/ipset_defs.go``):

* a selector's set: ``s:`` + base64url(SHA-224("s:" + canonical selector));
* a named port's set: ``n:`` + base64url(SHA-224("n:" + "<selector id>,<tcp|udp|sctp>,<port name>"));
* the dataplane name: ``cali40`` (IPv4) or ``cali60`` (IPv6) + id, cut to 31 characters.

Content hashes (``content_hash``) are ours: a short digest of a value's ``repr`` so that a
dataplane can tell that a rule, policy or endpoint chain is unchanged without comparing it.
"""

from __future__ import annotations

import base64
import hashlib

MAX_IPSET_NAME = 31
IPSET_PREFIX = {4: "cali40", 6: "cali60"}
HASH_LENGTH = 16

# Felix's fixed IP set ids (``felix/rules/rule_defs.go``).
ALL_POOLS_SET = "all-ipam-pools"
MASQ_POOLS_SET = "masq-ipam-pools"


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def unique_id(prefix: str, content: str) -> str:
    """Calico's ``hash.MakeUniqueID``: ``<prefix>:`` + base64url(SHA-224("<prefix>:<content>"))."""
    return f"{prefix}:" + _b64(hashlib.sha224(f"{prefix}:{content}".encode()).digest())


def selector_set_id(selector: str) -> str:
    """The id of the IP set of a (canonical) selector."""
    return unique_id("s", selector)


def named_port_set_id(selector: str, protocol: str, port_name: str) -> str:
    """The id of a named-port IP set: endpoints matching ``selector`` with port ``port_name``."""
    return unique_id("n", f"{selector_set_id(selector)},{protocol},{port_name}")


def service_set_id(namespace: str, name: str, *, include_ports: bool) -> str:
    """The id of a Kubernetes service's IP set (``svc:`` with ports, ``svcnoport:`` without)."""
    return unique_id("svc" if include_ports else "svcnoport", f"{namespace}/{name}")


def ipset_name(set_id: str, version: int) -> str:
    """The kernel name of an IP set: ``cali40s:qMt7iLlGDhvLnCjM0l9nzxb`` (31 characters at most)."""
    return (IPSET_PREFIX[version] + set_id)[:MAX_IPSET_NAME]


def length_limited_id(prefix: str, suffix: str, max_length: int) -> str:
    """Calico's ``hash.GetLengthLimitedID``, as chain names use it.

    ``prefix + suffix`` when it fits; otherwise ``prefix + "_" +`` base64url(SHA-256(suffix))
    cut to ``max_length``. A suffix that starts with ``_`` and fills the length exactly is
    hashed too, so that it cannot be mistaken for a hashed one.
    """
    suffix = suffix or "_"
    total = len(prefix) + len(suffix)
    if total > max_length or (total == max_length and suffix.startswith("_")):
        room = max_length - 1 - len(prefix)
        if room <= 0:
            raise ValueError(f"max_length {max_length} is too small for prefix {prefix!r}")
        return prefix + "_" + _b64(hashlib.sha256(suffix.encode()).digest())[:room]
    return prefix + suffix


def content_hash(value: object) -> str:
    """A short, stable digest of ``repr(value)`` (tuples, strings, numbers, attrs values)."""
    return _b64(hashlib.sha224(repr(value).encode()).digest())[:HASH_LENGTH]
