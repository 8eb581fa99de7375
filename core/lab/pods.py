"""Pods in a lab: network namespaces wired by the real ``calico`` CNI executable.

A pod is a network namespace ``<lab>-<ns>-<name>`` (hashed when long) recorded in the
lab state, so ``down`` removes it. ``add_pod`` runs the node's CNI chain
(``nodes/<node>/cni/10-calico.conflist``: calico, then portmap, then bandwidth) the way
a container runtime does: each plugin executed inside the node's namespace with the
CNI_* environment, the conflist entry on stdin (``prevResult`` = the previous plugin's
result), and the final result kept for DEL. The Kubernetes identity travels in CNI_ARGS
(``K8S_POD_NAMESPACE``, ``K8S_POD_NAME``); what the CNI plugin would read from the pod
with Kubernetes policy (``policy.type`` k8s, as Calico's manifests install it) comes in
the netconf's ``args.cni``: ``labels``, and ``ports`` (its named container ports). The
pod's namespace gets its ``kns.``/``ksa.`` profiles first if it has none
(:func:`pycalico.core.lab.kube.ensure_namespace`), as Kubernetes has the namespace before
the pod.

Before the first pod, the datastore gets a default IPPool (10.65.0.0/16, blockSize 26,
no encapsulation) if it has none, as calico-node does at start.

A bare node (machine.py) is provisioned like a machine: there the chain is the node's own
``/etc/cni/net.d/10-calico.conflist`` and the executables its ``/opt/cni/bin``, as its
installer put them.

The node agent's socket (``nodes/<node>/cni.sock``) is in each node's conflist;
``start_cni_agent`` runs the agent side there (otherwise the executable serves itself).

The lab's etcd is reachable only from inside the lab, so datastore reads from the
calling process go through ``with_datastore(lab, node, fn)``, which runs ``fn(datastore)``
in a thread that has joined the node's namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs

from . import netns
from .cluster import Lab
from .state import LabError, NodeRecord, load_state

T = TypeVar("T")

NETWORK = "k8s-pod-network"
CNI_VERSION = "1.0.0"
CONFLIST = "10-calico.conflist"
DEFAULT_POOL = "default-ipv4-ippool"
DEFAULT_POOL_CIDR = "10.65.0.0/16"
DEFAULT_BLOCK_SIZE = 26
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
# Where a provisioned machine has them, as kubelet and containerd look by default.
MACHINE_CNI_BIN = "/opt/cni/bin"
MACHINE_CNI_CONF = "/etc/cni/net.d"
PLUGIN_TIMEOUT = 120.0
POD_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$")
PODS_FILE = "pods.json"


@attrs.define
class Pod:
    namespace: str
    name: str
    node: str
    netns: str
    container_id: str
    ifname: str
    ips: list[str]
    result: dict
    labels: dict[str, str] = attrs.Factory(dict)
    ports: list[dict] = attrs.Factory(list)  # Kubernetes ContainerPorts (name, containerPort, protocol)
    runtime: dict = attrs.Factory(dict)  # runtimeConfig given to ADD (portMappings, bandwidth)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ip(self) -> str:
        """The pod's first address (IPv4 first), without prefix."""
        return self.ips[0].split("/")[0] if self.ips else ""

    @property
    def netns_path(self) -> str:
        return str(netns.NETNS_DIR / self.netns)


class CniFailed(LabError):
    """A CNI plugin returned an error; ``error`` is its CNI error object."""

    def __init__(self, message: str, error: dict | None = None):
        super().__init__(message)
        self.error = error or {}


_converter = cattrs.Converter()


# --- paths and the conflist -----------------------------------------------------------------------


def _node(lab: Lab, node: str | NodeRecord) -> NodeRecord:
    return node if isinstance(node, NodeRecord) else lab.node(node)


def node_dir(lab: Lab, node: str | NodeRecord) -> Path:
    return lab.state_dir / "nodes" / _node(lab, node).name


def socket_path(lab: Lab, node: str | NodeRecord) -> str:
    """Where this node's CNI agent listens (named in the node's conflist)."""
    return str(node_dir(lab, node) / "cni.sock")


def conflist_path(lab: Lab, node: str | NodeRecord) -> Path:
    return node_dir(lab, node) / "cni" / CONFLIST


def cni_path() -> list[str]:
    """CNI_PATH: this environment's executables (``calico``) first, then the reference
    plugins."""
    return [os.path.dirname(sys.executable), *CNI_BIN_DIRS]


def conflist(lab: Lab, node: str | NodeRecord, bandwidth: bool = True) -> dict:
    """The node's CNI chain, shaped like Calico's ``10-calico.conflist``, with the
    lab's paths: the node's calico.toml for the datastore and node name, its own
    socket, IPAM lock and log; Kubernetes policy, as in etcd mode with kube-controllers."""
    n = _node(lab, node)
    d = node_dir(lab, n)
    calico = {
        "type": "calico",
        "log_level": "info",
        "log_file_path": str(d / "cni" / "cni.log"),
        "nodename": n.name,
        "nodename_file_optional": True,
        "mtu": 1500,
        "ipam": {"type": "calico-ipam"},
        "policy": {"type": "k8s"},
        "calico_config": n.config_path,
        "socket_path": socket_path(lab, n),
        "ipam_lock_file": str(d / "cni" / "ipam.lock"),
    }
    plugins: list[dict] = [calico, {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}]
    if bandwidth:
        plugins.append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
    return {"name": NETWORK, "cniVersion": CNI_VERSION, "plugins": plugins}


def write_conflist(lab: Lab, node: str | NodeRecord) -> Path:
    path = conflist_path(lab, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")  # writers may race
    tmp.write_text(json.dumps(conflist(lab, node), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def load_conflist(lab: Lab, node: str | NodeRecord) -> dict:
    n = _node(lab, node)
    if n.root:
        path = f"{MACHINE_CNI_CONF}/{CONFLIST}"
        res = lab.exec(n, ["cat", path], capture_output=True, text=True)
        if res.returncode != 0:
            raise LabError(f"{n.name} has no CNI configuration: {res.stderr.strip()}")
        try:
            return json.loads(res.stdout)
        except ValueError as e:
            raise LabError(f"{n.name}:{path} is not JSON: {e}") from None
    path = conflist_path(lab, n)
    if not path.exists():
        write_conflist(lab, node)
    return json.loads(path.read_text())


# --- the datastore, from inside the lab -------------------------------------------------------------


def with_datastore(lab: Lab, node: str | NodeRecord, fn: Callable[[Any], T], timeout: float = 60.0) -> T:
    """``fn(datastore)`` run in the node's network namespace (where etcd is reachable),
    with a datastore opened from the node's calico.toml and closed afterwards."""
    n = _node(lab, node)

    def run() -> T:
        from pycalico.core.client import open_datastore

        ds = open_datastore(n.config_path, env={})
        try:
            return fn(ds)
        finally:
            ds.close()

    return netns.run_in_netns(n.netns, run, timeout=timeout)


def ensure_default_pool(lab: Lab, node: str | NodeRecord | None = None, modes: Mapping[str, str] | None = None) -> bool:
    """Create the default IPv4 pool if the datastore has no IPPool (what calico-node
    does when it starts), encapsulating as ``modes`` says (``{"vxlanMode": "Always"}``;
    Never by default). True if it created one."""
    modes = {"ipipMode": "Never", "vxlanMode": "Never", **(modes or {})}

    def ensure(ds) -> bool:
        from pycalico.core.datastore import AlreadyExists
        from pycalico.core.resources import load_resources

        if ds.list("IPPool").items:
            return False
        (pool,) = load_resources(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\n"
            f"metadata: {{name: {DEFAULT_POOL}}}\n"
            f"spec: {{cidr: {DEFAULT_POOL_CIDR}, blockSize: {DEFAULT_BLOCK_SIZE}, ipipMode: {modes['ipipMode']}, "
            f"vxlanMode: {modes['vxlanMode']}, natOutgoing: true, nodeSelector: all()}}\n")
        try:
            ds.create(pool)
        except AlreadyExists:
            return False
        return True

    return with_datastore(lab, node or lab.nodes[0], ensure)


# --- the pod records ------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(lab: Lab) -> Iterator[None]:
    """Serialise changes to the pod records and the lab's namespace list (several
    ``pod add`` may run at once); refreshes ``lab.state`` from disk on entry."""
    lab.state_dir.mkdir(parents=True, exist_ok=True)
    with open(lab.state_dir / "pods.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            lab.state = load_state(lab.state_dir)
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_pods(lab: Lab) -> dict[str, Pod]:
    path = lab.state_dir / PODS_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise LabError(f"corrupt pod records {path}: {exc}") from None
    return {k: _converter.structure(v, Pod) for k, v in raw.get("pods", {}).items()}


def _write_pods(lab: Lab, pods: dict[str, Pod]) -> None:
    path = lab.state_dir / PODS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pods": {k: _converter.unstructure(v) for k, v in sorted(pods.items())}},
                              indent=2) + "\n")
    os.replace(tmp, path)


def list_pods(lab: Lab) -> list[Pod]:
    return sorted(_read_pods(lab).values(), key=lambda p: (p.node, p.key))


def get_pod(lab: Lab, key: str) -> Pod:
    pods = _read_pods(lab)
    if key not in pods:
        known = ", ".join(sorted(pods)) or "none"
        raise LabError(f"lab {lab.name!r} has no pod {key!r} (pods: {known})")
    return pods[key]


def parse_key(key: str) -> tuple[str, str]:
    m = POD_KEY_RE.match(key)
    if not m:
        raise LabError(f"invalid pod {key!r}: use NAMESPACE/NAME (lower case letters, digits, '-', and '.' "
                       "in the name)")
    return m.group(1), m.group(3)


def pod_netns_name(lab: Lab, namespace: str, name: str) -> str:
    plain = f"{lab.name}-{namespace}-{name}"
    if len(plain) <= 48:
        return plain
    return f"{lab.name}-pod-{hashlib.sha1(f'{namespace}/{name}'.encode()).hexdigest()[:12]}"


# --- running the CNI chain --------------------------------------------------------------------------


def _find_plugin(kind: str) -> str:
    for d in cni_path():
        path = os.path.join(d, kind)
        if os.access(path, os.X_OK):
            return path
    raise LabError(f"CNI plugin {kind!r} not found in {':'.join(cni_path())}")


def cni_env(command: str, container_id: str, netns_path: str, ifname: str, namespace: str = "",
            name: str = "", extra: Mapping[str, str] | None = None) -> dict[str, str]:
    args = "IgnoreUnknown=1"
    if namespace and name:
        args += f";K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={container_id}"
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns_path,
           "CNI_IFNAME": ifname, "CNI_ARGS": args, "CNI_PATH": ":".join(cni_path())}
    return {**env, **(extra or {})}


def run_plugin(lab: Lab, node: str | NodeRecord, netconf: dict, env: Mapping[str, str],
               timeout: float = PLUGIN_TIMEOUT) -> dict | None:
    """Execute one CNI plugin (``netconf["type"]``) inside the node's namespace, as a
    runtime does. Returns its JSON output (None if it printed nothing); CniFailed with
    the plugin's CNI error."""
    if _node(lab, node).root:
        path = f"{MACHINE_CNI_BIN}/{netconf['type']}"
        env = {**env, "CNI_PATH": MACHINE_CNI_BIN}
    else:
        path = _find_plugin(netconf["type"])
    try:
        proc = lab.exec(node, [path], env=dict(env), input=json.dumps(netconf).encode(),
                        capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CniFailed(f"{netconf['type']} {env.get('CNI_COMMAND')}: no answer within {timeout:.0f} s") from None
    out = proc.stdout.decode(errors="replace").strip()
    data = None
    if out:
        try:
            data = json.loads(out)
        except ValueError:
            data = None
    if proc.returncode != 0:
        msg = data.get("msg") if isinstance(data, dict) else None
        detail = f"{msg} (code {data.get('code')})" if msg else (out or proc.stderr.decode(errors="replace").strip())
        raise CniFailed(f"{netconf['type']} {env.get('CNI_COMMAND')} failed: {detail}",
                        data if isinstance(data, dict) else None)
    if out and data is None:
        raise CniFailed(f"{netconf['type']} printed something that is not JSON: {out[:200]!r}")
    return data


def _pod_args(labels: Mapping[str, str] | None, ports: Sequence[Mapping[str, Any]] | None) -> dict | None:
    """The netconf ``args`` carrying what the CNI plugin would read from the pod."""
    cni: dict[str, Any] = {}
    if labels:
        cni["labels"] = [{"key": k, "value": v} for k, v in labels.items()]
    if ports:
        cni["ports"] = [dict(p) for p in ports]
    return {"cni": cni} if cni else None


def _plugin_conf(chain: dict, plugin: dict, prev: dict | None, runtime: Mapping[str, Any],
                 args: dict | None) -> dict:
    conf = {"cniVersion": chain["cniVersion"], "name": chain["name"], **plugin}
    wanted = {k: v for k, v in runtime.items() if (plugin.get("capabilities") or {}).get(k)}
    if wanted:
        conf["runtimeConfig"] = wanted
    if prev is not None:
        conf["prevResult"] = prev
    if plugin["type"] == "calico" and args:
        conf["args"] = args
    return conf


def run_chain(lab: Lab, node: str | NodeRecord, command: str, env: Mapping[str, str],
              runtime: Mapping[str, Any] | None = None, labels: Mapping[str, str] | None = None,
              prev_result: dict | None = None, chain: dict | None = None,
              ports: Sequence[Mapping[str, Any]] | None = None) -> dict | None:
    """ADD (plugins in order, each given the previous result) or DEL/CHECK (in
    reverse for DEL, each given ``prev_result``), as libcni runs a conflist."""
    chain = chain or load_conflist(lab, node)
    args = _pod_args(labels, ports)
    plugins = chain["plugins"]
    runtime = runtime or {}
    if command == "ADD":
        prev = None
        for plugin in plugins:
            prev = run_plugin(lab, node, _plugin_conf(chain, plugin, prev, runtime, args), env)
        return prev
    order = list(reversed(plugins)) if command == "DEL" else plugins
    if command == "CHECK":
        # The reference bandwidth plugin (1.1.x) crashes on CHECK when it was given no
        # bandwidth to enforce; it has nothing to check then anyway.
        order = [p for p in order if p["type"] != "bandwidth" or "bandwidth" in runtime]
    errors = []
    for plugin in order:
        try:
            run_plugin(lab, node, _plugin_conf(chain, plugin, prev_result, runtime, args), env)
        except CniFailed as exc:
            if command != "DEL":
                raise
            errors.append(str(exc))  # DEL carries on with the other plugins
    if errors:
        raise CniFailed("; ".join(errors))
    return None


def calico_netconf(lab: Lab, node: str | NodeRecord, **overrides: Any) -> dict:
    """The ``calico`` entry of the node's conflist as the plugin receives it (with
    cniVersion and name), with ``overrides`` applied."""
    chain = load_conflist(lab, node)
    plugin = next(p for p in chain["plugins"] if p["type"] == "calico")
    return {"cniVersion": chain["cniVersion"], "name": chain["name"], **plugin, **overrides}


def calico(lab: Lab, node: str | NodeRecord, command: str, container_id: str, netns_path: str = "",
           ifname: str = "eth0", pod: str | None = None, netconf: dict | None = None,
           env: Mapping[str, str] | None = None, timeout: float = PLUGIN_TIMEOUT) -> dict | None:
    """Run the ``calico`` executable alone (no chain) in the node's namespace for one
    container: ``pod`` ("ns/name") makes it a Kubernetes pod (CNI_ARGS), ``netconf``
    replaces the node's, ``env`` adds variables. CniFailed on a CNI error."""
    namespace, name = parse_key(pod) if pod else ("", "")
    full = cni_env(command, container_id, netns_path, ifname, namespace, name, env)
    return run_plugin(lab, node, netconf or calico_netconf(lab, node), full, timeout)


# --- namespaces -----------------------------------------------------------------------------------


def create_netns(lab: Lab, name: str) -> str:
    """A network namespace recorded in the lab state (so ``down`` removes it) with lo
    up; returns its path (what CNI_NETNS carries)."""
    with _locked(lab):
        if netns.exists(name):
            raise LabError(f"network namespace {name} already exists")
        lab.create_netns(name)
    netns.link_up(name, "lo")
    return str(netns.NETNS_DIR / name)


def delete_netns(lab: Lab, name: str) -> None:
    netns.delete(name)
    with _locked(lab):
        if name in lab.state.namespaces:
            lab.state.namespaces.remove(name)
            lab.save()


def _ip_batch(lines: list[str]) -> None:
    if not lines:
        return
    res = subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True)
    if res.returncode != 0:
        raise LabError(f"`ip -batch` failed: {res.stderr.strip()}")


def create_netns_many(lab: Lab, names: Sequence[str]) -> list[str]:
    """``create_netns`` for many namespaces at once (one state write, one ``ip``); lo
    is left down in these."""
    with _locked(lab):
        taken = [n for n in names if netns.exists(n)]
        if taken:
            raise LabError(f"network namespace {taken[0]} already exists")
        lab.state.namespaces.extend(names)
        lab.save()
    _ip_batch([f"netns add {n}" for n in names])
    return [str(netns.NETNS_DIR / n) for n in names]


def delete_netns_many(lab: Lab, names: Sequence[str]) -> None:
    _ip_batch([f"netns delete {n}" for n in names if netns.exists(n)])
    with _locked(lab):
        gone = set(names)
        lab.state.namespaces = [n for n in lab.state.namespaces if n not in gone]
        lab.save()


# --- pods -----------------------------------------------------------------------------------------


def add_pod(lab: Lab, node: str | NodeRecord, key: str, labels: Mapping[str, str] | None = None,
            ifname: str = "eth0", port_mappings: Sequence[Mapping[str, Any]] | None = None,
            bandwidth: Mapping[str, int] | None = None, pool: bool = True,
            ports: Sequence[Mapping[str, Any]] | None = None) -> Pod:
    """Create pod ``NAMESPACE/NAME`` on ``node``: its namespace, then the CNI chain's
    ADD. ``ports`` are its container ports (Kubernetes ContainerPorts). On failure the
    chain's DEL runs and the namespace is removed."""
    from .kube import ensure_namespace

    n = _node(lab, node)
    namespace, name = parse_key(key)
    if pool:
        ensure_default_pool(lab, n)
    with_datastore(lab, n, lambda ds: ensure_namespace(ds, namespace))
    ports = [dict(p) for p in ports or ()]
    ns_name = pod_netns_name(lab, namespace, name)
    with _locked(lab):
        pods = _read_pods(lab)
        if key in pods:
            raise LabError(f"pod {key} already exists on {pods[key].node}; delete it first")
        if netns.exists(ns_name):
            raise LabError(f"network namespace {ns_name} already exists but is no pod of lab {lab.name!r}")
        pods[key] = Pod(namespace=namespace, name=name, node=n.name, netns=ns_name, container_id="",
                        ifname=ifname, ips=[], result={}, labels=dict(labels or {}), ports=ports)
        _write_pods(lab, pods)
    try:
        create_netns(lab, ns_name)
    except BaseException:
        _forget(lab, key, None)
        raise
    cid = secrets.token_hex(32)
    env = cni_env("ADD", cid, str(netns.NETNS_DIR / ns_name), ifname, namespace, name)
    runtime: dict[str, Any] = {}
    if port_mappings:
        runtime["portMappings"] = [dict(p) for p in port_mappings]
    if bandwidth:
        runtime["bandwidth"] = dict(bandwidth)
    if not n.root:
        write_conflist(lab, n)
    try:
        result = run_chain(lab, n, "ADD", env, runtime, labels, ports=ports) or {}
    except BaseException:
        try:
            run_chain(lab, n, "DEL", {**env, "CNI_COMMAND": "DEL"}, runtime, labels, ports=ports)
        except LabError:
            pass
        _forget(lab, key, ns_name)
        raise
    ips = [ip["address"] for ip in result.get("ips", [])]
    pod = Pod(namespace=namespace, name=name, node=n.name, netns=ns_name, container_id=cid, ifname=ifname,
              ips=ips, result=result, labels=dict(labels or {}), ports=ports, runtime=runtime)
    with _locked(lab):
        pods = _read_pods(lab)
        pods[key] = pod
        _write_pods(lab, pods)
    return pod


def _forget(lab: Lab, key: str, ns_name: str | None) -> None:
    if ns_name:
        delete_netns(lab, ns_name)
    with _locked(lab):
        pods = _read_pods(lab)
        pods.pop(key, None)
        _write_pods(lab, pods)


def del_pod(lab: Lab, key: str) -> None:
    """The chain's DEL (reverse order, with the stored result), then the namespace."""
    pod = get_pod(lab, key)
    errors = None
    if pod.container_id:
        env = cni_env("DEL", pod.container_id, pod.netns_path, pod.ifname, pod.namespace, pod.name)
        try:
            run_chain(lab, pod.node, "DEL", env, runtime=pod.runtime, prev_result=pod.result or None,
                      labels=pod.labels, ports=pod.ports)
        except CniFailed as exc:
            errors = exc
    if errors is not None:
        raise LabError(f"pod {key}: CNI DEL failed, the pod is kept: {errors}")
    _forget(lab, key, pod.netns)


def check_pod(lab: Lab, key: str, whole_chain: bool = False) -> None:
    """CHECK with the stored result: the ``calico`` plugin's, or (``whole_chain``)
    every plugin's. CniFailed names what is wrong. The reference plugins' CHECK is not
    dependable in containernetworking-plugins 1.1.x (portmap also looks for an IPv6
    chain of an IPv4-only pod; bandwidth crashes when it had nothing to shape), hence
    calico's alone by default."""
    pod = get_pod(lab, key)
    env = cni_env("CHECK", pod.container_id, pod.netns_path, pod.ifname, pod.namespace, pod.name)
    chain = load_conflist(lab, pod.node)
    if not whole_chain:
        chain = {**chain, "plugins": [p for p in chain["plugins"] if p["type"] == "calico"]}
    run_chain(lab, pod.node, "CHECK", env, runtime=pod.runtime, prev_result=pod.result, labels=pod.labels,
              chain=chain, ports=pod.ports)


def set_labels(lab: Lab, key: str, labels: Mapping[str, str]) -> None:
    """Record the pod's new labels (``calico-lab label`` changed its endpoint's)."""
    with _locked(lab):
        pods = _read_pods(lab)
        if key not in pods:
            raise LabError(f"lab {lab.name!r} has no pod {key!r}")
        pods[key].labels = dict(labels)
        _write_pods(lab, pods)


def exec_in_pod(lab: Lab, key: str, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
    """subprocess.run(argv) inside the pod's network namespace."""
    pod = get_pod(lab, key)
    return subprocess.run(netns.exec_argv(pod.netns, argv), **kw)


# --- the node's CNI agent ---------------------------------------------------------------------------


def start_cni_agent(lab: Lab, node: str | NodeRecord, timeout: float = 20.0) -> int:
    """Run the CNI agent (``pycalico.core.cni.server``) inside the node's namespace on
    the socket its conflist names; returns its pid once it accepts connections. It is a
    recorded lab process: ``lab.stop(pid)`` or ``down`` ends it."""
    n = _node(lab, node)
    path = socket_path(lab, n)
    log = lab.state_dir / "logs" / f"cni-agent-{n.name}.log"
    pid = lab.spawn(n.netns, [sys.executable, "-m", "pycalico.core.cni.server", "--config", n.config_path,
                              "--socket", path], log, name=f"cni-agent-{n.name}")
    rec = next(p for p in lab.processes if p.pid == pid)
    deadline = time.monotonic() + timeout
    from pycalico.core.cni.main import unix_path

    while time.monotonic() < deadline:
        if not rec.alive():
            raise LabError(f"the CNI agent of {n.name} exited; log: {log}")
        address, fd = unix_path(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(address)
            return pid
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
            if fd is not None:
                os.close(fd)
    lab.stop(pid)
    raise LabError(f"the CNI agent of {n.name} did not listen on {path} within {timeout:.0f} s; log: {log}")


def stop_cni_agent(lab: Lab, node: str | NodeRecord) -> bool:
    n = _node(lab, node)
    for rec in list(lab.processes):
        if rec.name == f"cni-agent-{n.name}":
            return lab.stop(rec.pid)
    return False
