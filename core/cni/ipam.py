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
container that did not finish) reuses them instead of assigning more: the assignment
creates the handle, and finding it there already (HandleExists) is how a repeated ADD
is told, without reading the handle first.

Other IPAM types (``host-local``...) are run as Calico runs them: the executable found
in CNI_PATH, the same network configuration on stdin (``invoke``; host-local's
``usePodCidr`` replaced first, by ``pycalico.plugins.ipam.host_local``).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import time
from collections.abc import Mapping

from . import spec
from .invoke import PluginError
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


class HandleExists(Exception):
    """The IPAM handle of this container exists already: a repeated ADD, or one that
    stopped half way. Nothing was assigned."""


def calico_assign(ipam, handle: str, attrs: dict[str, str], conf: IPAMConf, lock_path: str = "",
                  new_handle: bool = False) -> list[IPConfig]:
    """Newly assigned addresses for ``handle``, each with its block's prefix length, as
    Calico returns them. With ``new_handle``, HandleExists if the handle exists
    already: the caller tells a repeated request that way instead of reading the
    handle first."""
    from pycalico.plugins.ipam.calico_ipam import HandleInUse, IPAMError, IPAMExhausted, NoPool

    with HostLock(lock_path):
        for attempt in (1, 2):
            try:
                got = ipam.auto_assign(handle, attrs, num_v4=conf.num_v4, num_v6=conf.num_v6,
                                       pools=list(conf.ipv4_pools + conf.ipv6_pools) or None, new_handle=new_handle)
                break
            except HandleInUse:
                raise HandleExists(handle) from None
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


def delegate(command: str, netconf: dict, env: Mapping[str, str], datastore, node: str) -> Result | None:
    """Run the IPAM plugin ``ipam.type`` for ``command`` as Calico's AddIPAM / DeleteIPAM
    do: host-local's ``usePodCidr`` replaced (the node's pod CIDRs from ``datastore`` on
    ADD, a dummy on DEL), then the plugin executed by the CNI's runner. Its result for
    ADD (Calico's error if it holds no address), None otherwise. Errors become CNI
    errors: the plugin's own keep their code, a plugin missing from CNI_PATH is code 4,
    libcni's code 0 (no readable error from the plugin) is 999."""
    from pycalico.plugins.ipam.host_local import delegate as run

    name = (netconf.get("ipam") or {}).get("type", "")
    try:
        out = run(netconf, {**env, "CNI_COMMAND": command}, datastore=datastore, node=node,
                  timeout=DELEGATE_TIMEOUT)
    except PluginError as exc:
        code = spec.INVALID_ENVIRONMENT if exc.missing else exc.code or spec.GENERIC
        where = "CNI_PATH" if exc.missing else f"IPAM plugin {name}"
        raise CniError(code, f"{where}: {exc.msg}", exc.details) from None
    if command != "ADD":
        return None
    result = spec.parse_result(out, f"the result of IPAM plugin {name}")
    if not result.ips:
        raise CniError(spec.GENERIC, "IPAM plugin returned missing IP config")
    return result
