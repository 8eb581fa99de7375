"""Network namespace helpers built on the `ip` tool.

Every command that changes state is scoped with `ip -n NS` or
`ip netns exec NS`, so nothing here can touch the root namespace. Veth pairs
are created inside one lab namespace with the peer moved straight into
another, so they never exist in the root namespace, not even transiently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from pycalico.core import nsenter
from pycalico.core.nsenter import NetnsGone

from .state import LabError

NETNS_DIR = Path("/run/netns")
T = TypeVar("T")


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise LabError(f"`{' '.join(cmd)}` failed: {res.stderr.strip() or res.returncode}")
    return res


def available() -> tuple[bool, str]:
    """Whether this machine can build labs, with the reason when it cannot."""
    if os.geteuid() != 0:
        return False, "must run as root (network namespaces need CAP_NET_ADMIN)"
    if shutil.which("ip") is None:
        return False, "the `ip` tool (iproute2) is not installed"
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if res.returncode != 0:
        return False, f"`ip netns` is unavailable: {res.stderr.strip()}"
    return True, ""


def list_netns() -> list[str]:
    out = _ip("netns", "list").stdout
    # Lines look like "name" or "name (id: 3)".
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def add(name: str) -> None:
    _ip("netns", "add", name)


def delete(name: str) -> bool:
    """Delete a namespace; False if it was already gone."""
    if not exists(name):
        return False
    _ip("netns", "delete", name)
    return True


def add_veth(netns: str, name: str, peer_netns: str, peer_name: str) -> None:
    # `name` keyword is required: a bare "a" would parse as "address".
    _ip("link", "add", "name", name, "type", "veth",
        "peer", "name", peer_name, "netns", peer_netns, netns=netns)


def add_bridge(netns: str, name: str) -> None:
    _ip("link", "add", "name", name, "type", "bridge", netns=netns)


def set_master(netns: str, dev: str, master: str) -> None:
    _ip("link", "set", "dev", dev, "master", master, netns=netns)


def link_up(netns: str, dev: str) -> None:
    _ip("link", "set", "dev", dev, "up", netns=netns)


def add_addr(netns: str, dev: str, cidr: str) -> None:
    _ip("addr", "add", cidr, "dev", dev, netns=netns)


def add_default_route(netns: str, gateway: str) -> None:
    _ip("route", "add", "default", "via", gateway, netns=netns)


def sysctl(netns: str, key: str, value: str | int) -> None:
    # `ip netns exec` guarantees the write lands in that namespace's /proc/sys.
    cmd = ["ip", "netns", "exec", netns, "sysctl", "-qw", f"{key}={value}"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise LabError(f"sysctl {key}={value} in {netns} failed: {res.stderr.strip()}")


def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def run_in_netns(netns: str, fn: Callable[[], T], timeout: float | None = None) -> T:
    """Call fn() in a thread that has joined lab namespace `netns` (see
    pycalico.core.nsenter): in-process networking (HTTP health checks, test
    clients) inside a lab, without spawning a process or moving the main thread."""
    try:
        return nsenter.in_netns(NETNS_DIR / netns, fn, timeout)
    except NetnsGone:
        raise LabError(f"network namespace {netns} does not exist") from None
    except TimeoutError:
        raise TimeoutError(f"call in netns {netns} timed out") from None
