"""Running Python inside another network namespace without moving the process.

setns() moves only the calling thread, so the call runs in a fresh thread that joins
the namespace: sockets it opens (netlink, HTTP) live there, and subprocesses it
starts inherit it. The process's own threads stay where they are.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

_CLONE_NEWNET = 0x40000000
_SO_NETNS_COOKIE = 71
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


class NetnsGone(Exception):
    """There is no network namespace at that path (any more)."""


def in_netns(path: str | os.PathLike, fn: Callable[[], T], timeout: float | None = None) -> T:
    """``fn()`` called in a thread that has joined the network namespace at ``path``;
    its result or exception comes back. NetnsGone if there is no namespace there,
    TimeoutError if ``fn`` has not returned within ``timeout`` seconds."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            out["error"] = NetnsGone(str(path))
            return
        except OSError as exc:
            out["error"] = exc
            return
        try:
            if _libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                gone = err == errno.EINVAL  # not a namespace file
                out["error"] = NetnsGone(str(path)) if gone else OSError(err, os.strerror(err), str(path))
                return
        finally:
            os.close(fd)
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed back to the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{os.path.basename(path)}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"network namespace {path}: no answer within {timeout:.0f} s")
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out.get("value")  # type: ignore[return-value]


def netns_id() -> tuple[int, int]:
    """The calling thread's network namespace: its inode, and its cookie (which, unlike
    the inode, is never reused by a later namespace; 0 where the kernel lacks it)."""
    inode = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            cookie = struct.unpack("=Q", sock.getsockopt(socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8))[0]
    except OSError:
        cookie = 0
    return inode, cookie
