"""iptables primitives: rules, chains, their hashes, names and marks.

A :class:`Rule` is what Felix's ``generictables.Rule`` is: match fragments, an action
fragment and comments, rendered in Felix's order (``felix/iptables/rules.go``)::

    -A <chain> -m comment --comment "cali:<hash>" [-m comment --comment "..."] <match> <action>

Every rule carries the hash comment. The hashes of a chain are chained: the first is
seeded with the chain name, and each one hashes the previous one plus the rule rendered
as ``-A <chain> HASH <body>``; so a rule's hash also says where it is and what comes
before it, and reading a chain back needs only the hashes (Felix's ``Chain.RuleHashes``:
SHA-224, URL-safe base64, 16 characters).

Names (``felix/rules/rule_defs.go``): every chain we own starts with ``cali-``; names
longer than 28 characters keep the prefix and replace the rest by ``_`` + a hash
(``hash.GetLengthLimitedID``, :func:`pycalico.core.policy.ids.length_limited_id`).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence

import attrs

from pycalico.core.policy.ids import length_limited_id

MAX_CHAIN_NAME = 28
HASH_LENGTH = 16
HASH_PREFIX = "cali:"
CHAIN_PREFIX = "cali-"

# Static chains (``felix/rules/rule_defs.go``).
FILTER_INPUT = "cali-INPUT"
FILTER_FORWARD = "cali-FORWARD"
FILTER_OUTPUT = "cali-OUTPUT"
PREROUTING = "cali-PREROUTING"  # raw, nat and mangle
POSTROUTING = "cali-POSTROUTING"  # nat and mangle
RAW_OUTPUT = "cali-OUTPUT"
NAT_OUTPUT = "cali-OUTPUT"
NAT_OUTGOING = "cali-nat-outgoing"
FIP_DNAT = "cali-fip-dnat"
FIP_SNAT = "cali-fip-snat"
FAILSAFE_IN = "cali-failsafe-in"
FAILSAFE_OUT = "cali-failsafe-out"
WL_TO_HOST = "cali-wl-to-host"
FROM_WL_DISPATCH = "cali-from-wl-dispatch"
TO_WL_DISPATCH = "cali-to-wl-dispatch"
FROM_HOST_DISPATCH = "cali-from-host-endpoint"
TO_HOST_DISPATCH = "cali-to-host-endpoint"
FROM_HEP_FORWARD_DISPATCH = "cali-from-hep-forward"
TO_HEP_FORWARD_DISPATCH = "cali-to-hep-forward"
CIDR_BLOCK = "cali-cidr-block"
RPF_SKIP = "cali-rpf-skip"

# Per-endpoint, per-policy and per-profile prefixes.
WORKLOAD_TO = "cali-tw-"
WORKLOAD_FROM = "cali-fw-"
HOST_TO = "cali-th-"
HOST_FROM = "cali-fh-"
HOST_TO_FORWARD = "cali-thfw-"
HOST_FROM_FORWARD = "cali-fhfw-"
POLICY_IN = "cali-pi-"
POLICY_OUT = "cali-po-"
PROFILE_IN = "cali-pri-"
PROFILE_OUT = "cali-pro-"
GROUP_IN = "cali-gi-"
GROUP_OUT = "cali-go-"

# Felix's name for the endpoint of a host endpoint with interfaceName "*": longer than
# IFNAMSIZ, so that no real interface can have it.
ALL_INTERFACES = "any-interface-at-all"

KERNEL_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
}
TABLES = ("raw", "mangle", "nat", "filter")


def chain_name(prefix: str, suffix: str) -> str:
    """``prefix + suffix``, or the prefix and a hash when longer than 28 characters."""
    return length_limited_id(prefix, suffix, MAX_CHAIN_NAME)


def is_ours(name: str) -> bool:
    return name.startswith(CHAIN_PREFIX)


# --- marks ---------------------------------------------------------------------------


@attrs.frozen
class Marks:
    """Felix's mark bits, taken lowest first from the mask (``felix/dataplane/driver.go``,
    v3.28 layout): accept, pass, scratch0, scratch1. Deny drops straight away, so there is
    no drop bit."""

    accept: int
    passed: int
    scratch0: int
    scratch1: int

    @classmethod
    def from_mask(cls, mask: int) -> Marks:
        bits = [1 << i for i in range(32) if mask & (1 << i)]
        if len(bits) < 4:
            raise ValueError(f"mark mask {mask:#x} has fewer than 4 bits")
        return cls(*bits[:4])

    @property
    def all(self) -> int:
        return self.accept | self.passed | self.scratch0 | self.scratch1


# --- match and action fragments (``felix/iptables/match_builder.go``, ``actions.go``) ---


def mark_clear(mark: int) -> str:
    return f"-m mark --mark 0x0/{mark:#x}"


def mark_not_clear(mark: int) -> str:
    return f"-m mark ! --mark 0x0/{mark:#x}"


def mark_set(mark: int) -> str:
    """The single bit ``mark`` is set."""
    return f"-m mark --mark {mark:#x}/{mark:#x}"


def set_mark(mark: int) -> str:
    return f"--jump MARK --set-mark {mark:#x}/{mark:#x}"


def clear_mark(mark: int) -> str:
    return f"--jump MARK --set-mark 0x0/{mark:#x}"


def set_masked_mark(mark: int, mask: int) -> str:
    return f"--jump MARK --set-mark {mark:#x}/{mask:#x}"


def jump(target: str) -> str:
    return f"--jump {target}"


def goto(target: str) -> str:
    return f"--goto {target}"


ACCEPT = "--jump ACCEPT"
DROP = "--jump DROP"
REJECT = "--jump REJECT"
RETURN = "--jump RETURN"
NOTRACK = "--jump NOTRACK"
MASQUERADE = "--jump MASQUERADE"


def verdict(name: str) -> str:
    """ACCEPT, DROP, REJECT or RETURN as an action fragment."""
    return {"ACCEPT": ACCEPT, "DROP": DROP, "REJECT": REJECT, "RETURN": RETURN}[name.upper()]


def log(prefix: str) -> str:
    return f'--jump LOG --log-prefix "{prefix}: " --log-level 5'


_SHELL_UNSAFE = re.compile(r"[^\w @%+=:,./-]")
_TARGET = re.compile(r"--(?:jump|goto) (\S+)")
_SET = re.compile(r"--match-set (\S+)")


def escape_comment(text: str) -> str:
    """Felix's ``escapeComment`` and ``truncateComment``: unsafe characters become ``_``."""
    return _SHELL_UNSAFE.sub("_", text)[:256]


# --- rules and chains ----------------------------------------------------------------


class Rule:
    """One iptables rule: match fragments, an action fragment, comments.

    ``body`` is the rendered rule after the chain name and the hash comment.
    """

    __slots__ = ("match", "action", "comments", "body")

    def __init__(self, match: Sequence[str] = (), action: str = "", comments: Sequence[str] = ()):
        self.match = tuple(m for m in match if m)
        self.action = action
        self.comments = tuple(comments)
        parts = [f'-m comment --comment "{escape_comment(c)}"' for c in self.comments]
        parts.extend(self.match)
        if action:
            parts.append(action)
        self.body = " ".join(parts)

    def with_comments(self, *comments: str) -> Rule:
        return Rule(self.match, self.action, self.comments + comments)

    @property
    def target(self) -> str | None:
        """The chain this rule jumps or goes to, if any."""
        m = _TARGET.search(self.action)
        return m.group(1) if m else None

    @property
    def ipsets(self) -> list[str]:
        return [m.group(1) for frag in self.match for m in _SET.finditer(frag)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and self.body == other.body

    def __hash__(self) -> int:
        return hash(self.body)

    def __repr__(self) -> str:
        return f"Rule({self.body!r})"


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def rule_hashes(seed: str, chain: str, rules: Iterable[Rule]) -> tuple[str, ...]:
    """Felix's chained rule hashes (``Chain.RuleHashes``), seeded with ``seed``."""
    digest = hashlib.sha224(seed.encode()).digest()
    out = []
    for rule in rules:
        h = hashlib.sha224(digest)
        h.update(f"-A {chain} HASH {rule.body}".encode() if rule.body else f"-A {chain} HASH".encode())
        digest = h.digest()
        out.append(_b64(digest)[:HASH_LENGTH])
    return tuple(out)


class Chain:
    """A chain we own (or, with ``seed``, the rules we insert or append in a kernel chain)."""

    __slots__ = ("name", "rules", "hashes", "_ipsets")

    def __init__(self, name: str, rules: Iterable[Rule] = (), seed: str | None = None):
        self.name = name
        self.rules = tuple(rules)
        self.hashes = rule_hashes(name if seed is None else seed, name, self.rules)
        self._ipsets: frozenset[str] | None = None

    def line(self, index: int, op: str = "-A", position: int | None = None) -> str:
        """Rule ``index`` as a restore line: ``-A chain ...``, ``-I chain N ...``, ``-R chain N ...``."""
        where = f"{op} {self.name}" if position is None else f"{op} {self.name} {position}"
        body = self.rules[index].body
        comment = f'-m comment --comment "{HASH_PREFIX}{self.hashes[index]}"'
        return f"{where} {comment} {body}" if body else f"{where} {comment}"

    def lines(self) -> list[str]:
        return [self.line(i) for i in range(len(self.rules))]

    @property
    def targets(self) -> set[str]:
        return {t for t in (r.target for r in self.rules) if t}

    @property
    def ipsets(self) -> frozenset[str]:
        """The IP sets the rules match on."""
        if self._ipsets is None:
            self._ipsets = frozenset(s for r in self.rules if "--match-set" in r.body for s in r.ipsets)
        return self._ipsets

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Chain) and self.name == other.name and self.hashes == other.hashes

    def __hash__(self) -> int:
        return hash((self.name, self.hashes))

    def __repr__(self) -> str:
        return f"Chain({self.name!r}, {len(self.rules)} rules)"

    def text(self) -> str:
        """The chain as iptables-save would list it (for tests and debugging)."""
        return "\n".join(self.lines())
