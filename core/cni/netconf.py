"""The network configuration (stdin) and the CNI_* environment of one request.

Keys are Calico's own (``cni-plugin/pkg/types/types.go``), so the ``10-calico.conflist``
Calico installs works unchanged; unknown keys are ignored, as Go's JSON decoding does.
Every problem names its key (``ipam.assign_ipv4: must be "true" or "false", got 3``).

pycalico's additions (documented in docs/cni.md):

* ``calico_config``: path of a calico.toml; its ``[datastore]`` and ``node_name`` are
  used instead of the ``datastore_type`` / ``etcd_*`` / ``kubernetes`` keys.
* ``socket_path``: where the node agent listens (default ``/var/run/calico/cni.sock``;
  ``$CALICO_CNI_SOCKET`` overrides; ``""`` disables the fast path).
* ``args.cni.labels``: labels for the WorkloadEndpoint when there is no Kubernetes API
  to read pod labels from, as the CNI conventions define them (a list of
  ``{"key": k, "value": v}``; a plain object is accepted too).
* ``args.cni.ports``: the pod's container ports, for the same reason: a list of
  Kubernetes ContainerPorts (``{"name", "containerPort", "protocol", "hostPort",
  "hostIP"}``); those with a name or a hostPort become the endpoint's ``spec.ports``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import spec
from .spec import CniError

NAME_RE = re.compile(r"^[a-zA-Z0-9_.-]+$")
DEFAULT_NETWORK = "k8s-pod-network"
DEFAULT_SOCKET = "/var/run/calico/cni.sock"
DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
DEFAULT_MTU_FILE = "/var/lib/calico/mtu"
DEFAULT_IPAM_LOCK = "/var/run/calico/ipam.lock"
DATASTORE_TYPES = ("etcdv3", "kubernetes")
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")


def _bad(path: str, what: str, value: Any) -> CniError:
    return CniError(spec.INVALID_NETCONF, f"{path}: {what}, got {json.dumps(value)[:120]}")


class _Reader:
    """Typed access to one JSON object, naming the key path in every error."""

    def __init__(self, data: Any, path: str = ""):
        if not isinstance(data, dict):
            raise _bad(path or "(netconf)", "must be a JSON object", data)
        self.data, self.path = data, path

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def str(self, key: str, default: str = "", choices: tuple[str, ...] = ()) -> str:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise _bad(self._key(key), "must be a string", value)
        if choices and value not in choices:
            raise _bad(self._key(key), f"must be one of {', '.join(repr(c) for c in choices)}", value)
        return value

    def int(self, key: str, default: int = 0, lo: int | None = None, hi: int | None = None) -> int:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise _bad(self._key(key), "must be an integer", value)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _bad(self._key(key), f"must be between {lo} and {hi}", value)
        return value

    def bool(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise _bad(self._key(key), "must be true or false", value)
        return value

    def flag(self, key: str) -> bool | None:
        """Calico's *string booleans ("true"/"false"); JSON booleans accepted too."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise _bad(self._key(key), 'must be "true" or "false"', value)

    def strs(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad(self._key(key), "must be a list of strings", value)
        return tuple(value)

    def obj(self, key: str) -> _Reader:
        value = self.data.get(key)
        if value is None:
            return _Reader({}, self._key(key))
        return _Reader(value, self._key(key))


@dataclass(frozen=True)
class IPAMConf:
    type: str = ""
    subnet: str = ""
    assign_ipv4: bool | None = None
    assign_ipv6: bool | None = None
    ipv4_pools: tuple[str, ...] = ()
    ipv6_pools: tuple[str, ...] = ()
    routes: tuple[tuple[str, str], ...] = ()  # host-local's ipam.routes: (dst, gw)

    @property
    def num_v4(self) -> int:
        return 0 if self.assign_ipv4 is False else 1

    @property
    def num_v6(self) -> int:
        return 1 if self.assign_ipv6 else 0


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    name: str
    type: str
    raw: dict = field(repr=False, compare=False)
    ipam: IPAMConf = IPAMConf()
    mtu: int = 0
    num_queues: int = 0
    nodename: str = ""
    nodename_file: str = ""
    nodename_file_optional: bool = False
    hostname: str = ""  # deprecated
    ipam_lock_file: str = ""
    datastore_type: str = ""
    etcd_endpoints: str = ""
    etcd_discovery_srv: str = ""
    etcd_scheme: str = ""
    etcd_key_file: str = ""
    etcd_cert_file: str = ""
    etcd_ca_cert_file: str = ""
    log_level: str = "info"
    log_file_path: str = ""
    policy_type: str = ""
    kubeconfig: str = ""
    k8s_api_root: str = ""
    allow_ip_forwarding: bool = False
    include_default_routes: bool = False
    device_type: str = "veth"
    require_mtu_file: bool = False
    ip_addrs_no_ipam: bool = False
    floating_ips: bool = False
    calico_config: str = ""
    socket_path: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    ports: tuple[dict, ...] = field(default=(), compare=False)  # args.cni.ports, checked
    prev_result: dict | None = None
    runtime_config: dict = field(default_factory=dict)
    valid_attachments: tuple[tuple[str, str], ...] | None = None  # GC

    def datastore_env(self) -> dict[str, str]:
        """Calico exports the datastore keys as environment variables before building
        its client (``internal/pkg/utils``); these are those variables."""
        env = {}
        pairs = (("DATASTORE_TYPE", self.datastore_type), ("ETCD_ENDPOINTS", self.etcd_endpoints),
                 ("ETCD_DISCOVERY_SRV", self.etcd_discovery_srv), ("ETCD_KEY_FILE", self.etcd_key_file),
                 ("ETCD_CERT_FILE", self.etcd_cert_file), ("ETCD_CA_CERT_FILE", self.etcd_ca_cert_file),
                 ("KUBECONFIG", self.kubeconfig), ("K8S_API_ENDPOINT", self.k8s_api_root))
        for var, value in pairs:
            if value:
                env[var] = value
        return env


def loads(data: bytes | str) -> dict:
    """The netconf JSON object; DECODE_FAILURE if it is not one."""
    try:
        obj = json.loads(data or b"")
    except ValueError as exc:
        raise CniError(spec.DECODE_FAILURE, f"the network configuration on stdin is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CniError(spec.DECODE_FAILURE, "the network configuration on stdin must be a JSON object")
    return obj


def parse(data: bytes | str | dict, plugin: str = "calico") -> NetConf:
    """Read and check a network configuration; CniError naming the bad key."""
    raw = data if isinstance(data, dict) else loads(data)
    version = spec.check_version(raw.get("cniVersion"))
    r = _Reader(raw)
    name = r.str("name")
    if not name:
        raise CniError(spec.INVALID_NETCONF, "name: is required (the network's name, e.g. \"k8s-pod-network\")")
    if not NAME_RE.match(name):
        raise _bad("name", f"must match {NAME_RE.pattern}", name)
    ipam = r.obj("ipam")
    routes = []
    raw_routes = ipam.data.get("routes")
    if raw_routes is not None:
        if not isinstance(raw_routes, list):
            raise _bad("ipam.routes", "must be a list of {\"dst\": CIDR}", raw_routes)
        for i, route in enumerate(raw_routes):
            rr = _Reader(route, f"ipam.routes[{i}]")
            dst = rr.str("dst")
            _cidr(f"ipam.routes[{i}].dst", dst)
            routes.append((dst, rr.str("gw")))
    ipam_conf = IPAMConf(
        type=ipam.str("type"),
        subnet=ipam.str("subnet"),
        assign_ipv4=ipam.flag("assign_ipv4"),
        assign_ipv6=ipam.flag("assign_ipv6"),
        ipv4_pools=ipam.strs("ipv4_pools"),
        ipv6_pools=ipam.strs("ipv6_pools"),
        routes=tuple(routes),
    )
    if plugin == "calico" and not ipam_conf.type:
        raise CniError(spec.INVALID_NETCONF,
                       "ipam.type: is required (\"calico-ipam\", or another IPAM plugin such as \"host-local\")")
    if ipam_conf.num_v4 == 0 and ipam_conf.num_v6 == 0 and ipam_conf.type == "calico-ipam":
        raise CniError(spec.INVALID_NETCONF,
                       "ipam.assign_ipv4 and ipam.assign_ipv6: at least one address family must be assigned")
    endpoints = r.str("etcd_endpoints")
    for i, url in enumerate(e.strip() for e in endpoints.split(",") if e.strip()):
        if not url.startswith(("http://", "https://")):
            raise _bad(f"etcd_endpoints[{i}]", "must be an http:// or https:// URL", url)
    policy = r.obj("policy")
    kube = r.obj("kubernetes")
    features = r.obj("feature_control")
    container = r.obj("container_settings")
    socket_path = raw.get("socket_path")
    if socket_path is not None and not isinstance(socket_path, str):
        raise _bad("socket_path", "must be a string (\"\" disables the agent socket)", socket_path)
    calico_config = r.str("calico_config")
    if calico_config and not os.path.isfile(calico_config):
        raise _bad("calico_config", "must name a calico.toml that exists", calico_config)
    runtime = raw.get("runtimeConfig")
    if runtime is not None and not isinstance(runtime, dict):
        raise _bad("runtimeConfig", "must be a JSON object", runtime)
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _bad("prevResult", "must be a JSON object (a CNI result)", prev)
    return NetConf(
        cni_version=version,
        name=name,
        type=r.str("type"),
        raw=raw,
        ipam=ipam_conf,
        mtu=r.int("mtu", 0, 0, 65535),
        num_queues=r.int("num_queues", 0, 0, 1024),
        nodename=r.str("nodename"),
        nodename_file=r.str("nodename_file"),
        nodename_file_optional=r.bool("nodename_file_optional"),
        hostname=r.str("hostname"),
        ipam_lock_file=r.str("ipam_lock_file"),
        datastore_type=r.str("datastore_type", "", DATASTORE_TYPES),
        etcd_endpoints=endpoints or r.str("etcd_authority") and f"http://{r.str('etcd_authority')}",
        etcd_discovery_srv=r.str("etcd_discovery_srv"),
        etcd_scheme=r.str("etcd_scheme"),
        etcd_key_file=r.str("etcd_key_file"),
        etcd_cert_file=r.str("etcd_cert_file"),
        etcd_ca_cert_file=r.str("etcd_ca_cert_file"),
        log_level=r.str("log_level", "info").lower(),
        log_file_path=r.str("log_file_path"),
        policy_type=policy.str("type"),
        kubeconfig=kube.str("kubeconfig"),
        k8s_api_root=kube.str("k8s_api_root"),
        allow_ip_forwarding=container.bool("allow_ip_forwarding"),
        include_default_routes=r.bool("include_default_routes"),
        device_type=r.str("device_type", "veth", ("veth", "netkit")),
        require_mtu_file=r.bool("require_mtu_file"),
        ip_addrs_no_ipam=features.bool("ip_addrs_no_ipam"),
        floating_ips=features.bool("floating_ips"),
        calico_config=calico_config,
        socket_path=socket_path,
        labels=_labels(raw.get("args")),
        ports=_ports(raw.get("args")),
        prev_result=prev,
        runtime_config=runtime or {},
        valid_attachments=_attachments(raw),
    )


def _cidr(path: str, text: str) -> None:
    import ipaddress

    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _bad(path, "must be a CIDR such as 0.0.0.0/0", text) from None


def _labels(args: Any) -> tuple[tuple[str, str], ...]:
    if args is None:
        return ()
    if not isinstance(args, dict):
        raise _bad("args", "must be a JSON object", args)
    cni = args.get("cni")
    if cni is None:
        return ()
    if not isinstance(cni, dict):
        raise _bad("args.cni", "must be a JSON object", cni)
    labels = cni.get("labels")
    if labels is None:
        return ()
    if isinstance(labels, dict):
        items = list(labels.items())
        for k, v in items:
            if not isinstance(v, str):
                raise _bad(f"args.cni.labels.{k}", "must be a string", v)
        return tuple(items)
    if not isinstance(labels, list):
        raise _bad("args.cni.labels", 'must be a list of {"key": ..., "value": ...}', labels)
    out = []
    for i, item in enumerate(labels):
        if not (isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("value"), str)):
            raise _bad(f"args.cni.labels[{i}]", 'must be {"key": "<string>", "value": "<string>"}', item)
        out.append((item["key"], item["value"]))
    return tuple(out)


_PORT_KEYS = {"name": str, "containerPort": int, "protocol": str, "hostPort": int, "hostIP": str}


def _ports(args: Any) -> tuple[dict, ...]:
    ports = ((args or {}).get("cni") or {}).get("ports") if isinstance(args, dict) else None
    if ports is None:
        return ()
    if not isinstance(ports, list):
        raise _bad("args.cni.ports", 'must be a list of {"name": ..., "containerPort": ..., "protocol": ...}', ports)
    for i, port in enumerate(ports):
        path = f"args.cni.ports[{i}]"
        if not isinstance(port, dict):
            raise _bad(path, 'must be {"name": ..., "containerPort": ..., "protocol": ...}', port)
        for key, value in port.items():
            want = _PORT_KEYS.get(key)
            if want is None:
                raise _bad(f"{path}.{key}", f"is not a container port key ({', '.join(_PORT_KEYS)})", value)
            if not isinstance(value, want) or isinstance(value, bool):
                raise _bad(f"{path}.{key}", f"must be a {'number' if want is int else 'string'}", value)
        if not 1 <= port.get("containerPort", 0) <= 65535:
            raise _bad(f"{path}.containerPort", "must be 1..65535", port.get("containerPort"))
        if port.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP"):
            raise _bad(f"{path}.protocol", 'must be "TCP", "UDP" or "SCTP"', port["protocol"])
        if not 0 <= port.get("hostPort", 0) <= 65535:
            raise _bad(f"{path}.hostPort", "must be 0..65535", port["hostPort"])
    return tuple(ports)


def _attachments(raw: dict) -> tuple[tuple[str, str], ...] | None:
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            raise _bad(key, 'must be a list of {"containerID": ..., "ifname": ...}', value)
        out = []
        for i, item in enumerate(value):
            if not (isinstance(item, dict) and isinstance(item.get("containerID"), str)):
                raise _bad(f"{key}[{i}]", 'must be {"containerID": "<id>", "ifname": "<name>"}', item)
            out.append((item["containerID"], item.get("ifname") or ""))
        return tuple(out)
    return None


# --- the CNI_* environment -------------------------------------------------------------------


@dataclass(frozen=True)
class Args:
    """CNI_ARGS: ``K=V;K2=V2``. Calico reads the Kubernetes keys."""

    pairs: tuple[tuple[str, str], ...] = ()

    def get(self, key: str, default: str = "") -> str:
        for k, v in self.pairs:
            if k == key:
                return v
        return default

    @property
    def pod_namespace(self) -> str:
        return self.get("K8S_POD_NAMESPACE")

    @property
    def pod_name(self) -> str:
        return self.get("K8S_POD_NAME")

    @property
    def is_k8s(self) -> bool:
        return bool(self.pod_namespace and self.pod_name)


def parse_args(text: str) -> Args:
    pairs = []
    for i, item in enumerate(p for p in text.split(";") if p):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(spec.INVALID_ENVIRONMENT,
                           f"CNI_ARGS: item {i + 1} {item!r} is not KEY=VALUE (items are separated by ';')")
        pairs.append((key, value))
    return Args(tuple(pairs))


@dataclass(frozen=True)
class Env:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: Args = Args()
    path: tuple[str, ...] = ()


_REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": (),
    "STATUS": (),
    "VERSION": (),
}
_CONTAINER_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_IFNAME_BAD = re.compile(r"[/:\s]")


def parse_env(env: Mapping[str, str]) -> Env:
    """The CNI_* variables, checked for the command; INVALID_ENVIRONMENT naming the
    variable otherwise."""
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CniError(spec.INVALID_ENVIRONMENT, f"CNI_COMMAND: is required (one of {', '.join(COMMANDS)})")
    if command not in COMMANDS:
        raise CniError(spec.INVALID_ENVIRONMENT, f"CNI_COMMAND: unknown command {command!r} "
                                                 f"(one of {', '.join(COMMANDS)})")
    for var in _REQUIRED[command]:
        if not env.get(var):
            raise CniError(spec.INVALID_ENVIRONMENT, f"{var}: is required for {command}")
    cid = env.get("CNI_CONTAINERID", "")
    if cid and not _CONTAINER_ID_RE.match(cid):
        raise CniError(spec.INVALID_ENVIRONMENT,
                       f"CNI_CONTAINERID: {cid!r} must start with a letter or digit and hold only letters, "
                       "digits, '_', '.' and '-'")
    ifname = env.get("CNI_IFNAME", "")
    if ifname and (len(ifname) > 15 or _IFNAME_BAD.search(ifname) or ifname in (".", "..")):
        raise CniError(spec.INVALID_ENVIRONMENT,
                       f"CNI_IFNAME: {ifname!r} is not a valid interface name (at most 15 characters, no '/', "
                       "':' or spaces)")
    return Env(
        command=command,
        container_id=cid,
        netns=env.get("CNI_NETNS", ""),
        ifname=ifname,
        args=parse_args(env.get("CNI_ARGS", "")),
        path=tuple(p for p in env.get("CNI_PATH", "").split(":") if p),
    )
