"""Talking to the kernel: iptables-save / iptables-restore, ipset, and nftables' generation.

Everything acts on the network namespace of the calling thread: the commands are child
processes, which inherit it, and the netlink socket is opened in it.

* :func:`detect_backend` picks ``nft`` or ``legacy`` for ``backend = "auto"``: the mode of
  the system's ``iptables`` (``iptables --version`` says ``(nf_tables)`` or ``(legacy)``).
* :func:`read_tables` runs ``iptables-{nft,legacy}-save`` (``ip6tables-...`` for IPv6) and
  keeps, per chain, only what the diff needs: our chains' rule hashes; the kernel chains'
  rules with their hash (if ours) and their text (to delete ours by rule spec); and which
  of our chains a chain we do not own refers to.
* :func:`restore` runs ``iptables-restore --noflush --wait``: one transaction per table,
  with only the chains that change.
* :func:`nft_generation` reads the nftables ruleset generation (``NFT_MSG_GETGEN``), which
  every change to any nftables table of the namespace increments; :func:`legacy_fingerprint`
  the rule count and size of each legacy table (``IPT_SO_GET_INFO``). A pass reads the
  tables back only when these moved since our own last write or read.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Sequence

import attrs

from .chains import HASH_PREFIX, KERNEL_CHAINS, is_ours

COMMAND_TIMEOUT = 120.0


class KernelError(RuntimeError):
    """A command failed; ``detail`` holds its error output and the offending input line."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(f"{message}: {detail}" if detail else message)
        self.detail = detail


# --- commands --------------------------------------------------------------------------


def _run(argv: Sequence[str], data: str | None = None) -> str:
    try:
        res = subprocess.run(list(argv), input=data, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise KernelError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise KernelError(f"{' '.join(argv)} timed out after {COMMAND_TIMEOUT:.0f} s") from None
    if res.returncode != 0:
        raise KernelError(f"{' '.join(argv)} failed (exit {res.returncode})", _explain(res.stderr, data))
    return res.stdout


_LINE = re.compile(r"line:? (\d+)")


def _explain(stderr: str, data: str | None) -> str:
    """The error text, plus the input line it names (iptables-restore: "line 7 failed")."""
    text = stderr.strip()
    m = _LINE.search(text)
    if m and data:
        lines = data.splitlines()
        n = int(m.group(1))
        if 0 < n <= len(lines):
            text += f" [line {n}: {lines[n - 1]}]"
    return text


def detect_backend(choice: str) -> str:
    """``nft`` or ``legacy``; ``auto`` follows the system's ``iptables``."""
    if choice in ("nft", "legacy"):
        return choice
    if shutil.which("iptables"):
        try:
            out = subprocess.run(["iptables", "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        if "legacy" in out:
            return "legacy"
        if "nf_tables" in out:
            return "nft"
    return "nft" if shutil.which("iptables-nft-restore") else "legacy"


def command(backend: str, version: int, tool: str) -> str:
    """``iptables-nft-save``, ``ip6tables-legacy-restore``, ..."""
    family = "iptables" if version == 4 else "ip6tables"
    return f"{family}-{backend}-{tool}"


def restore(backend: str, version: int, text: str) -> None:
    _run([command(backend, version, "restore"), "--noflush", "--wait"], text)


def save(backend: str, version: int) -> str:
    return _run([command(backend, version, "save")])


def available(backend: str, version: int) -> bool:
    return shutil.which(command(backend, version, "restore")) is not None


# --- reading iptables back ---------------------------------------------------------------


@attrs.define
class KernelRule:
    """A rule of a kernel chain: its hash if it carries ours, whether it is ours, its spec."""

    hash: str | None
    ours: bool
    spec: str  # the rule after "-A CHAIN "


@attrs.define
class TableState:
    """What one table holds, as far as the diff cares."""

    chains: dict[str, tuple[str | None, ...]] = attrs.Factory(dict)  # our chains -> rule hashes
    kernel: dict[str, list[KernelRule]] = attrs.Factory(dict)
    foreign_refs: set[str] = attrs.Factory(set)  # our chains that chains we do not own refer to
    exists: bool = False


_HASH = re.compile(r'--comment "?' + re.escape(HASH_PREFIX) + r'([A-Za-z0-9_-]+)"?')
_TARGET = re.compile(r"(?:^| )(?:-j|-g|--jump|--goto) (cali-\S+)")


def parse_save(text: str) -> dict[str, TableState]:
    """``iptables-save`` output -> per table :class:`TableState` (absent tables are absent)."""
    tables: dict[str, TableState] = {}
    state: TableState | None = None
    kernel: tuple[str, ...] = ()
    hashes: dict[str, list[str | None]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        first = line[0]
        if first == "-":
            if not line.startswith("-A "):
                continue
            space = line.find(" ", 3)
            chain = line[3:space] if space > 0 else line[3:]
            rest = line[space + 1 :] if space > 0 else ""
            if chain.startswith("cali-"):
                i = rest.find(HASH_PREFIX)
                h = None
                if i >= 0:
                    m = _HASH.search(rest, max(0, i - 12))
                    h = m.group(1) if m else None
                hashes.setdefault(chain, []).append(h)
                continue
            m = _HASH.search(rest)
            target = _TARGET.search(rest)
            ours = m is not None or target is not None
            if chain in kernel:
                state.kernel.setdefault(chain, []).append(KernelRule(m.group(1) if m else None, ours, rest))
            elif target is not None and m is None:
                state.foreign_refs.add(target.group(1))
        elif first == ":":
            name = line[1:].split(" ", 1)[0]
            if is_ours(name):
                hashes.setdefault(name, [])
            elif name in kernel:
                state.kernel.setdefault(name, [])
        elif first == "*":
            name = line[1:].strip()
            state = tables.setdefault(name, TableState(exists=True))
            kernel = KERNEL_CHAINS.get(name, ())
            hashes = {}
        elif line.startswith("COMMIT") and state is not None:
            state.chains = {k: tuple(v) for k, v in hashes.items()}
    return tables


def read_tables(backend: str, version: int) -> dict[str, TableState]:
    return parse_save(save(backend, version))


# --- nftables generation -----------------------------------------------------------------

_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_NFT_MSG_GETGEN = 16
_NLMSG_ERROR = 2
_NFTA_GEN_ID = 1


def nft_generation() -> int | None:
    """The nftables ruleset generation of this network namespace, None if unavailable."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
    except OSError:
        return None
    try:
        sock.settimeout(2.0)
        sock.bind((0, 0))
        seq = os.getpid() & 0xFFFF
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)
        header = struct.pack("=IHHII", 16 + len(body), (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_GETGEN, 1, seq, 0)
        sock.send(header + body)
        data = sock.recv(65536)
    except OSError:
        return None
    finally:
        sock.close()
    if len(data) < 20:
        return None
    length, msg_type = struct.unpack_from("=IH", data, 0)
    if msg_type == _NLMSG_ERROR:
        return None
    offset = 16 + 4  # nlmsghdr + nfgenmsg
    while offset + 4 <= min(length, len(data)):
        nla_len, nla_type = struct.unpack_from("=HH", data, offset)
        if nla_len < 4:
            break
        if nla_type & 0x3FFF == _NFTA_GEN_ID and nla_len >= 8:
            return struct.unpack_from(">I", data, offset + 4)[0]
        offset += (nla_len + 3) & ~3
    return None


# --- legacy tables' size --------------------------------------------------------------------

_IPT_SO_GET_INFO = 64  # also IP6T_SO_GET_INFO
_GETINFO = struct.Struct("=32sI5I5III")  # name, valid_hooks, hook_entry[5], underflow[5], num_entries, size


def legacy_fingerprint() -> tuple | None:
    """The number of rules and the size of each legacy table (IPv4 and IPv6), read with
    ``IPT_SO_GET_INFO``: a cheap way to notice that someone changed them. None if unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    out = []
    for family, level in ((socket.AF_INET, socket.IPPROTO_IP), (socket.AF_INET6, socket.IPPROTO_IPV6)):
        try:
            sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except OSError:
            out.append(None)
            continue
        with sock:
            for table in ("filter", "nat", "mangle", "raw"):
                buf = ctypes.create_string_buffer(_GETINFO.pack(table.encode(), 0, *([0] * 5), *([0] * 5), 0, 0))
                size = ctypes.c_uint(_GETINFO.size)
                if libc.getsockopt(sock.fileno(), level, _IPT_SO_GET_INFO, buf, ctypes.byref(size)) != 0:
                    out.append((table, None))
                    continue
                info = _GETINFO.unpack(buf.raw[: _GETINFO.size])
                out.append((table, info[1:]))
    return tuple(out)


# --- ipset ------------------------------------------------------------------------------


@attrs.define
class SetState:
    name: str
    set_type: str
    family: str
    maxelem: int
    members: frozenset[str]


def parse_ipset_save(text: str, prefixes: tuple[str, ...] = ("cali4", "cali6")) -> dict[str, SetState]:
    """``ipset save`` output -> our sets (names starting with ``prefixes``)."""
    sets: dict[str, SetState] = {}
    members: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("add "):
            _, name, member = line.split(" ", 2)
            if name in members:
                members[name].append(member.split(" ", 1)[0])
        elif line.startswith("create "):
            parts = line.split()
            name = parts[1]
            if not name.startswith(prefixes):
                continue
            opts = dict(zip(parts[3::2], parts[4::2]))
            sets[name] = SetState(name, parts[2], opts.get("family", "inet"), int(opts.get("maxelem", "65536")),
                                  frozenset())
            members[name] = []
    for name, found in members.items():
        sets[name].members = frozenset(found)
    return sets


def read_ipsets() -> dict[str, SetState]:
    return parse_ipset_save(_run(["ipset", "save"]))


def ipset_restore(text: str) -> None:
    _run(["ipset", "restore"], text)


def ipset_destroy(name: str) -> None:
    _run(["ipset", "destroy", name])
