"""IPAM garbage collection, as the node controller runs it (``kube-controllers/pkg/
controllers/node/ipam.go``, ``design/ipam/ipam-gc.md``).

Every scan reads all IPAM blocks, groups their allocations by Calico node (the
allocation's ``node`` attribute, else the block's affinity) and judges each node:

* A Calico node that is not a Kubernetes node (it exists without a ``k8s`` orchRef)
  is left alone. A node that does not exist, or whose Kubernetes node does not, is
  *gone*.
* A pod address is valid while its pod exists on that node and, once the pod reports
  its IPs, holds the address (the pod's WorkloadEndpoint IPs, as the KDD conversion
  gives them); an address without ``pod``/``namespace`` attributes is assumed valid;
  tunnel addresses are valid while their node is not gone; anything else blocks the
  node's cleanup.
* An address that is not valid is leaked at once when its node is gone; otherwise it
  becomes a candidate and is leaked once it has been one for longer than
  ``leakGracePeriod`` (0: never; unset: candidates are not even tracked).
* Before release each leak is checked again, reading the pod from the API server
  (from the scan's list when the node is gone); an address is released only with
  every other address of its handle, by handle and allocation sequence number, so a
  reused address is never freed.
* A gone node with no valid address left loses its tunnel addresses and then every
  block affinity (blocks that end up empty are deleted).
* An empty block is given up once it has been seen empty for longer than the grace
  period (so on two scans at least), never a node's last block.

Releases go through ``calico-ipam`` (``release_ips``, ``release_affinity``,
``release_host_affinities``): the checks of ``calicoctl ipam check`` and the GC share
one release path.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from typing import Any

import attrs

from pycalico.core.ctl.ipam import WINDOWS_RESERVED_HANDLE  # released with its block, never on its own
from pycalico.core.resources.ipam import ATTR_NAMESPACE, ATTR_NODE, ATTR_POD, ATTR_TYPE, TUNNEL_TYPES
from pycalico.plugins.ipam.calico_ipam import IPAMError, ReleaseOptions, StaleRelease
from pycalico.plugins.ipam.calico_ipam.blocks import view

from .kube import k8s_node_name

log = logging.getLogger(__name__)


@attrs.frozen
class Allocation:
    ip: str
    block: str
    handle: str | None
    attrs: Mapping[str, str]
    sequence: int | None
    node: str  # the Calico node it belongs to

    @property
    def key(self) -> str:
        return f"{self.handle}/{self.ip}"

    @property
    def is_pod(self) -> bool:
        return bool(self.attrs.get(ATTR_NAMESPACE)) and bool(self.attrs.get(ATTR_POD))

    @property
    def is_tunnel(self) -> bool:
        return self.attrs.get(ATTR_TYPE) in TUNNEL_TYPES

    def __str__(self) -> str:
        owner = (f"pod {self.attrs[ATTR_NAMESPACE]}/{self.attrs[ATTR_POD]}" if self.is_pod
                 else self.attrs.get(ATTR_TYPE) or "no pod")
        return f"{self.ip} (handle {self.handle}, {owner}, node {self.node})"


@attrs.frozen
class ScanResult:
    """What one scan did; ``candidates`` are the addresses waiting out the grace period."""

    released: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()
    blocks_released: tuple[str, ...] = ()
    nodes_released: tuple[str, ...] = ()


PodLookup = Callable[[str, str], "dict | None"]


def pod_holds(pod: dict, ip: str, knode: str) -> bool:
    """Calico's ``allocationIsValid`` for a pod that exists: false once it moved to
    another node, was evicted, or reports IPs without this one (the IPs the pod's
    WorkloadEndpoint gets in the KDD conversion: none once the pod has finished)."""
    from pycalico.plugins.datastore.kubernetes.convert import (
        is_finished,
        is_workload_endpoint,
        pod_ips,
    )

    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if spec.get("nodeName") and knode and spec["nodeName"] != knode:
        return False
    if not status.get("podIP") or not status.get("podIPs"):
        return True  # no IP reported yet
    if status.get("phase") == "Failed" and status.get("reason") == "Evicted":
        return False
    if not is_workload_endpoint(pod) or is_finished(pod):
        return False
    try:
        nets = pod_ips(pod)
    except ValueError:
        return True  # cannot tell: keep it
    address = ipaddress.ip_address(ip)
    return any(ipaddress.ip_interface(n).ip == address for n in nets)


class IPAMGC:
    """The collector's memory between scans: when each candidate leak and each empty
    block was first seen. ``clock`` is monotonic seconds (tests inject one)."""

    def __init__(self, ipam: Any, kube: Any, grace: float | None, clock: Callable[[], float] = time.monotonic):
        self.ipam, self.kube, self.grace, self.clock = ipam, kube, grace, clock
        self._leaked_at: dict[str, float] = {}
        self._empty_since: dict[str, float] = {}
        self.reclaimed = 0  # addresses released as leaks, ever

    # -- validity ------------------------------------------------------------------------------

    def valid(self, a: Allocation, knode: str, lookup: PodLookup) -> bool:
        if a.is_tunnel:
            return knode != ""
        if not a.is_pod:
            return True
        try:
            pod = lookup(a.attrs[ATTR_NAMESPACE], a.attrs[ATTR_POD])
        except Exception as exc:  # noqa: BLE001 - cannot tell: assume it exists
            log.warning("IPAM GC: could not read pod %s/%s, assuming %s is in use: %s", a.attrs[ATTR_NAMESPACE],
                        a.attrs[ATTR_POD], a.ip, exc)
            return True
        return pod is not None and pod_holds(pod, a.ip, knode)

    def _candidate(self, a: Allocation, now: float) -> bool:
        """Track ``a`` as a candidate; whether it has been one for longer than the grace."""
        if self.grace is None:
            return False
        if a.key not in self._leaked_at:
            self._leaked_at[a.key] = now
            log.info("IPAM GC: candidate leak %s", a)
        return self.grace > 0 and now - self._leaked_at[a.key] > self.grace

    def _k8s_node(self, cnode: str, calico_nodes: Mapping[str, Any]) -> str | None:
        """"" for a Calico node that does not exist, None for one that is not a
        Kubernetes node, else its Kubernetes node's name."""
        node = calico_nodes.get(cnode)
        return "" if node is None else k8s_node_name(node)

    # -- the scan ------------------------------------------------------------------------------

    def scan(self, calico_nodes: Mapping[str, Any], k8s_nodes: Collection[str],
             pods: Mapping[tuple[str, str], dict]) -> ScanResult:
        """One pass over every block, given this pass's Calico Nodes (by name), the
        Kubernetes node names and the pods ((namespace, name) -> pod)."""
        now = self.clock()
        cooldown = self.ipam.store.config().spec.ip_cooldown_seconds or 0
        blocks = [view(b, self.ipam.clock(), cooldown) for b in self.ipam.store.blocks()]
        by_node: dict[str, list[Allocation]] = {b.host: [] for b in blocks if b.host}
        by_handle: dict[str, list[str]] = {}
        for b in blocks:
            for o in b.in_use():
                attr = b.attribute(o)
                attrs_ = dict(attr.secondary or {})
                a = Allocation(str(b.ip(o)), b.cidr, attr.handle, attrs_, b.sequence_for.get(str(o)),
                               attrs_.get(ATTR_NODE) or b.host or "")
                by_node.setdefault(a.node, []).append(a)
                if a.handle is not None:
                    by_handle.setdefault(a.handle, []).append(a.key)

        knodes: dict[str, str] = {}  # managed Calico node -> its Kubernetes node ("" = gone)
        confirmed: dict[str, Allocation] = {}
        gone_nodes: list[str] = []
        seen: set[str] = set()
        for cnode in sorted(by_node):
            knode = self._k8s_node(cnode, calico_nodes)
            if knode is None:
                continue
            exists = bool(knode) and knode in k8s_nodes
            knodes[cnode] = knode if exists else ""
            can_delete, tunnels = True, []
            for a in by_node[cnode]:
                seen.add(a.key)
                if a.handle == WINDOWS_RESERVED_HANDLE:
                    continue
                if a.is_tunnel:
                    tunnels.append(a)
                elif not a.is_pod:
                    can_delete = False
                elif self.valid(a, knodes[cnode], lambda ns, name: pods.get((ns, name))):
                    can_delete = False
                    if self._leaked_at.pop(a.key, None) is not None:
                        log.info("IPAM GC: %s is in use again", a.ip)
                elif not exists or self._candidate(a, now):
                    confirmed[a.key] = a
            if not exists and can_delete:
                confirmed.update((a.key, a) for a in tunnels)
                gone_nodes.append(cnode)
        self._leaked_at = {k: t for k, t in self._leaked_at.items() if k in seen}

        released = self._release(confirmed, by_handle, knodes, pods)
        blocks_released = self._release_empty_blocks(blocks, knodes, gone_nodes, now)
        nodes_released = tuple(n for n in gone_nodes if self._release_node(n))
        return ScanResult(released, tuple(sorted(k.rsplit("/", 1)[1] for k in self._leaked_at)), blocks_released,
                          nodes_released)

    def _release(self, confirmed: dict[str, Allocation], by_handle: dict[str, list[str]], knodes: dict[str, str],
                 pods: Mapping[tuple[str, str], dict]) -> tuple[str, ...]:
        by_block: dict[str, list[Allocation]] = {}
        for key, a in sorted(confirmed.items()):
            knode = knodes[a.node]
            # The last check: the API server itself while the node lives, the scan's
            # list once it is gone.
            if self.valid(a, knode, self.kube.pod if knode else (lambda ns, name: pods.get((ns, name)))):
                log.info("IPAM GC: leaked %s is in use again", a.ip)
                self._leaked_at.pop(key, None)
                continue
            if a.handle is not None and not all(k in confirmed for k in by_handle.get(a.handle, ())):
                continue  # all addresses of a handle go together, or none
            by_block.setdefault(a.block, []).append(a)
        released: list[str] = []
        for cidr, leaks in sorted(by_block.items()):
            try:
                missed = {str(ip) for ip in self.ipam.release_ips(
                    [ReleaseOptions(a.ip, a.handle, a.sequence) for a in leaks])}
            except (StaleRelease, IPAMError) as exc:
                log.warning("IPAM GC: block %s: leaked addresses not released: %s", cidr, exc)
                continue
            for a in leaks:
                self._leaked_at.pop(a.key, None)
                if a.ip not in missed:
                    released.append(a.ip)
                    log.info("IPAM GC: released leaked %s", a)
        self.reclaimed += len(released)
        return tuple(released)

    def _mark_empty(self, cidr: str, now: float) -> bool:
        """Calico's blockReleaseTracker: true once the block has been empty for longer
        than the grace period (never with no grace period)."""
        if not self.grace:
            return False
        if cidr not in self._empty_since:
            self._empty_since[cidr] = now
            return False
        return now - self._empty_since[cidr] > self.grace

    def _release_empty_blocks(self, blocks: list, knodes: dict[str, str], gone: list[str],
                              now: float) -> tuple[str, ...]:
        affine = Counter(b.host for b in blocks if b.host)
        present = {b.cidr for b in blocks}
        self._empty_since = {c: t for c, t in self._empty_since.items() if c in present}
        released = []
        for b in blocks:
            host = b.host
            if host is None or host not in knodes or host in gone or not b.empty():
                self._empty_since.pop(b.cidr, None)
                continue
            if affine[host] <= 1 or not self._mark_empty(b.cidr, now):
                continue
            if self.ipam.release_affinity(b.cidr, host, must_be_empty=True):
                log.info("IPAM GC: released empty block %s of node %s (it has %d blocks)", b.cidr, host, affine[host])
                affine[host] -= 1
                released.append(b.cidr)
            self._empty_since.pop(b.cidr, None)
        return tuple(released)

    def _release_node(self, cnode: str) -> bool:
        """Every block affinity of a gone node; whether none is left."""
        done = self.ipam.release_host_affinities(cnode, must_be_empty=True)
        left = [a.spec.cidr for a in self.ipam.store.affinities(cnode)]
        if left:
            log.info("IPAM GC: node %s is gone; its blocks %s still hold addresses", cnode, ", ".join(left))
            return False
        if done:
            log.info("IPAM GC: node %s is gone: released its blocks %s", cnode, ", ".join(done))
        return True
