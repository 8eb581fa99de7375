"""The IPAM step of ADD and DEL: calico-ipam in process, any other IPAM plugin executed.

calico-ipam (``cni-plugin/pkg/ipamplugin/ipam_plugin.go``): handle
``<net name>.<containerID>``, owner attributes ``node`` and ``timestamp`` (+ ``pod`` and
``namespace`` for Kubernetes), one IPv4 address unless ``ipam.assign_ipv4`` is "false",
one IPv6 address if ``ipam.assign_ipv6`` is "true", pools from ``ipam.ipv4_pools`` /
``ipv6_pools`` (names or CIDRs), all under a best-effort host-wide file lock
(``ipam_lock_file``, default ``/var/run/calico/ipam.lock``) so one node's requests take
turns on its block instead of racing for it. DEL releases the handle, then the v2-era
one (``<ns>.<pod>``, or the container ID).

Unlike Calico, an ADD whose handle already holds addresses (an earlier ADD of the same
container that did not finish) reuses them instead of assigning more.

Other IPAM types (``host-local``...) are run as Calico runs them: the executable found
in CNI_PATH, the same network configuration on stdin.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Mapping

from . import spec
from .netconf import DEFAULT_IPAM_LOCK, IPAMConf
from .spec import CniError, IPConfig, Result

LOCK_TIMEOUT = 90.0
DELEGATE_TIMEOUT = 60.0


class HostLock:
    """Calico's best-effort host-wide IPAM lock (flock). A lock that cannot be taken
    for a reason other than contention is skipped, as Calico does; one held by others
    for longer than 90 s is an error (try again later)."""

    def __init__(self, path: str = "", timeout: float = LOCK_TIMEOUT):
        self.path = path or DEFAULT_IPAM_LOCK
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> HostLock:
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return self  # best effort
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    return self
            if time.monotonic() > deadline:
                os.close(fd)
                raise CniError(spec.TRY_AGAIN_LATER,
                               f"the IPAM lock {self.path} has been held by another process for "
                               f"{self.timeout:.0f} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


# --- calico-ipam ------------------------------------------------------------------------------


def calico_assign(ipam, handle: str, attrs: dict[str, str], conf: IPAMConf, lock_path: str = "",
                  check_held: bool = True) -> list[IPConfig]:
    """Addresses for ``handle``: those it already holds (unless the caller just looked:
    ``check_held=False``), else newly assigned. Each comes with its block's prefix
    length, as Calico returns it."""
    from pycalico.plugins.ipam.calico_ipam import IPAMError, IPAMExhausted, NoPool

    with HostLock(lock_path):
        if check_held:
            held = calico_held(ipam, handle)
            if held:
                return held
        for attempt in (1, 2):
            try:
                got = ipam.auto_assign(handle, attrs, num_v4=conf.num_v4, num_v6=conf.num_v6,
                                       pools=list(conf.ipv4_pools + conf.ipv6_pools) or None)
                break
            except (NoPool, IPAMExhausted) as exc:
                # The agent's view of the pools may be a second old: look again once.
                refresh = getattr(ipam.datastore, "invalidate", None)
                if attempt == 1 and refresh is not None:
                    refresh()
                    continue
                if isinstance(exc, NoPool):
                    raise CniError(spec.GENERIC, f"no IP pool can give this workload an address: {exc} (create "
                                                 "an IPPool, or fix ipam.ipv4_pools / ipam.ipv6_pools)") from None
                raise CniError(spec.GENERIC, f"IPAM: {exc}") from None
            except IPAMError as exc:
                raise CniError(spec.GENERIC, f"IPAM: {exc}") from None
    return [IPConfig(str(i)) for i in got.all]


def calico_release(ipam, handles: list[str], lock_path: str = "") -> list:
    """Release every address of each handle (a handle that does not exist holds none)."""
    released = []
    with HostLock(lock_path):
        for handle in dict.fromkeys(h for h in handles if h):
            released += ipam.release_by_handle(handle)
    return released


def calico_holds(ipam, handle: str) -> list:
    return ipam.ips_by_handle(handle)


def calico_held(ipam, handle: str) -> list[IPConfig]:
    """The addresses ``handle`` already holds (one read when it holds none), with their
    blocks' prefix lengths."""
    out = []
    for ip in ipam.ips_by_handle(handle):
        try:
            prefix = ipaddress.ip_network(ipam.get_assignment_attributes(ip).block).prefixlen
        except Exception:
            prefix = ip.max_prefixlen
        out.append(IPConfig(f"{ip}/{prefix}"))
    return out


# --- delegated IPAM plugins ---------------------------------------------------------------------


def find_plugin(name: str, cni_path: tuple[str, ...]) -> str:
    for d in cni_path:
        candidate = os.path.join(d, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise CniError(spec.INVALID_ENVIRONMENT,
                   f"CNI_PATH: no IPAM plugin {name!r} in {':'.join(cni_path) or '(empty CNI_PATH)'} (ipam.type)")


def delegate(name: str, command: str, netconf: dict, env: Mapping[str, str], cni_path: tuple[str, ...]) -> Result | None:
    """Run IPAM plugin ``name`` for ``command`` with ``netconf`` on stdin, as libcni's
    ExecAdd/ExecDel do; its error is passed on with its code."""
    path = find_plugin(name, cni_path)
    run_env = {**env, "CNI_COMMAND": command}
    try:
        proc = subprocess.run([path], input=json.dumps(netconf).encode(), capture_output=True,
                              env=run_env, timeout=DELEGATE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CniError(spec.GENERIC, f"IPAM plugin {name} {command} did not finish within "
                                     f"{DELEGATE_TIMEOUT:.0f} s") from None
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        try:
            err = json.loads(out)
            raise CniError(int(err.get("code") or spec.GENERIC),
                           f"IPAM plugin {name}: {err.get('msg') or 'failed'}", err.get("details") or "")
        except (ValueError, AttributeError):
            raise CniError(spec.GENERIC, f"IPAM plugin {name} {command} failed (exit {proc.returncode}): "
                                         f"{out or proc.stderr.decode(errors='replace').strip()}") from None
    if command != "ADD":
        return None
    try:
        data = json.loads(out)
    except ValueError:
        raise CniError(spec.DECODE_FAILURE, f"IPAM plugin {name} printed no JSON result: {out[:200]!r}") from None
    result = spec.parse_result(data, f"the result of IPAM plugin {name}")
    if not result.ips:
        raise CniError(spec.GENERIC, f"IPAM plugin {name} returned no IP addresses")
    return result
