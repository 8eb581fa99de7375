"""Running another CNI plugin, as libcni's ``pkg/invoke`` does (FindInPath,
ExecPluginWithResult): how Calico runs a delegated IPAM plugin (``ipam.ExecAdd`` /
``ExecDel``), and the one runner here for the ``calico`` executable and the host-local
IPAM plugin.

The plugin's error is passed on with its code; the errors libcni makes itself keep
libcni's messages and codes (0 where the plugin's output was no error JSON, 999 for a
plain error, as skel wraps it), so a caller can map them to its own codes.

Standard library only (json, os, subprocess): both the agent and the executable's
in-process path import it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

ERR_INTERNAL = 999  # libcni skel: an error that is not a types.Error


class PluginError(Exception):
    """A CNI error as libcni reports it: ``code``, ``msg`` and ``details``.
    ``missing`` is set when no plugin of that name was found (nothing was run)."""

    def __init__(self, msg: str, code: int = ERR_INTERNAL, details: str = "", missing: bool = False):
        super().__init__(msg)
        self.code, self.msg, self.details, self.missing = code, msg, details, missing

    def result(self, cni_version: str = "1.0.0") -> dict:
        """The error as a CNI plugin prints it on stdout."""
        doc: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            doc["details"] = self.details
        return doc


def find_in_path(name: str, paths: str | Iterable[str]) -> str:
    """libcni's FindInPath: the first executable file ``name`` in ``paths`` (a
    ``CNI_PATH`` string or a list of directories)."""
    dirs = [d for d in (paths.split(os.pathsep) if isinstance(paths, str) else paths) if d]
    if not dirs:
        raise PluginError("no paths provided", missing=True)
    for d in dirs:
        candidate = os.path.join(d, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise PluginError(f'failed to find plugin "{name}" in path [{" ".join(dirs)}]', missing=True)


def exec_plugin(path: str, netconf: dict, env: Mapping[str, str], timeout: float | None = None) -> dict:
    """libcni's ExecPlugin: ``netconf`` on stdin, ``env`` as the whole environment; the
    result JSON the plugin printed ({} if it printed nothing, as DEL does)."""
    try:
        done = subprocess.run([path], input=json.dumps(netconf).encode(), capture_output=True, env=dict(env),
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PluginError(f"netplugin {path} did not finish within {timeout} s") from None
    if done.returncode != 0:
        stdout, stderr = done.stdout, done.stderr.decode(errors="replace")
        if not stdout:
            if not stderr:
                raise PluginError(f"netplugin failed with no error message: exit status {done.returncode}", code=0)
            raise PluginError(f"netplugin failed: {json.dumps(stderr)}", code=0)
        try:
            err = json.loads(stdout)
            if not isinstance(err, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise PluginError(f"netplugin failed but error parsing its diagnostic message "
                              f"{json.dumps(stdout.decode(errors='replace'))}: {exc}", code=0) from None
        raise PluginError(str(err.get("msg", "")), code=int(err.get("code", 0) or 0), details=str(err.get("details", "")))
    if not done.stdout.strip():
        return {}
    try:
        return json.loads(done.stdout)
    except ValueError as exc:
        raise PluginError(f"decoding version from network config: {exc}") from None


def ignore_unknown(cni_args: str) -> str:
    """CNI_ARGS with ``IgnoreUnknown=1`` in front, as Calico's AddIgnoreUnknownArgs
    sets it before running an IPAM plugin (which would refuse the Kubernetes
    arguments otherwise); unchanged if it already says."""
    if "IgnoreUnknown=" in cni_args:
        return cni_args
    return "IgnoreUnknown=1" + (f";{cni_args}" if cni_args else "")


def run_ipam(netconf: dict, env: Mapping[str, str], timeout: float | None = None) -> dict:
    """Run the IPAM plugin ``netconf["ipam"]["type"]`` from ``env["CNI_PATH"]`` for
    ``env["CNI_COMMAND"]`` with ``netconf`` on stdin (libcni's ExecAdd / ExecDel): its
    result ({} for DEL). PluginError with the plugin's error, or libcni's."""
    ipam = netconf.get("ipam")
    if not isinstance(ipam, dict) or not ipam.get("type"):
        raise PluginError("IPAM config missing 'type' key")
    path = find_in_path(str(ipam["type"]), env.get("CNI_PATH", ""))
    return exec_plugin(path, netconf, {**env, "CNI_ARGS": ignore_unknown(env.get("CNI_ARGS", ""))}, timeout)
