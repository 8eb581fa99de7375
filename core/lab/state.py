"""The lab's state file and the processes it records.

state.json is the single source of truth for teardown: `up` records every
namespace and process *before* (namespaces) or right after (processes)
creating it, so `down` can clean up after a crash at any point.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import cattrs

STATE_FILE = "state.json"
STATE_TMP = "state.tmp"
STATE_VERSION = 1
DEFAULT_STATE_ROOT = Path("/run/pycalico-lab")


class LabError(Exception):
    """An error with a one-line message meant for the user."""


def default_state_root() -> Path:
    return Path(os.environ.get("PYCALICO_LAB_DIR") or DEFAULT_STATE_ROOT)


@attrs.define
class NodeRecord:
    name: str
    netns: str
    ip: str
    prefixlen: int
    gateway: str
    config_path: str
    # A bare node's own root (overlays and its /run; see machine.py); empty otherwise.
    root: str = ""

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"


@attrs.define
class ProcessRecord:
    name: str
    pid: int
    # starttime (field 22 of /proc/<pid>/stat) plus boot id identify the process
    # for certain, so a recycled pid is never signalled.
    start_time: int
    boot_id: str
    netns: str
    argv: list[str]
    log_path: str

    def alive(self) -> bool:
        return proc_identity(self.pid) == (self.start_time, self.boot_id)


@attrs.define
class TyphaRecord:
    """One calico-typha replica: its process is named ``name``; agents dial
    ``host:port``, health and metrics listen on their own ports in the cp namespace."""

    name: str
    host: str
    port: int
    health_port: int
    metrics_port: int
    config_path: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@attrs.define
class LabState:
    name: str
    state_dir: str
    subnets: int
    underlay_netns: str
    cp_netns: str
    cp_ip: str
    etcd_endpoints: list[str]
    nodes: list[NodeRecord] = attrs.Factory(list)
    # Plugins in each node's calico.toml; agents: whether calico-node runs on each node.
    routing: str = "none"
    policy: str = "iptables"
    agents: bool = False
    # Bare nodes: machines of their own for an installer to provision (machine.py).
    bare: bool = False
    # calico-typha replicas in the cp namespace; the nodes' agents read through them.
    typhas: list[TyphaRecord] = attrs.Factory(list)
    # In creation order; torn down in reverse.
    namespaces: list[str] = attrs.Factory(list)
    processes: list[ProcessRecord] = attrs.Factory(list)
    complete: bool = False
    version: int = STATE_VERSION


_converter = cattrs.Converter()


def state_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def save_state(state: LabState) -> None:
    # Write-then-rename so a crash never leaves a truncated state file behind.
    path = state_path(Path(state.state_dir))
    tmp = path.with_name(STATE_TMP)
    with open(tmp, "w") as f:
        json.dump(_converter.unstructure(state), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(state_dir: Path) -> LabState:
    path = state_path(state_dir)
    try:
        raw = json.loads(path.read_text())
        return _converter.structure(raw, LabState)
    except FileNotFoundError:
        raise
    except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as e:
        raise LabError(f"corrupt lab state file {path}: {e}") from None


# --- process identity, startup and termination -------------------------------


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def proc_identity(pid: int) -> tuple[int, str] | None:
    """(starttime, boot_id) of a live, non-zombie process, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parens; the fields after it don't.
    fields = stat.rsplit(")", 1)[1].split()
    state, start_time = fields[0], int(fields[19])
    if state in ("Z", "X"):
        return None
    return start_time, boot_id()


def log_tail(log_path: Path | str, lines: int = 15) -> str:
    try:
        text = Path(log_path).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def wait_ready(name: str, why_not: Callable[[], str | None], log_path: Path | str,
               is_alive: Callable[[], bool], timeout: float) -> None:
    """Poll ``why_not`` (None: ready, else the reason) until the process called ``name``
    is ready; LabError with its log tail if it exits or stays unready for ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        reason = why_not()
        if reason is None:
            return
        if not is_alive():
            raise LabError(f"{name} exited during startup; log tail ({log_path}):\n{log_tail(log_path)}")
        if time.monotonic() >= deadline:
            raise LabError(f"{name} not ready after {timeout:.0f}s ({reason}); "
                           f"log tail ({log_path}):\n{log_tail(log_path)}")
        time.sleep(0.2)


def _reap(pid: int) -> None:
    # When the lab was started by this very process (tests), the dead child
    # would linger as a zombie; reap it. Not our child: nothing to do.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _wait_gone(rec: ProcessRecord, timeout: float, reap: bool) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if reap:
            _reap(rec.pid)
        if not rec.alive():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate(rec: ProcessRecord, timeout: float = 5.0, group: bool = True,
              reap: bool = True) -> bool:
    """SIGTERM, wait, SIGKILL. Returns True if it was alive and we ended it.

    Spawned processes lead their own session, so signalling the group
    (group=True) also ends children they forked. The identity check comes
    first: a pid that was recycled is never signalled. reap=False leaves the
    exit status to whoever else may be waiting for it (zombies count as gone).
    """
    if not rec.alive():
        if reap:
            _reap(rec.pid)
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        try:
            if not group:
                raise ProcessLookupError
            os.killpg(rec.pid, sig)
        except (ProcessLookupError, PermissionError):
            # Not (or no longer) a group leader: signal just the process.
            try:
                os.kill(rec.pid, sig)
            except ProcessLookupError:
                pass
        if _wait_gone(rec, wait, reap):
            return True
        if not rec.alive():
            return True
    raise LabError(f"process {rec.name} (pid {rec.pid}) survived SIGKILL")
