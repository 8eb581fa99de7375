"""host-local: Calico's host-local IPAM mode.

The CNI network config names ``"ipam": {"type": "host-local", ...}`` with the special
subnet ``usePodCidr`` (and/or ``usePodCidrIPv6``), at the top of the ``ipam`` section or
in its ``ranges``. On ADD (and CHECK) the Calico CNI plugin replaces them with the
node's pod CIDRs, on DEL with ``0.0.0.0/0`` / ``::/0`` (host-local releases by
container ID, so any valid CIDR does), and execs the real ``host-local`` binary found
in ``CNI_PATH`` with the rewritten config on stdin and the same ``CNI_*`` environment
(``cni-plugin/internal/pkg/utils/utils.go`` ReplaceHostLocalIPAMPodCIDRs, AddIPAM,
DeleteIPAM; ``pkg/k8s/k8s.go`` getPodCidrs). The binary is run by the CNI's plugin
runner, ``pycalico.core.cni.invoke``, as the ``calico`` executable runs any IPAM plugin.

Where the pod CIDRs come from: the Calico Node resource of this node, its
``status.podCIDRs``, read from the datastore. With the Kubernetes datastore that is the
Kubernetes Node's ``spec.podCIDRs`` (what Calico reads, through the same conversion);
with etcd nothing fills it in, so an etcd cluster using ``usePodCidr`` must write the
pod CIDRs into each Node's status itself (``calicoctl apply`` keeps a Node's status),
and ADD fails with a message saying so until it does. (Calico reads the Kubernetes API directly, even with etcd, and only for pods
of the ``k8s`` orchestrator.)

Entry points:

* :func:`delegate` ``(netconf, env, *, datastore=None, node=None) -> dict``: what the
  Calico CNI plugin calls in place of ``ipam.ExecAdd`` / ``ExecDel``; returns the
  plugin's result (``{}`` for DEL) or raises :class:`PluginError`.
* :func:`replace_pod_cidrs`: the substitution alone, on a copy of the config.
* The ``pycalico_ipam`` hook (``[ipam] type = "host-local"`` in calico.toml) returns a
  :class:`HostLocalIPAM`: the node's pod CIDRs (the address ranges that are this node's,
  for routing) and :meth:`HostLocalIPAM.delegate` bound to the agent's datastore. The
  plugin takes no options (so no ``[ipam.host-local]`` table).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from pycalico.core.cni.invoke import PluginError, run_ipam
from pycalico.hooks import hookimpl

NAME = "host-local"
USE_POD_CIDR = "usePodCidr"
USE_POD_CIDR_V6 = "usePodCidrIPv6"
DUMMY_V4, DUMMY_V6 = "0.0.0.0/0", "::/0"
NODENAME_FILE = "/var/lib/calico/nodename"

__all__ = [
    "NAME",
    "HostLocalIPAM",
    "PluginError",
    "delegate",
    "node_name",
    "node_pod_cidrs",
    "plugin",
    "replace_pod_cidrs",
]


# --- the substitution --------------------------------------------------------------------------


def replace_pod_cidrs(netconf: dict, get_pod_cidrs: Callable[[], tuple[str, str]]) -> dict:
    """A copy of ``netconf`` whose ``usePodCidr`` / ``usePodCidrIPv6`` subnets (compared
    case-insensitively, in ``ipam`` itself and in every range of ``ipam.ranges``) are
    replaced by the IPv4 / IPv6 CIDR ``get_pod_cidrs()`` returns. ``get_pod_cidrs`` is
    called only if a subnet asks for it, at most once. Unknown keys are kept."""
    out = copy.deepcopy(netconf)
    ipam = out.get("ipam")
    if not isinstance(ipam, dict):
        raise PluginError(f"failed to parse host-local IPAM data; was expecting a dict, not: {_go(ipam)}")
    cached: list[tuple[str, str]] = []

    def cidrs() -> tuple[str, str]:
        if not cached:
            cached.append(get_pod_cidrs())
        return cached[0]

    _replace_one(ipam, cidrs)
    ranges = ipam.get("ranges")
    if ranges is not None:
        if not isinstance(ranges, list):
            raise PluginError(f"failed to parse host-local IPAM ranges section; was expecting a list, not: {_go(ranges)}")
        for range_set in ranges:
            if not isinstance(range_set, list):
                raise PluginError(f"failed to parse host-local IPAM range set; was expecting a list, not: {_go(range_set)}")
            for r in range_set:
                _replace_one(r, cidrs)
    return out


def _replace_one(section: Any, cidrs: Callable[[], tuple[str, str]]) -> None:
    if not isinstance(section, dict):
        raise PluginError(f"failed to parse host-local IPAM data; was expecting a dict, not: {_go(section)}")
    subnet = section.get("subnet")
    if not isinstance(subnet, str):
        return
    if subnet.lower() == USE_POD_CIDR.lower():
        v4, _ = cidrs()
        if not v4:
            raise PluginError("usePodCidr found but there is no IPv4 CIDR configured")
        section["subnet"] = v4
    elif subnet.lower() == USE_POD_CIDR_V6.lower():
        _, v6 = cidrs()
        if not v6:
            raise PluginError("usePodCidrIPv6 found but there is no IPv6 CIDR configured")
        section["subnet"] = v6


def _go(value: Any) -> str:
    """Roughly how Go's %v shows a decoded JSON value."""
    if value is None:
        return "<nil>"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


# --- where the pod CIDRs come from --------------------------------------------------------------


def node_name(netconf: Mapping[str, Any]) -> str:
    """Calico's node name for the pod-CIDR lookup: ``kubernetes.node_name``, else
    ``nodename``, else the file ``nodename_file`` (default /var/lib/calico/nodename),
    else the deprecated ``hostname``, else the host name."""
    k8s = netconf.get("kubernetes") or {}
    if isinstance(k8s, dict) and k8s.get("node_name"):
        return str(k8s["node_name"])
    if netconf.get("nodename"):
        return str(netconf["nodename"])
    try:
        with open(netconf.get("nodename_file") or NODENAME_FILE, encoding="utf-8") as f:
            name = f.read().strip()
        if name:
            return name
    except OSError:
        pass
    if netconf.get("hostname"):
        return str(netconf["hostname"])
    return socket.gethostname().lower()


def node_pod_cidrs(datastore, node: str) -> tuple[str, str]:
    """(IPv4 CIDR, IPv6 CIDR) of ``node``'s ``status.podCIDRs``; "" for a family it has
    none of. PluginError if the Node does not exist or has no pod CIDR."""
    from pycalico.core.datastore import NotFound

    try:
        resource = datastore.get("Node", node)
    except NotFound:
        raise PluginError(f'nodes "{node}" not found') from None
    cidrs = list((resource.status.pod_cidrs if resource.status is not None else None) or ())
    if not cidrs:
        raise PluginError(
            f"no podCidr for node {node}: usePodCidr takes the node's pod CIDRs from the Calico Node's "
            "status.podCIDRs, which the Kubernetes datastore fills in from the Kubernetes Node's "
            "spec.podCIDRs; with the etcd datastore nothing does: set status.podCIDRs on the Node "
            "(calicoctl apply) or give host-local an explicit subnet"
        )
    v4 = v6 = ""
    for text in cidrs:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise PluginError(f"invalid CIDR address: {text}") from exc
        if net.version == 4:
            v4 = text
        else:
            v6 = text
    if len(cidrs) > 1 and (not v4 or not v6):
        raise PluginError("ClusterCIDR contains two ranges of the same type")
    return v4, v6


def _datastore_env(netconf: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Calico's CreateClient: the netconf's datastore settings exported over the
    environment's."""
    out = dict(env)
    pairs = {
        "datastore_type": "DATASTORE_TYPE",
        "etcd_endpoints": "ETCD_ENDPOINTS",
        "etcd_key_file": "ETCD_KEY_FILE",
        "etcd_cert_file": "ETCD_CERT_FILE",
        "etcd_ca_cert_file": "ETCD_CA_CERT_FILE",
    }
    for key, var in pairs.items():
        if netconf.get(key):
            out[var] = str(netconf[key])
    k8s = netconf.get("kubernetes") or {}
    if isinstance(k8s, dict) and k8s.get("kubeconfig"):
        out["KUBECONFIG"] = str(k8s["kubeconfig"])
    return out


# --- running the plugin -------------------------------------------------------------------------


def delegate(
    netconf: dict,
    env: Mapping[str, str],
    *,
    datastore=None,
    node: str | None = None,
    timeout: float | None = None,
) -> dict:
    """Run the IPAM plugin ``netconf["ipam"]["type"]`` (host-local) for the CNI command in
    ``env["CNI_COMMAND"]`` and return its result.

    For host-local, ``usePodCidr`` / ``usePodCidrIPv6`` are first replaced: on DEL by
    ``0.0.0.0/0`` / ``::/0``, otherwise by the pod CIDRs of ``node`` (default: Calico's
    node name from ``netconf``) read from ``datastore`` (default: one opened from the
    netconf's datastore settings and the environment, closed afterwards), looked up
    only if a subnet asks for it. Then the plugin is run by the CNI's runner
    (``pycalico.core.cni.invoke.run_ipam``): ``env`` is its environment (it must carry
    CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH), with
    ``IgnoreUnknown=1`` put in front of CNI_ARGS as Calico does. Raises
    :class:`PluginError` (the substitution's errors with code 999, as Calico's plain
    errors; the plugin's with its own code).
    """
    ipam = netconf.get("ipam")
    opened = None
    try:
        if isinstance(ipam, dict) and ipam.get("type") == NAME:
            if env.get("CNI_COMMAND") == "DEL":
                netconf = replace_pod_cidrs(netconf, lambda: (DUMMY_V4, DUMMY_V6))
            else:
                def lookup() -> tuple[str, str]:
                    nonlocal opened
                    store = datastore
                    if store is None:
                        opened = store = _open_datastore(netconf, env)
                    return node_pod_cidrs(store, node or node_name(netconf))

                netconf = replace_pod_cidrs(netconf, lookup)
        return run_ipam(netconf, env, timeout)
    finally:
        if opened is not None:
            close = getattr(opened, "close", None)
            if close is not None:
                close()


def _open_datastore(netconf: Mapping[str, Any], env: Mapping[str, str]):
    from pycalico.core.client import open_datastore

    try:
        return open_datastore(None, _datastore_env(netconf, {**os.environ, **env}))
    except Exception as exc:  # config, plugin or connection: the CNI result carries one line
        raise PluginError("; ".join(str(exc).splitlines()) or type(exc).__name__) from exc


# --- the agent's side ---------------------------------------------------------------------------


class HostLocalIPAM:
    """What the agent gets for ``[ipam] type = "host-local"``: addresses are handed out
    by the host-local binary on this node, from the Node's pod CIDRs."""

    def __init__(self, datastore, node: str):
        if not node:
            raise ValueError("a node name is required")
        self.datastore, self.node = datastore, node

    def pod_cidrs(self) -> list[str]:
        """This node's pod CIDRs (the ranges host-local hands addresses out of); empty
        if the Node has none (or does not exist)."""
        from pycalico.core.datastore import NotFound

        try:
            resource = self.datastore.get("Node", self.node)
        except NotFound:
            return []
        return list((resource.status.pod_cidrs if resource.status is not None else None) or ())

    def delegate(self, netconf: dict, env: Mapping[str, str], timeout: float | None = None) -> dict:
        return delegate(netconf, env, datastore=self.datastore, node=self.node, timeout=timeout)

    def __repr__(self) -> str:
        return f"HostLocalIPAM(node={self.node!r})"


class HostLocalPlugin:
    """The hook implementations; ``plugin`` below is the registered instance."""

    @hookimpl
    def pycalico_ipam(self, config, datastore) -> HostLocalIPAM | None:
        if config.ipam.type != NAME:
            return None
        return HostLocalIPAM(datastore, node=config.hostname)


plugin = HostLocalPlugin()
