"""Talking to the kernel: the ``nft`` executable, and the ruleset generation over netlink.

Everything acts on the network namespace of the calling thread: ``nft`` is started from
it (a child process inherits the thread's namespace) and the netlink socket is opened in
it.

The generation (``NFT_MSG_GETGEN``) is a counter the kernel bumps on every committed
nftables transaction in the namespace, whatever table it touched. Reading it costs a few
microseconds, where reading the table back costs up to seconds at thousands of chains, so
the dataplane reads the table back only when the generation moved since its own last
write: then someone else committed something, perhaps to our table.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess

from .names import FAMILY, TABLE
from .state import TableState, parse_table

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2


class NftError(RuntimeError):
    """``nft`` failed; ``script`` is what it was given, if anything."""

    def __init__(self, message: str, script: str = ""):
        super().__init__(message)
        self.script = script


def generation() -> int:
    """The nftables ruleset generation of the calling thread's network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.settimeout(5)
        payload = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)  # struct nfgenmsg
        header = struct.pack("=IHHII", 16 + len(payload), (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, NLM_F_REQUEST, 1, 0)
        sock.sendto(header + payload, (0, 0))
        data = sock.recv(65536)
    finally:
        sock.close()
    length, msg_type = struct.unpack_from("=IH", data, 0)
    if msg_type == NLMSG_ERROR:
        (errno,) = struct.unpack_from("=i", data, 16)
        raise OSError(-errno, f"NFT_MSG_GETGEN: {os.strerror(-errno)}")
    offset = 16 + 4
    while offset + 4 <= length:
        attr_len, attr_type = struct.unpack_from("=HH", data, offset)
        if attr_type & 0x3FFF == NFTA_GEN_ID:
            return struct.unpack_from(">I", data, offset + 4)[0]
        offset += (attr_len + 3) & ~3
    raise OSError("NFT_MSG_GETGEN: no generation id in the reply")


class Nft:
    """The ``nft`` executable, scoped to the table ``inet calico``."""

    def __init__(self, command: str = "nft"):
        self.command = command

    def _run(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.command, *args], input=stdin, capture_output=True, text=True, timeout=300)
        except FileNotFoundError:
            raise NftError(f"{self.command!r} not found: install nftables") from None

    def apply(self, script: str) -> None:
        """Run ``script`` as one atomic transaction (``nft -f -``)."""
        res = self._run(["-f", "-"], script)
        if res.returncode != 0:
            raise NftError(f"nft -f failed: {res.stderr.strip()[:2000]}", script)

    def check(self, script: str) -> None:
        """Check ``script`` against the kernel without committing it (``nft -c -f -``)."""
        res = self._run(["-c", "-f", "-"], script)
        if res.returncode != 0:
            raise NftError(f"nft -c -f failed: {res.stderr.strip()[:2000]}", script)

    def read(self) -> TableState | None:
        """The table as the kernel has it, or None when there is no such table."""
        res = self._run(["-j", "list", "table", FAMILY, TABLE])
        if res.returncode != 0:
            if "No such file or directory" in res.stderr:
                return None
            raise NftError(f"nft list table {FAMILY} {TABLE} failed: {res.stderr.strip()[:2000]}")
        return parse_table(json.loads(res.stdout), FAMILY, TABLE)

    def remove(self) -> bool:
        """Delete the table with everything in it; False when there was none."""
        res = self._run(["delete", "table", FAMILY, TABLE])
        if res.returncode != 0:
            if "No such file or directory" in res.stderr:
                return False
            raise NftError(f"nft delete table {FAMILY} {TABLE} failed: {res.stderr.strip()[:2000]}")
        return True

    def list_text(self) -> str:
        res = self._run(["list", "table", FAMILY, TABLE])
        if res.returncode != 0:
            raise NftError(f"nft list table failed: {res.stderr.strip()}")
        return res.stdout
