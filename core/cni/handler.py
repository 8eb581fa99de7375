"""One CNI request, start to finish: the work behind ``calico`` and ``calico-ipam``.

``Handler.handle(plugin, env, stdin)`` returns what the executable prints and its exit
status. The node agent's socket server keeps one Handler (its datastore connections,
its IPAM with the node's blocks remembered, and its netlink socket stay open between
requests); the executable's in-process fallback makes one per run.

ADD (``cni-plugin/pkg/plugin/plugin.go``, ``pkg/k8s/k8s.go``), in order, each step undone
if a later one fails:

1. IPAM: calico-ipam in process (handle ``<net>.<containerID>``), or the IPAM plugin
   named by ``ipam.type`` executed from CNI_PATH;
2. the veth pair, addresses, routes and sysctls (``dataplane``);
3. the Profile named after the network, if ``policy.type`` is empty and it is missing;
4. the WorkloadEndpoint, validated as Calico's client validates it, then written.

IPAM and the veth pair are made at once, then the addresses and routes while the
endpoint is written. A first ADD reads neither its handle nor its endpoint first:
calico-ipam creates the container's handle, and the pair is made without replacing a
host side of that name. Finding the handle there already (HandleExists) is how a
repeated ADD for the same container and interface is told: it finds its
WorkloadEndpoint and returns the same result without running IPAM again (re-wiring
first if the interfaces were damaged). DEL deletes the endpoint (a Kubernetes pod's only if it still names this
container), the container's interface (a missing namespace or link is fine) and
releases the addresses; DEL of something already gone succeeds. CHECK really checks:
interfaces, addresses, routes, proxy ARP, the endpoint and the IPAM handle.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.core.datastore import (
    AlreadyExists,
    Conflict,
    DatastoreError,
    DatastoreUnavailable,
    NotFound,
    OperationNotSupported,
)
from pycalico.core.kube import names as kube_names
from pycalico.core.kube import pods as kube_pods

from . import dataplane, naming, spec
from . import ipam as ipam_step
from . import netconf as nc
from .spec import CniError, Interface, IPConfig, Result, Route

log = logging.getLogger("pycalico.cni")

WEP = "WorkloadEndpoint"
NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
DELETE_RETRIES = 6


@dataclass
class Reply:
    """What the executable prints and returns."""

    code: int
    stdout: str = ""
    stderr: str = ""

    def to_dict(self) -> dict:
        return {"code": self.code, "stdout": self.stdout, "stderr": self.stderr}


def error_reply(err: CniError, version: str = spec.CURRENT_VERSION) -> Reply:
    return Reply(1, spec.dumps(err.to_dict(version)))


# --- datastores ---------------------------------------------------------------------------------


def datastore_key(config) -> str:
    slot = config.datastore
    return json.dumps([slot.type, {k: dict(v) for k, v in slot.tables.items()}], sort_keys=True, default=str)


class Stores:
    """Open datastores, one per distinct ``[datastore]`` configuration, shared by the
    threads of a server (or the one request of a process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[str, Any] = {}
        self._owned: list[Any] = []

    def seed(self, config, datastore) -> None:
        """Use ``datastore`` (the agent's own) for requests naming ``config``'s datastore."""
        with self._lock:
            self._stores[datastore_key(config)] = datastore

    def get(self, config, source: str):
        key = datastore_key(config)
        with self._lock:
            found = self._stores.get(key)
            if found is not None:
                return found
            from pycalico.core.config import ConfigError
            from pycalico.core.plugins import PluginError, Plugins

            try:
                store = Plugins.load(config, source, configure=False, slots=("datastore",)).datastore()
            except ConfigError as exc:
                raise CniError(spec.INVALID_NETCONF, f"datastore settings: {'; '.join(exc.lines)} (from {source})") \
                    from None
            except PluginError as exc:
                raise CniError(spec.INVALID_NETCONF, f"datastore settings ({source}): {exc}") from None
            self._stores[key] = store
            self._owned.append(store)
            return store

    def close(self) -> None:
        with self._lock:
            owned, self._owned = self._owned, []
            self._stores.clear()
        for store in owned:
            try:
                store.close()
            except Exception:
                pass


class CachedSettings:
    """A datastore whose reads of settings-like kinds (IPPool, IPReservation,
    IPAMConfiguration, Node) are remembered for ``ttl`` seconds, NotFound included;
    every other call goes straight through. The agent gives IPAM this view so that a
    burst of ADDs does not re-read the pools and IPAM settings for each pod; blocks,
    affinities, handles and endpoints are always read fresh. An assignment that finds
    no pool or no free address looks again with the cache cleared."""

    KINDS = frozenset({"IPPool", "IPReservation", "IPAMConfiguration", "IPAMConfig", "Node"})

    def __init__(self, datastore, ttl: float):
        self._ds, self._ttl = datastore, ttl
        self._lock = threading.Lock()
        self._memo: dict[tuple, tuple[float, Any, BaseException | None]] = {}

    def __getattr__(self, name: str):
        return getattr(self._ds, name)

    def invalidate(self) -> None:
        with self._lock:
            self._memo.clear()

    def _cached(self, key: tuple, read: Callable[[], Any]):
        now = time.monotonic()
        with self._lock:
            hit = self._memo.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            if hit[2] is not None:
                raise hit[2]
            return hit[1]
        try:
            value, error = read(), None
        except NotFound as exc:
            value, error = None, exc
        with self._lock:
            self._memo[key] = (now, value, error)
        if error is not None:
            raise error
        return value

    def get(self, kind: str, name: str, namespace: str | None = None):
        if kind not in self.KINDS:
            return self._ds.get(kind, name, namespace)
        return self._cached(("get", kind, name, namespace), lambda: self._ds.get(kind, name, namespace))

    def list(self, kind: str, namespace=None, selector=None, limit: int = 0, continue_token=None):
        if kind not in self.KINDS or continue_token:
            return self._ds.list(kind, namespace, selector, limit, continue_token)
        return self._cached(("list", kind, namespace, selector, limit),
                            lambda: self._ds.list(kind, namespace, selector, limit))


# --- one request ----------------------------------------------------------------------------------


@dataclass
class Ids:
    node: str
    orchestrator: str
    namespace: str
    pod: str
    container_id: str
    ifname: str
    wep_name: str
    host_veth: str
    handle: str
    legacy_handle: str


@dataclass
class Ctx:
    """A request's parsed inputs and lazily opened connections."""

    plugin: str
    conf: nc.NetConf
    env: nc.Env
    raw_env: Mapping[str, str]
    stores: Stores
    ipam_for: Callable[[Any, str], Any]  # the Handler's calico-ipam for a datastore and node
    _toml: Any = None
    _ds: Any = None
    _ipam: Any = None
    _node: str | None = None
    _ids: Ids | None = None
    extra: dict = field(default_factory=dict)

    @property
    def toml(self):
        """The calico.toml named by ``calico_config`` (None without one)."""
        if self._toml is None and self.conf.calico_config:
            from pycalico.core import config as cfg

            try:
                self._toml = cfg.read(self.conf.calico_config)
            except cfg.ConfigError as exc:
                raise CniError(spec.INVALID_NETCONF, f"calico_config: {exc}") from None
        return self._toml

    def datastore_config(self):
        if self.toml is not None:
            return self.toml, self.conf.calico_config
        from pycalico.core import client
        from pycalico.core.config import ConfigError

        try:
            return client.config_from_env({**self.raw_env, **self.conf.datastore_env()}), "netconf"
        except ConfigError as exc:
            raise CniError(spec.INVALID_NETCONF, f"datastore_type: {'; '.join(exc.lines)}") from None

    @property
    def ds(self):
        if self._ds is None:
            config, source = self.datastore_config()
            self._ds = self.stores.get(config, source)
        return self._ds

    @property
    def node(self) -> str:
        if self._node is None:
            self._node = node_name(self.conf, self.toml)
        return self._node

    @property
    def ipam(self):
        if self._ipam is None:
            self._ipam = self.ipam_for(self.ds, self.node)
        return self._ipam

    @property
    def ids(self) -> Ids:
        if self._ids is None:
            self._ids = identify(self.conf, self.env, self.node, self.raw_env)
        return self._ids

    @property
    def calico_ipam(self) -> bool:
        return self.plugin == "calico-ipam" or self.conf.ipam.type == "calico-ipam"


def node_name(conf: nc.NetConf, toml=None) -> str:
    """Calico's order: ``nodename``, then the nodename file, then ``hostname``, then
    the OS host name; pycalico puts calico.toml's ``node_name`` after ``nodename``. The
    file must exist unless ``nodename_file_optional`` (it says calico-node is up)."""
    path = conf.nodename_file or nc.DEFAULT_NODENAME_FILE
    if not conf.nodename_file_optional and not os.path.exists(path):
        raise CniError(spec.TRY_AGAIN_LATER,
                       f"nodename_file: {path} does not exist: check that calico-node is running and has written "
                       "it (or set \"nodename_file_optional\": true and \"nodename\")")
    if conf.nodename:
        return conf.nodename
    if toml is not None and toml.node_name:
        return toml.node_name
    try:
        with open(path) as f:
            text = f.read().strip()
        if text:
            return text
    except OSError:
        pass
    return conf.hostname or socket.gethostname().lower()


def host_mtu(conf: nc.NetConf) -> int:
    if conf.mtu:
        return conf.mtu
    try:
        with open(nc.DEFAULT_MTU_FILE) as f:
            return int(f.read().strip())
    except FileNotFoundError:
        if conf.require_mtu_file:
            raise CniError(spec.TRY_AGAIN_LATER, f"require_mtu_file: {nc.DEFAULT_MTU_FILE} does not exist yet "
                                                 "(Felix writes it)") from None
        return 0
    except (OSError, ValueError) as exc:
        raise CniError(spec.IO_FAILURE, f"mtu: cannot read {nc.DEFAULT_MTU_FILE}: {exc}") from None


_SEGMENT_SOURCES = {"node": "nodename", "pod": "CNI_ARGS K8S_POD_NAME", "containerID": "CNI_CONTAINERID",
                    "endpoint": "CNI_IFNAME"}


def identify(conf: nc.NetConf, env: nc.Env, node: str, raw_env: Mapping[str, str]) -> Ids:
    """Orchestrator ``k8s`` when CNI_ARGS names the pod (K8S_POD_NAMESPACE and
    K8S_POD_NAME), else ``cni`` in namespace ``default`` (or the label
    ``projectcalico.org/namespace``, as Calico takes it from Mesos labels)."""
    if env.args.is_k8s:
        orchestrator, namespace, pod = naming.K8S, env.args.pod_namespace, env.args.pod_name
    else:
        orchestrator, pod = naming.CNI, ""
        namespace = dict(conf.labels).get(NAMESPACE_LABEL, "default")
    try:
        wep = naming.wep_name(node, orchestrator, env.ifname or "eth0", pod=pod, container_id=env.container_id)
    except naming.BadName as exc:
        what, _, why = str(exc).partition(": ")
        raise CniError(spec.INVALID_ENVIRONMENT, f"{_SEGMENT_SOURCES.get(what, what)}: {why}") from None
    veth = naming.host_veth_name(namespace=namespace, pod=pod, container_id=env.container_id,
                                 prefix=naming.veth_prefix(raw_env))
    return Ids(node=node, orchestrator=orchestrator, namespace=namespace, pod=pod,
               container_id=env.container_id, ifname=env.ifname, wep_name=wep, host_veth=veth,
               handle=naming.handle_id(conf.name, env.container_id),
               legacy_handle=naming.legacy_handle_id(orchestrator, namespace, pod, env.container_id))


def container_routes(conf: nc.NetConf) -> list[tuple[str, str]]:
    """host-local's ``ipam.routes`` if given (plus the defaults only with
    ``include_default_routes``), else the default routes."""
    defaults = [("0.0.0.0/0", ""), ("::/0", "")]
    if conf.ipam.routes:
        return list(conf.ipam.routes) + (defaults if conf.include_default_routes else [])
    return defaults


def build_result(ids: Ids, env: nc.Env, conf: nc.NetConf, ips: list[str], host_veth: str,
                 mac: str, mtu: int) -> Result:
    """The ADD result: interfaces [host side, container side], each address (as /32 or
    /128) on interface 1, the container's routes. Built the same way from a fresh ADD
    and from the stored endpoint, so a repeated ADD returns the same result."""
    import ipaddress

    addrs = sorted((ipaddress.ip_interface(str(ip).split("/")[0]) for ip in ips), key=lambda a: (a.version, a.ip))
    families = {a.version for a in addrs}
    routes = []
    for dst, gw in container_routes(conf):
        version = ipaddress.ip_network(dst, strict=False).version
        if version in families:
            routes.append(Route(dst, gw or (dataplane.GATEWAY_V4 if version == 4 else
                                            dataplane.link_local(dataplane.HOST_MAC))))
    return Result(
        interfaces=[Interface(host_veth, dataplane.HOST_MAC),
                    Interface(ids.ifname, mac, mtu, env.netns)],
        ips=[IPConfig(f"{a.ip}/{a.max_prefixlen}", interface=1) for a in addrs],
        routes=routes,
    )


class Handler:
    """Serves CNI requests. ``stores`` holds the datastore connections (seeded by the
    agent with its own)."""

    def __init__(self, stores: Stores | None = None, checkpoint: Callable[[str], None] | None = None,
                 cache_seconds: float = 0.0):
        self.stores = stores or Stores()
        self.checkpoint = checkpoint or (lambda name: None)
        # An agent serving many requests may remember, briefly, what rarely changes:
        # that the datastore was ready, that a network's Profile exists, and the IP
        # pools and IPAM settings (CachedSettings): six reads fewer per ADD. It also
        # keeps one IPAM per datastore and node, which remembers the node's blocks
        # (every use checked by compare-and-swap): three reads fewer.
        self.cache_seconds = cache_seconds
        self._seen: dict[tuple, float] = {}
        self._ipams: dict[tuple, Any] = {}
        self._ipams_lock = threading.Lock()
        self.host = dataplane.Host()  # the node's netlink socket, kept while the handler lives

    def close(self) -> None:
        self.host.close()
        self.stores.close()

    # -- entry --------------------------------------------------------------------------------

    def handle(self, plugin: str, env: Mapping[str, str], stdin: bytes | str) -> Reply:
        version = spec.CURRENT_VERSION
        try:
            e = nc.parse_env(env)
            if e.command == "VERSION":
                return Reply(0, spec.dumps(spec.version_reply(_requested_version(stdin))))
            conf = nc.parse(stdin, plugin)
            version = conf.cni_version
            if e.command == "CHECK" and not spec.at_least(version, "0.4.0"):
                raise CniError(spec.INCOMPATIBLE_VERSION, f"cniVersion: CHECK needs 0.4.0 or later, got {version}")
            if e.command in ("STATUS", "GC") and not spec.at_least(version, "1.1.0"):
                raise CniError(spec.INCOMPATIBLE_VERSION,
                               f"cniVersion: {e.command} needs 1.1.0 or later, got {version}")
            ctx = Ctx(plugin=plugin, conf=conf, env=e, raw_env=env, stores=self.stores, ipam_for=self._ipam_for)
            method: Callable[[Ctx], Result | dict | None] = getattr(self, f"_{plugin.replace('-', '_')}_"
                                                                          f"{e.command.lower()}")
            out = method(ctx)
            if out is None:
                return Reply(0, "")
            if isinstance(out, Result):
                out = spec.render(out, version)
            return Reply(0, spec.dumps(out))
        except CniError as err:
            log.info("CNI error %s: %s", err.code, err)
            return error_reply(err, version)
        except DatastoreUnavailable as exc:
            return error_reply(CniError(spec.TRY_AGAIN_LATER, f"the datastore is unavailable: {exc} (check "
                                        "calico_config / etcd_endpoints and that the datastore is up)"), version)
        except OperationNotSupported as exc:
            return error_reply(CniError(spec.GENERIC, f"the datastore refused: {exc}"), version)
        except DatastoreError as exc:
            return error_reply(CniError(spec.GENERIC, f"datastore error: {exc}"), version)
        except Exception as exc:
            log.error("unexpected error: %s", traceback.format_exc())
            return error_reply(CniError(spec.GENERIC, f"unexpected error: {type(exc).__name__}: {exc}"), version)

    # -- shared steps --------------------------------------------------------------------------

    def _ipam_for(self, ds, node: str):
        """calico-ipam for ``node`` on ``ds``: a new one per request, or (caching) one
        kept per datastore and node, reading settings through CachedSettings and
        remembering the node's blocks."""
        from pycalico.plugins.ipam.calico_ipam import IPAM

        if not self.cache_seconds:
            return IPAM(ds, node, checkpoint=self.checkpoint)
        with self._ipams_lock:
            ipam = self._ipams.get((id(ds), node))
            if ipam is None:
                ipam = self._ipams[(id(ds), node)] = IPAM(CachedSettings(ds, self.cache_seconds), node,
                                                         checkpoint=self.checkpoint, remember_blocks=True)
            return ipam

    def _recently(self, key: tuple) -> bool:
        if not self.cache_seconds:
            return False
        return time.monotonic() - self._seen.get(key, -1e9) < self.cache_seconds

    def _remember(self, key: tuple) -> None:
        if self.cache_seconds:
            self._seen[key] = time.monotonic()

    def _check_ready(self, ds) -> None:
        """Calico refuses ADD/DEL while ClusterInformation says the datastore is not
        ready (an upgrade); a missing ClusterInformation is let through (no calico-node
        has initialised the datastore yet)."""
        if self._recently(("ready", id(ds))):
            return
        try:
            info = ds.get("ClusterInformation", "default")
        except NotFound:
            info = None
        if info is not None and info.spec.datastore_ready is False:
            raise CniError(spec.TRY_AGAIN_LATER, "Calico is currently not ready to process requests: "
                                                 "ClusterInformation default has datastoreReady false")
        self._remember(("ready", id(ds)))

    @staticmethod
    def _get_wep(ctx: Ctx):
        try:
            return ctx.ds.get(WEP, ctx.ids.wep_name, ctx.ids.namespace)
        except NotFound:
            return None

    def _assign(self, ctx: Ctx, new_handle: bool = False) -> tuple[list[str], list[tuple[str, str]],
                                                                   Callable[[], None]]:
        """Addresses for the workload, the routes an IPAM plugin asked for, and how to
        give the addresses back. ``new_handle``: calico-ipam raises HandleExists if the
        container's handle exists already."""
        ids, conf = ctx.ids, ctx.conf
        if ctx.calico_ipam:
            got = ipam_step.calico_assign(ctx.ipam, ids.handle, _owner(ids), conf.ipam, conf.ipam_lock_file,
                                          new_handle=new_handle)
            return ([ip.address for ip in got], [],
                    lambda: ipam_step.calico_release(ctx.ipam, [ids.handle], conf.ipam_lock_file))
        result = ipam_step.delegate("ADD", conf.raw, ctx.raw_env, ctx.ds, ids.node)
        return ([ip.address for ip in result.ips], [(r.dst, r.gw) for r in result.routes],
                lambda: self._release(ctx))

    def _release(self, ctx: Ctx) -> None:
        ids, conf = ctx.ids, ctx.conf
        if ctx.calico_ipam:
            ipam_step.calico_release(ctx.ipam, [ids.handle, ids.legacy_handle], conf.ipam_lock_file)
        else:
            ipam_step.delegate("DEL", conf.raw, ctx.raw_env, ctx.ds, ids.node)

    def _ensure_profile(self, ctx: Ctx) -> list[str]:
        """The endpoint's profiles: with Kubernetes policy the pod's (``kns.<ns>``,
        ``ksa.<ns>.<sa>``), else one named after the network, created (never updated)
        if missing."""
        conf, ids = ctx.conf, ctx.ids
        if conf.policy_type == "k8s":
            return kube_pods.workload_profiles(ids.namespace, _service_account(ctx))
        if conf.policy_type:
            return [conf.name]
        if self._recently(("profile", id(ctx.ds), conf.name)):
            return [conf.name]
        try:
            ctx.ds.get("Profile", conf.name)
            self._remember(("profile", id(ctx.ds), conf.name))
            return [conf.name]
        except NotFound:
            pass
        from pycalico.core.resources.meta import ObjectMeta
        from pycalico.core.resources.policy import EntityRule, Profile, ProfileSpec, Rule

        ingress = Rule(action="Allow") if ids.orchestrator == naming.K8S else \
            Rule(action="Allow", source=EntityRule(selector=f"has({conf.name})"))
        profile = Profile(metadata=ObjectMeta(name=conf.name),
                          spec=ProfileSpec(ingress=(ingress,), egress=(Rule(action="Allow"),),
                                           labels_to_apply={conf.name: ""}))
        try:
            ctx.ds.create(profile)
        except AlreadyExists:
            pass
        return [conf.name]

    def _endpoint(self, ctx: Ctx, ips: list[str], host_veth: str, mac: str, profiles: list[str], existing):
        from pycalico.core.resources.base import deferred_checks, problems
        from pycalico.core.resources.endpoints import WorkloadEndpoint, WorkloadEndpointPort, WorkloadEndpointSpec
        from pycalico.core.resources.meta import ObjectMeta

        ids, conf = ctx.ids, ctx.conf
        service_account = _service_account(ctx)
        if ids.orchestrator == naming.K8S:
            labels = kube_pods.workload_labels(dict(conf.labels), ids.namespace, service_account)
        else:
            labels = dict(conf.labels)
            labels[NAMESPACE_LABEL] = ids.namespace
            labels[ORCHESTRATOR_LABEL] = ids.orchestrator
        ports = tuple(WorkloadEndpointPort(name=p.get("name"), protocol=p["protocol"], port=p["port"],
                                           host_port=p.get("hostPort"), host_ip=p.get("hostIP"))
                      for p in kube_pods.endpoint_ports(conf.ports))
        import ipaddress

        nets = tuple(f"{i.ip}/{i.max_prefixlen}" for i in sorted(
            (ipaddress.ip_interface(str(ip).split("/")[0]) for ip in ips), key=lambda a: (a.version, a.ip)))
        kept = {}
        if existing is not None:
            kept = dict(resource_version=existing.metadata.resource_version, uid=existing.metadata.uid,
                        creation_timestamp=existing.metadata.creation_timestamp)
        with deferred_checks():  # checked below, all problems at once
            meta = ObjectMeta(name=ids.wep_name, namespace=ids.namespace, labels=labels, **kept)
            wep = WorkloadEndpoint(metadata=meta, spec=WorkloadEndpointSpec(
                orchestrator=ids.orchestrator, node=ids.node, container_id=ids.container_id,
                pod=ids.pod or None, endpoint=ids.ifname, interface_name=host_veth, mac=mac,
                ip_networks=nets, profiles=tuple(profiles), ports=ports or None,
                service_account_name=service_account or None))
        found = problems(wep)
        if found:
            lines = "; ".join(f"{path}: {message}" for path, message in found)
            hint = " (labels come from args.cni.labels)" if any(p.startswith("metadata.labels") for p, _ in found) \
                else ""
            raise CniError(spec.GENERIC, f"the WorkloadEndpoint {ids.namespace}/{ids.wep_name} is invalid, not "
                                         f"written: {lines}{hint}")
        return wep

    # -- calico: ADD ----------------------------------------------------------------------------

    def _calico_add(self, ctx: Ctx) -> Result:
        conf = ctx.conf
        if conf.device_type == "netkit":
            raise CniError(spec.UNSUPPORTED_FIELD, "device_type: \"netkit\" is not supported; use \"veth\"")
        if conf.ip_addrs_no_ipam or conf.floating_ips:
            raise CniError(spec.UNSUPPORTED_FIELD, "feature_control: ip_addrs_no_ipam and floating_ips are not "
                                                   "supported (they need Kubernetes pod annotations)")
        mtu = host_mtu(conf)
        ids = ctx.ids
        if not os.path.exists(ctx.env.netns):
            raise CniError(spec.UNKNOWN_CONTAINER, f"CNI_NETNS: the container's network namespace "
                                                   f"{ctx.env.netns} does not exist")
        self._check_ready(ctx.ds)
        if ctx.calico_ipam:
            # A first ADD (the usual case) reads nothing of its own first: its assignment
            # creates the container's handle, and finding it there already tells a repeated one.
            try:
                return self._fresh_add(ctx, mtu, first=True)
            except ipam_step.HandleExists:
                held = ipam_step.calico_held(ctx.ipam, ids.handle)
            except CniError:
                # A failed assignment (a pool full by now) may still be a repeated ADD.
                held = ipam_step.calico_held(ctx.ipam, ids.handle)
                if not held:
                    raise
            if not held:
                return self._fresh_add(ctx, mtu)
            wep = self._get_wep(ctx)
            if wep is not None and wep.spec.container_id == ids.container_id:
                return self._repeat_add(ctx, wep, mtu)
            # An earlier ADD of this container stopped half way: carry on with its addresses.
            return self._fresh_add(ctx, mtu, held=[ip.address for ip in held])
        existing = self._get_wep(ctx)
        if existing is not None and existing.spec.container_id == ids.container_id:
            return self._repeat_add(ctx, existing, mtu)
        return self._fresh_add(ctx, mtu)

    def _fresh_add(self, ctx: Ctx, mtu: int, held: list[str] | None = None, first: bool = False) -> Result:
        """IPAM and the veth pair (at once: the pair needs no address), then addresses
        and routes and the endpoint (at once); what was done is undone if a step fails.
        ``first``: nothing is known of this container yet; HandleExists (with nothing
        changed) if calico-ipam finds its handle, so a live pod's veth is never replaced
        before that is known."""
        conf, env, ids = ctx.conf, ctx.env, ctx.ids
        undo: list[tuple[str, Callable[[], Any]]] = []
        release_held = lambda: ipam_step.calico_release(ctx.ipam, [ids.handle], conf.ipam_lock_file)  # noqa: E731

        def pair(families, replace_stale: bool = True) -> dataplane.Wiring:
            return dataplane.create_pair(host_veth=ids.host_veth, netns=env.netns, ifname=env.ifname,
                                         families=families, mtu=mtu, num_queues=conf.num_queues, host=self.host,
                                         replace_stale=replace_stale)

        try:
            if held is not None:
                ips, ipam_routes = held, []
                undo.append(("release the addresses", release_held))
                undo.append((f"delete {ids.host_veth}", lambda: dataplane.teardown_host(ids.host_veth, self.host)))
                wiring = pair(_families(ips))
            elif ctx.calico_ipam:
                families = ({4} if conf.ipam.num_v4 else set()) | ({6} if conf.ipam.num_v6 else set())
                (got, ipam_err), (wiring, pair_err) = _together(lambda: self._assign(ctx, new_handle=first),
                                                                lambda: pair(families, replace_stale=not first))
                if got is not None:
                    undo.append(("release the addresses", got[2]))
                if not isinstance(pair_err, dataplane.PairExists):  # else it is not ours (yet)
                    undo.append((f"delete {ids.host_veth}", lambda: dataplane.teardown_host(ids.host_veth, self.host)))
                if ipam_err is not None:
                    raise ipam_err
                if isinstance(pair_err, dataplane.PairExists):
                    # Not this container's (its handle was new): an earlier sandbox's, replaced.
                    undo.append((f"delete {ids.host_veth}", lambda: dataplane.teardown_host(ids.host_veth, self.host)))
                    wiring = pair(families)
                elif pair_err is not None:
                    raise pair_err
                ips, ipam_routes, _ = got
            else:
                ips, ipam_routes, release = self._assign(ctx)
                undo.append(("release the addresses", release))
                undo.append((f"delete {ids.host_veth}", lambda: dataplane.teardown_host(ids.host_veth, self.host)))
                wiring = pair(_families(ips))
            self.checkpoint("addresses-assigned")
            if ipam_routes and not conf.ipam.routes:
                conf = _with_routes(conf, ipam_routes)
                ctx.conf = conf
            log.info("ADD %s: addresses %s", ids.wep_name, ", ".join(ips))
            profiles = self._ensure_profile(ctx)
            wep = self._endpoint(ctx, ips, wiring.host_veth, wiring.container_mac, profiles, None)

            def write_endpoint() -> bool:
                """True if this ADD created the endpoint (and so deletes it when undone)."""
                try:
                    ctx.ds.create(wep)
                    return True
                except AlreadyExists:
                    # The pod's earlier sandbox left its endpoint: this sandbox takes it over.
                    existing = self._get_wep(ctx)
                    if existing is None:
                        raise CniError(spec.TRY_AGAIN_LATER, f"WorkloadEndpoint {ids.namespace}/{ids.wep_name} "
                                                             "changed during ADD; retry") from None
                    ctx.ds.update(self._endpoint(ctx, ips, wiring.host_veth, wiring.container_mac, profiles,
                                                 existing))
                    return False

            # The endpoint names only what is known by now (addresses, veth, MAC), so it
            # is written while the addresses and routes go on.
            (_, wire_err), (created, wep_err) = _together(
                lambda: dataplane.configure(wiring, netns=env.netns, ifname=env.ifname, ips=ips,
                                            routes=container_routes(conf), allow_ip_forwarding=conf.allow_ip_forwarding,
                                            host=self.host),
                write_endpoint)
            if created:
                undo.append(("delete the WorkloadEndpoint", lambda: ctx.ds.delete(WEP, ids.wep_name, ids.namespace)))
            if wire_err is not None:
                raise wire_err
            if wep_err is not None:
                raise wep_err
            self.checkpoint("wired")
            return build_result(ids, env, conf, ips, wiring.host_veth, wiring.container_mac, mtu)
        except BaseException as exc:
            for what, fn in reversed(undo):
                try:
                    fn()
                except Exception as undo_exc:  # the rest still runs; CHECK/ipam check report leftovers
                    log.warning("undoing a failed ADD: could not %s: %s", what, undo_exc)
            if isinstance(exc, CniError) and undo:
                exc.msg = f"{exc.msg} (everything this ADD did was undone)"
            raise

    def _repeat_add(self, ctx: Ctx, wep, mtu: int) -> Result:
        conf, env, ids = ctx.conf, ctx.env, ctx.ids
        ips = list(wep.spec.ip_networks or ())
        host_veth = wep.spec.interface_name or ids.host_veth
        problems = dataplane.check(host_veth=host_veth, netns=env.netns, ifname=env.ifname, ips=ips,
                                   routes=container_routes(conf), host=self.host)
        mac = wep.spec.mac or ""
        if problems:
            log.info("repeated ADD %s: wiring again (%s)", ids.wep_name, "; ".join(problems))
            dataplane.teardown(env.netns, env.ifname)
            wiring = dataplane.setup(host_veth=host_veth, netns=env.netns, ifname=env.ifname, ips=ips,
                                     routes=container_routes(conf), mtu=mtu, num_queues=conf.num_queues,
                                     allow_ip_forwarding=conf.allow_ip_forwarding, container_mac=mac, host=self.host)
            if wiring.container_mac != mac:
                from attrs import evolve

                wep = evolve(wep, spec=evolve(wep.spec, mac=wiring.container_mac))
                ctx.ds.update(wep)
                mac = wiring.container_mac
        return build_result(ids, env, conf, ips, host_veth, mac, mtu)

    # -- calico: DEL ----------------------------------------------------------------------------

    def _calico_del(self, ctx: Ctx) -> None:
        """The endpoint, the container's interface and the addresses, at once (Calico
        itself releases the addresses before it removes the interface)."""
        ctx.ids  # resolved here once, not raced for by the threads below
        env = ctx.env
        self._check_ready(ctx.ds)
        outcomes = _concurrently(lambda: self._delete_wep(ctx), lambda: dataplane.teardown(env.netns, env.ifname),
                                 lambda: self._release(ctx))
        for _, err in outcomes:
            if err is not None:
                raise err
        return None

    def _delete_wep(self, ctx: Ctx) -> None:
        ids = ctx.ids
        for _ in range(DELETE_RETRIES):
            wep = self._get_wep(ctx)
            if wep is None:
                return
            theirs = wep.spec.container_id
            if ids.orchestrator == naming.K8S and theirs and theirs != ids.container_id:
                log.info("DEL %s: the endpoint belongs to container %s now; kept", ids.wep_name, theirs)
                return
            try:
                ctx.ds.delete(WEP, ids.wep_name, ids.namespace, resource_version=wep.metadata.resource_version)
                return
            except NotFound:
                return
            except Conflict:
                continue
        raise CniError(spec.TRY_AGAIN_LATER, f"WorkloadEndpoint {ids.namespace}/{ids.wep_name} kept changing "
                                             "while being deleted; retry")

    # -- calico: CHECK --------------------------------------------------------------------------

    def _calico_check(self, ctx: Ctx) -> None:
        conf, env, ids = ctx.conf, ctx.env, ctx.ids
        if conf.prev_result is None:
            raise CniError(spec.INVALID_NETCONF, "prevResult: is required for CHECK (the result of ADD)")
        prev = spec.parse_result(conf.prev_result, "prevResult")
        ours = [i for n, i in enumerate(prev.interfaces) if i.name == env.ifname and i.sandbox]
        host = next((i.name for i in prev.interfaces if not i.sandbox), ids.host_veth)
        index = prev.interfaces.index(ours[0]) if ours else None
        ips = [ip.address for ip in prev.ips if index is None or ip.interface in (None, index)]
        if not ips:
            raise CniError(spec.INVALID_NETCONF, f"prevResult: no address on interface {env.ifname}")
        problems = dataplane.check(host_veth=host, netns=env.netns, ifname=env.ifname, ips=ips,
                                   routes=container_routes(conf), host=self.host)
        want = sorted(str(ip).split("/")[0] for ip in ips)
        wep = self._get_wep(ctx)
        if wep is None:
            problems.append(f"WorkloadEndpoint {ids.namespace}/{ids.wep_name} does not exist")
        else:
            if wep.spec.container_id != ids.container_id:
                problems.append(f"WorkloadEndpoint {ids.wep_name} belongs to container {wep.spec.container_id}")
            have = sorted(n.split("/")[0] for n in wep.spec.ip_networks or ())
            if have != want:
                problems.append(f"WorkloadEndpoint {ids.wep_name} has ipNetworks {have}, the result {want}")
        if ctx.calico_ipam:
            held = {str(ip) for ip in ipam_step.calico_holds(ctx.ipam, ids.handle)}
            missing = [ip for ip in want if ip not in held]
            if missing:
                problems.append(f"IPAM handle {ids.handle} does not hold {', '.join(missing)}")
        if problems:
            raise CniError(spec.GENERIC, f"CHECK found {len(problems)} problem(s): " + "; ".join(problems)
                           + " (DEL and ADD the container to rebuild its network)")
        return None

    # -- calico: STATUS, GC -----------------------------------------------------------------------

    def _calico_status(self, ctx: Ctx) -> None:
        try:
            ds = ctx.ds
            self._check_ready(ds)
            if ctx.calico_ipam:
                pools = [p for p in ds.list("IPPool").items if not p.spec.disabled]
                if not pools:
                    raise CniError(spec.NOT_AVAILABLE, "no enabled IPPool exists: ADD cannot assign addresses")
        except CniError as err:
            if err.code in (spec.NOT_AVAILABLE, spec.INVALID_NETCONF):
                raise
            raise CniError(spec.NOT_AVAILABLE, f"not ready: {err.msg}") from None
        except DatastoreUnavailable as exc:
            raise CniError(spec.NOT_AVAILABLE, f"the datastore is unavailable: {exc}") from None
        return None

    def _calico_gc(self, ctx: Ctx) -> None:
        """Release what this network holds on this node for containers the runtime no
        longer knows: calico-ipam handles ``<net>.<cid>`` whose addresses are this
        node's, and this node's endpoints of those containers (host veth included)."""
        conf = ctx.conf
        if conf.valid_attachments is None:
            raise CniError(spec.INVALID_NETCONF, "cni.dev/valid-attachments: is required for GC")
        valid = {cid for cid, _ in conf.valid_attachments}
        stale = self._stale_handles(ctx, valid)
        if not stale:
            return None
        weps = [w for w in _all(ctx.ds, WEP) if w.spec.node == ctx.node and w.spec.container_id in stale.values()]
        for w in weps:
            try:
                ctx.ds.delete(WEP, w.metadata.name, w.metadata.namespace)
            except NotFound:
                pass
            if w.spec.interface_name:
                dataplane.teardown_host(w.spec.interface_name, self.host)
        if ctx.calico_ipam:
            ipam_step.calico_release(ctx.ipam, list(stale), conf.ipam_lock_file)
        log.info("GC released %d handle(s) and %d endpoint(s)", len(stale), len(weps))
        return None

    def _stale_handles(self, ctx: Ctx, valid: set[str]) -> dict[str, str]:
        prefix = f"{ctx.conf.name}."
        out = {}
        for h in _all(ctx.ds, "IPAMHandle"):
            hid = h.spec.handle_id or h.metadata.name
            if not hid.startswith(prefix) or hid[len(prefix):] in valid:
                continue
            for ip in ctx.ipam.ips_by_handle(hid):
                try:
                    owner = ctx.ipam.get_assignment_attributes(ip).attrs.get("node")
                except Exception:
                    continue
                if owner == ctx.node:
                    out[hid] = hid[len(prefix):]
                    break
        return out

    # -- calico-ipam --------------------------------------------------------------------------------

    def _calico_ipam_add(self, ctx: Ctx) -> Result:
        ids, conf = ctx.ids, ctx.conf
        try:
            got = ipam_step.calico_assign(ctx.ipam, ids.handle, _owner(ids), conf.ipam, conf.ipam_lock_file,
                                          new_handle=True)
        except ipam_step.HandleExists:
            # A repeated ADD: what the handle holds (assigned anew if it holds nothing).
            got = ipam_step.calico_held(ctx.ipam, ids.handle) or ipam_step.calico_assign(
                ctx.ipam, ids.handle, _owner(ids), conf.ipam, conf.ipam_lock_file)
        return Result(ips=got)

    def _calico_ipam_del(self, ctx: Ctx) -> None:
        ipam_step.calico_release(ctx.ipam, [ctx.ids.handle, ctx.ids.legacy_handle], ctx.conf.ipam_lock_file)
        return None

    def _calico_ipam_check(self, ctx: Ctx) -> None:
        if not ipam_step.calico_holds(ctx.ipam, ctx.ids.handle):
            raise CniError(spec.GENERIC, f"IPAM handle {ctx.ids.handle} holds no address")
        return None

    def _calico_ipam_status(self, ctx: Ctx) -> None:
        return self._calico_status(ctx)

    def _calico_ipam_gc(self, ctx: Ctx) -> None:
        if ctx.conf.valid_attachments is None:
            raise CniError(spec.INVALID_NETCONF, "cni.dev/valid-attachments: is required for GC")
        stale = self._stale_handles(ctx, {cid for cid, _ in ctx.conf.valid_attachments})
        ipam_step.calico_release(ctx.ipam, list(stale), ctx.conf.ipam_lock_file)
        return None

    # -- -t -----------------------------------------------------------------------------------------

    def test_connection(self, stdin: bytes) -> Reply:
        """``calico -t``: can the datastore be reached, and is it ready (Calico: CLI
        failures are code 100)."""
        try:
            conf = nc.parse(stdin)
            ctx = Ctx(plugin="calico", conf=conf, env=nc.Env(command="VERSION"), raw_env=os.environ,
                      stores=self.stores, ipam_for=self._ipam_for)
            self._check_ready(ctx.ds)
            return Reply(0, "")
        except (CniError, DatastoreError) as exc:
            return error_reply(CniError(spec.CLI_FAILURE, "data store connection failed", str(exc)))


def _service_account(ctx: Ctx) -> str:
    """A Kubernetes pod's service account in Kubernetes policy mode, else "". Without an
    API server to read the pod from, it is the one admission gives a pod that names
    none."""
    if ctx.conf.policy_type == "k8s" and ctx.ids.orchestrator == naming.K8S:
        return kube_names.DEFAULT_SERVICE_ACCOUNT
    return ""


def _owner(ids: Ids) -> dict[str, str]:
    """calico-ipam's owner attributes (``timestamp`` is added by IPAM)."""
    attrs = {"node": ids.node}
    if ids.orchestrator == naming.K8S:
        attrs.update(namespace=ids.namespace, pod=ids.pod)
    return attrs


def _concurrently(*fns: Callable[[], Any]) -> list[tuple[Any, BaseException | None]]:
    """Run ``fns`` at once (the first in this thread); (value, error) of each, once all
    have finished."""
    out: list[tuple[Any, BaseException | None]] = [(None, None)] * len(fns)

    def run(i: int) -> None:
        try:
            out[i] = (fns[i](), None)
        except BaseException as exc:
            out[i] = (None, exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, len(fns))]
    for t in threads:
        t.start()
    run(0)
    for t in threads:
        t.join()
    return out


def _together(first: Callable[[], Any], second: Callable[[], Any]):
    a, b = _concurrently(first, second)
    return a, b


def _families(ips) -> set[int]:
    import ipaddress

    return {ipaddress.ip_interface(str(ip).split("/")[0]).version for ip in ips}


def _requested_version(stdin: bytes | str) -> str:
    try:
        version = json.loads(stdin or b"{}").get("cniVersion") or spec.CURRENT_VERSION
    except (ValueError, AttributeError):
        return spec.CURRENT_VERSION
    return version if isinstance(version, str) else spec.CURRENT_VERSION


def _with_routes(conf: nc.NetConf, routes: list[tuple[str, str]]) -> nc.NetConf:
    from dataclasses import replace

    return replace(conf, ipam=replace(conf.ipam, routes=tuple(routes)))


def _all(ds, kind: str) -> list:
    items, token = [], None
    while True:
        page = ds.list(kind, limit=500, continue_token=token)
        items += page.items
        token = page.continue_token
        if not token:
            return items


# --- the executable's in-process path --------------------------------------------------------------


def setup_logging(stdin: bytes) -> None:
    """``log_file_path`` / ``log_level`` of the netconf, for the in-process path."""
    try:
        raw = json.loads(stdin or b"{}")
        path, level = raw.get("log_file_path") or "", str(raw.get("log_level") or "info").upper()
    except (ValueError, AttributeError):
        return
    if not path:
        return
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        handler = logging.FileHandler(path)
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s][%(process)d] cni: %(message)s"))
    log.addHandler(handler)
    log.setLevel(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO")


def checkpoints(env: Mapping[str, str]) -> Callable[[str], None] | None:
    """A test seam for ending the process at chosen points: with
    ``PYCALICO_CNI_CHECKPOINTS=<seconds>`` the in-process path writes ``checkpoint
    <name>`` to stderr and pauses at each point between two writes of an ADD or DEL
    (IPAM's own points included), so a test can SIGKILL it right there."""
    value = env.get("PYCALICO_CNI_CHECKPOINTS")
    if not value:
        return None
    delay = float(value)

    def checkpoint(name: str) -> None:
        sys.stderr.write(f"checkpoint {name}\n")
        sys.stderr.flush()
        time.sleep(delay)

    return checkpoint


def run_local(plugin: str, env: Mapping[str, str], stdin: bytes) -> Reply:
    """Serve one request in this process (no agent listening)."""
    setup_logging(stdin)
    handler = Handler(checkpoint=checkpoints(env))
    try:
        return handler.handle(plugin, env, stdin)
    finally:
        handler.close()
