"""Lab: a cluster of network namespaces on one machine.

Topology (all inside namespaces the lab creates):

    <name>-underlay   bridge br0, router .1 in each subnet, ip_forward=1
    <name>-cp         eth0 198.51.100.2/24, runs etcd
    <name>-nodeK      eth0 198.51.100.(10+K)/24 (or 203.0.113.(10+K)/24 with
                      two subnets), default route via its subnet's router
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from . import etcd, machine, netns
from . import typha as replicas
from .config import node_config_text, typha_config_text
from .state import (
    LabError,
    STATE_TMP,
    LabState,
    NodeRecord,
    ProcessRecord,
    TyphaRecord,
    boot_id,
    default_state_root,
    load_state,
    proc_identity,
    save_state,
    state_path,
    terminate,
    wait_ready,
)

SUBNETS = ("198.51.100", "203.0.113")
PREFIXLEN = 24
ROUTER_HOST = 1
CP_HOST = 2
NODE_HOST_BASE = 10
MAX_NODES = 200
BRIDGE = "br0"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*$")
MAX_NAME_LEN = 32

# Popen objects of processes this Python process spawned, kept so they can be
# reaped quietly (no zombies, no "still running" ResourceWarning).
_children: dict[int, subprocess.Popen] = {}


class LabNotFound(LabError):
    pass


def check_name(name: str) -> None:
    if len(name) > MAX_NAME_LEN or not NAME_RE.match(name):
        raise LabError(f"invalid lab name {name!r}: use letters, digits, '_' and "
                       f"single '-' (at most {MAX_NAME_LEN} characters)")


def lab_dir(name: str, state_root: Path | str | None = None) -> Path:
    check_name(name)
    return Path(state_root or default_state_root()) / name


ROUTINGS = ("none", "bird", "vxlan", "ipip")
POLICIES = ("iptables", "nftables")
# How the default pool encapsulates for each routing mode, as Calico's install docs set it.
POOL_MODES = {"vxlan": {"vxlanMode": "Always"}, "ipip": {"ipipMode": "Always"}}


def plan(name: str, nodes: int, subnets: int, state_dir: Path, routing: str | None = None,
         policy: str | None = None, typhas: int = 0, bare: bool = False) -> LabState:
    """The lab's full layout, decided before anything is created. With ``routing`` or
    ``policy`` given, calico-node runs on every node; with ``typhas``, that many
    calico-typha replicas run in the cp namespace and every node's calico.toml lists them.
    ``bare`` nodes are machines of their own for an installer to provision (machine.py)."""
    if bare and (routing is not None or policy is not None or typhas):
        raise LabError("bare nodes run nothing of pycalico until an installer provisions "
                       "them: --bare takes no --routing, --policy or --typha")
    if routing is not None and routing not in ROUTINGS:
        raise LabError(f"--routing must be one of {', '.join(ROUTINGS)}, not {routing!r}")
    if policy is not None and policy not in POLICIES:
        raise LabError(f"--policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    if not 1 <= nodes <= MAX_NODES:
        raise LabError(f"--nodes must be between 1 and {MAX_NODES}, not {nodes}")
    if subnets not in (1, 2):
        raise LabError(f"--subnets must be 1 or 2, not {subnets}")
    if not 0 <= typhas <= replicas.MAX_REPLICAS:
        raise LabError(f"--typha must be between 0 and {replicas.MAX_REPLICAS}, not {typhas}")
    if bare:
        machine.check_root(Path(state_dir).absolute())
    cp_ip = f"{SUBNETS[0]}.{CP_HOST}"
    endpoints = [etcd.client_url(cp_ip)]
    # First half (rounded up) of the nodes in the first subnet.
    in_first = -(-nodes // subnets)
    records = []
    for i in range(1, nodes + 1):
        subnet = SUBNETS[0 if i <= in_first else 1]
        node = f"node{i}"
        records.append(NodeRecord(
            name=node,
            netns=f"{name}-{node}",
            ip=f"{subnet}.{NODE_HOST_BASE + i}",
            prefixlen=PREFIXLEN,
            gateway=f"{subnet}.{ROUTER_HOST}",
            config_path=str(state_dir / "nodes" / node / "calico.toml"),
            root=str(state_dir / "nodes" / node / "root") if bare else "",
        ))
    return LabState(
        name=name,
        state_dir=str(state_dir),
        subnets=subnets,
        underlay_netns=f"{name}-underlay",
        cp_netns=f"{name}-cp",
        cp_ip=cp_ip,
        etcd_endpoints=endpoints,
        nodes=records,
        routing=routing or "none",
        policy=policy or "iptables",
        agents=routing is not None or policy is not None,
        bare=bare,
        typhas=replicas.plan(state_dir, cp_ip, typhas),
    )


@attrs.define
class Lab:
    state: LabState

    # --- construction -------------------------------------------------------

    @classmethod
    def up(cls, name: str = "lab", nodes: int = 2, subnets: int = 1,
           state_root: Path | str | None = None, *, recreate: bool = False,
           etcd_timeout: float = 20.0, routing: str | None = None, policy: str | None = None,
           agent_timeout: float = 60.0, typha: int = 0, bare: bool = False) -> Lab:
        """Build the lab. On any failure everything created so far is torn down.

        With ``routing`` (bird, vxlan, ipip, none) or ``policy`` (iptables, nftables),
        each node runs calico-node with them (the other defaults to none / iptables),
        the default pool encapsulates as the routing mode needs, and ``up`` returns once
        every node has registered its Node. With ``typha`` N, N calico-typha replicas
        serve the agents (all of them listed in each node's ``[typha] addresses``) and
        are ready before any agent starts. With ``bare``, each node is a machine of its
        own (its own /etc, /opt, /var, /usr/local, /root, /run and host name) with
        nothing of pycalico in it, for an installer to provision; ``exec`` runs there."""
        directory = lab_dir(name, state_root)
        if state_path(directory).exists():
            if not recreate:
                raise LabError(f"lab {name!r} already exists ({directory}); run "
                               f"`calico-lab down --name {name}` first or use --recreate")
            cls.load(name, state_root).down()
        remove_stale_dir(directory)
        if directory.exists() and any(directory.iterdir()):
            # down() removes the whole directory, so it must start out ours.
            raise LabError(f"state directory {directory} is not empty and holds no lab")
        lab = cls(plan(name, nodes, subnets, directory, routing, policy, typha, bare))
        taken = [ns for ns in lab._all_netns() if netns.exists(ns)]
        if taken:
            raise LabError(f"network namespace {taken[0]} already exists but belongs to "
                           f"no lab state in {directory.parent}; remove it with "
                           f"`ip netns delete {taken[0]}` if it is a leftover")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lab.save()
            lab._build(etcd_timeout)
            if lab.state.agents:
                lab._start_agents(agent_timeout)
        except BaseException as e:
            try:
                lab.down()
            except LabError as cleanup:
                raise LabError(f"{e} (and cleanup failed: {cleanup})") from e
            if isinstance(e, LabError):
                raise
            if isinstance(e, Exception):
                raise LabError(f"lab {name!r} failed to come up: {e}") from e
            raise
        return lab

    @classmethod
    def load(cls, name: str = "lab", state_root: Path | str | None = None) -> Lab:
        directory = lab_dir(name, state_root)
        try:
            return cls(load_state(directory))
        except FileNotFoundError:
            raise LabNotFound(f"no lab {name!r} in {directory.parent}") from None

    @staticmethod
    def list(state_root: Path | str | None = None) -> list[str]:
        root = Path(state_root or default_state_root())
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if state_path(p).is_file())

    # --- accessors ----------------------------------------------------------

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def state_dir(self) -> Path:
        return Path(self.state.state_dir)

    @property
    def nodes(self) -> list[NodeRecord]:
        return self.state.nodes

    @property
    def etcd_endpoints(self) -> list[str]:
        return self.state.etcd_endpoints

    @property
    def cp_netns(self) -> str:
        return self.state.cp_netns

    @property
    def underlay_netns(self) -> str:
        return self.state.underlay_netns

    @property
    def processes(self) -> list[ProcessRecord]:
        return self.state.processes

    def node(self, name: str) -> NodeRecord:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"lab {self.name!r} has no node {name!r} "
                       f"(nodes: {', '.join(n.name for n in self.nodes)})")

    def save(self) -> None:
        save_state(self.state)

    # --- running things -----------------------------------------------------

    def node_env(self, node: str | NodeRecord) -> dict[str, str]:
        n = node if isinstance(node, NodeRecord) else self.node(node)
        # pycalico's own commands (calicoctl, calico-node) first on PATH, from the
        # environment the lab runs in, so a venv need not be activated.
        tools = os.path.dirname(sys.executable)
        return {
            "CALICO_CONFIG": n.config_path,
            "CALICO_NODENAME": n.name,
            "ETCD_ENDPOINTS": ",".join(self.etcd_endpoints),
            "PATH": f"{tools}:{os.environ.get('PATH', os.defpath)}",
        }

    def exec(self, node: str | NodeRecord, argv: Sequence[str],
             env: Mapping[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
        """subprocess.run(argv) inside the node's namespace with the node's env; on a
        bare node inside all its namespaces, with a login's environment."""
        n = node if isinstance(node, NodeRecord) else self.node(node)
        base = machine.ENV if n.root else {**os.environ, **self.node_env(n)}
        return subprocess.run(self.node_argv(n, argv), env={**base, **(env or {})}, **kw)

    def node_argv(self, node: str | NodeRecord, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside the node: its network namespace, and for a
        bare node its mount and UTS namespaces too."""
        n = node if isinstance(node, NodeRecord) else self.node(node)
        if not n.root:
            return netns.exec_argv(n.netns, argv)
        pid = self.holder_pid(n)
        if pid is None:
            raise LabError(f"bare node {n.name} of lab {self.name!r} is gone (its holder process "
                           f"no longer runs); recreate the lab")
        return machine.enter_argv(pid, argv)

    def holder_pid(self, node: NodeRecord) -> int | None:
        """The pid of the process holding a bare node's namespaces, if it runs."""
        return next((p.pid for p in self.processes if p.name == f"root-{node.name}" and p.alive()), None)

    def spawn(self, netns_name: str, argv: Sequence[str], log_path: Path | str,
              name: str | None = None, env: Mapping[str, str] | None = None) -> int:
        """Start a long-running process in one of the lab's namespaces.

        The pid is recorded in state.json at once so `down` ends it, even
        after this Python process is gone.
        """
        if netns_name not in self.state.namespaces:
            raise LabError(f"{netns_name} is not a namespace of lab {self.name!r}")
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            # Own session: the process outlives the CLI and a Ctrl-C in the
            # terminal that ran `up` does not reach it.
            proc = subprocess.Popen(
                netns.exec_argv(netns_name, argv), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=dict(env) if env is not None else None)
        _children[proc.pid] = proc
        ident = proc_identity(proc.pid)
        self.state.processes.append(ProcessRecord(
            name=name or Path(argv[0]).name, pid=proc.pid,
            start_time=ident[0] if ident else -1,
            boot_id=ident[1] if ident else boot_id(),
            netns=netns_name, argv=list(argv), log_path=str(log_path)))
        self.save()
        return proc.pid

    def stop(self, pid: int, timeout: float = 5.0) -> bool:
        """End one recorded process; True if it was running."""
        for rec in self.state.processes:
            if rec.pid == pid:
                ended = terminate(rec, timeout)
                _forget_child(pid)
                self.state.processes.remove(rec)
                self.save()
                return ended
        raise LabError(f"pid {pid} is not a process of lab {self.name!r}")

    # --- the agents -----------------------------------------------------------

    def agent_pid(self, node: str | NodeRecord) -> int | None:
        """The pid of the node's running calico-node, if any."""
        n = node if isinstance(node, NodeRecord) else self.node(node)
        return next((p.pid for p in self.processes if p.name == f"calico-node-{n.name}" and p.alive()), None)

    def start_agent(self, node: str | NodeRecord) -> int:
        """Start calico-node in the node's namespace with the node's calico.toml."""
        n = node if isinstance(node, NodeRecord) else self.node(node)
        if self.agent_pid(n) is not None:
            raise LabError(f"calico-node already runs on {n.name}")
        log = self.state_dir / "logs" / f"calico-node-{n.name}.log"
        env = {**os.environ, **self.node_env(n)}
        return self.spawn(n.netns, [sys.executable, "-m", "pycalico.core.node", "--config", n.config_path],
                          log, name=f"calico-node-{n.name}", env=env)

    def wait_registered(self, nodes: Sequence[NodeRecord], timeout: float) -> None:
        """Wait until each of ``nodes`` has written its Node (its agent's first pass)."""
        from .pods import with_datastore

        deadline = time.monotonic() + timeout
        while True:
            names = with_datastore(self, self.nodes[0], lambda ds: {r.metadata.name for r in ds.list("Node").items})
            missing = [n for n in nodes if n.name not in names]
            if not missing:
                return
            dead = [n.name for n in missing if self.agent_pid(n) is None]
            if dead or time.monotonic() > deadline:
                why = "exited" if dead else f"did not register within {timeout:.0f} s"
                names = dead or [n.name for n in missing]
                # up() removes the state directory on failure: say what the log said.
                log = self.state_dir / "logs" / f"calico-node-{names[0]}.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
                raise LabError(f"calico-node on {', '.join(names)} {why}; its log ends: " + " | ".join(tail))
            time.sleep(0.2)

    def _start_agents(self, timeout: float) -> None:
        from .pods import ensure_default_pool

        ensure_default_pool(self, modes=POOL_MODES.get(self.state.routing, {}))
        for n in self.nodes:
            self.start_agent(n)
        self.wait_registered(self.nodes, timeout)

    # --- Typha ----------------------------------------------------------------

    def typha(self, name: str) -> TyphaRecord:
        for t in self.state.typhas:
            if t.name == name:
                return t
        raise LabError(f"lab {self.name!r} has no Typha {name!r} "
                       f"(Typhas: {', '.join(t.name for t in self.state.typhas) or 'none'})")

    def typha_pid(self, name: str) -> int | None:
        """The pid of the running Typha replica ``name``, if any."""
        return next((p.pid for p in self.processes if p.name == name and p.alive()), None)

    def start_typha(self, name: str, timeout: float = 20.0) -> int:
        """Start the Typha replica ``name`` in the cp namespace and wait until it is
        ready (in sync with etcd and listening); its pid."""
        t = self.typha(name)
        if self.typha_pid(name) is not None:
            raise LabError(f"{name} already runs in lab {self.name!r}")
        log_path = self.state_dir / "logs" / f"{name}.log"
        pid = self.spawn(self.cp_netns, replicas.argv(t), log_path, name=name)
        rec = next(p for p in self.processes if p.pid == pid)
        wait_ready(name, lambda: replicas.readiness(self.cp_netns, t), log_path, rec.alive, timeout)
        return pid

    # --- status -------------------------------------------------------------

    def etcd_pid(self) -> int | None:
        """The pid of the lab's running etcd, if any."""
        return next((p.pid for p in self.processes if p.name == "etcd" and p.alive()), None)

    def start_etcd(self, timeout: float = 20.0) -> int:
        """Start etcd again on its data directory (after ``stop`` or a kill, which keep
        it), and wait until it is healthy; its pid."""
        if self.etcd_pid() is not None:
            raise LabError(f"etcd already runs in lab {self.name!r}")
        self._start_etcd(timeout)
        return self.etcd_pid()

    def etcd_healthy(self) -> bool:
        return netns.exists(self.cp_netns) and etcd.healthy(
            self.cp_netns, self.etcd_endpoints[0])

    def status(self) -> dict:
        return {
            "name": self.name,
            "state_dir": str(self.state_dir),
            "complete": self.state.complete,
            "subnets": self.state.subnets,
            "underlay_netns": self.underlay_netns,
            "cp_netns": self.cp_netns,
            "etcd": {"endpoints": self.etcd_endpoints, "healthy": self.etcd_healthy()},
            "nodes": [{
                "name": n.name, "netns": n.netns, "ip": n.ip, "cidr": n.cidr,
                "gateway": n.gateway, "config_path": n.config_path, "root": n.root or None,
                "netns_exists": netns.exists(n.netns),
            } for n in self.nodes],
            "typha": [self._typha_status(t) for t in self.state.typhas],
            "processes": [{
                "name": p.name, "pid": p.pid, "alive": p.alive(), "netns": p.netns,
                "log_path": p.log_path,
            } for p in self.processes],
        }

    def _typha_status(self, t: TyphaRecord) -> dict:
        pid = self.typha_pid(t.name)
        active = None if pid is None else replicas.metric(self.cp_netns, t, "typha_connections_active")
        return {
            "name": t.name, "address": t.address, "health_port": t.health_port,
            "metrics_port": t.metrics_port, "config_path": t.config_path, "pid": pid,
            # Why it is not ready (null: ready), and how many agents it serves.
            "not_ready": "not running" if pid is None else replicas.readiness(self.cp_netns, t),
            "connections": None if active is None else int(active),
        }

    # --- teardown -----------------------------------------------------------

    def down(self, timeout: float = 5.0) -> dict:
        """Kill recorded processes, delete recorded namespaces, remove state.

        Works on partially built labs: only what state.json records is
        touched. If something cannot be removed the state file is kept (with
        what is left) and LabError is raised, so `down` can be retried.
        """
        killed: list[int] = []
        errors: list[str] = []
        for rec in reversed(list(self.state.processes)):
            try:
                if terminate(rec, timeout):
                    killed.append(rec.pid)
                _forget_child(rec.pid)
                self.state.processes.remove(rec)
            except LabError as e:
                errors.append(str(e))
        # Anything else still inside our namespaces (e.g. left behind by
        # `exec ... &`) would keep a namespace alive after its name is gone.
        for ns in self.state.namespaces:
            try:
                killed += _end_stray(ns, timeout)
            except LabError as e:
                errors.append(str(e))
        deleted: list[str] = []
        for ns in reversed(list(self.state.namespaces)):
            try:
                if netns.delete(ns):
                    deleted.append(ns)
                self.state.namespaces.remove(ns)
            except LabError as e:
                errors.append(str(e))
        if errors:
            self.save()
            raise LabError(f"lab {self.name!r} only partly removed: {'; '.join(errors)}")
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return {"killed": killed, "deleted_netns": deleted}

    # --- building -----------------------------------------------------------

    def _all_netns(self) -> list[str]:
        return [self.underlay_netns, self.cp_netns] + [n.netns for n in self.nodes]

    def create_netns(self, ns: str) -> None:
        """Create a network namespace recorded in the lab's state, so `down` removes it."""
        # Intent first, so a crash right after `ip netns add` still leaves a
        # record for `down`.
        self.state.namespaces.append(ns)
        self.save()
        try:
            netns.add(ns)
        except LabError:
            # Whatever exists under that name now is not ours to delete.
            self.state.namespaces.remove(ns)
            self.save()
            raise

    def _attach(self, ns: str, port: str, cidr: str, gateway: str | None) -> None:
        """Plug `ns` into the underlay bridge as eth0 with `cidr`."""
        u = self.underlay_netns
        netns.add_veth(u, port, ns, "eth0")
        netns.set_master(u, port, BRIDGE)
        netns.link_up(u, port)
        netns.link_up(ns, "lo")
        netns.add_addr(ns, "eth0", cidr)
        netns.link_up(ns, "eth0")
        if gateway:
            netns.add_default_route(ns, gateway)

    def _build(self, etcd_timeout: float) -> None:
        u = self.underlay_netns
        self.create_netns(u)
        netns.link_up(u, "lo")
        netns.add_bridge(u, BRIDGE)
        netns.link_up(u, BRIDGE)
        for subnet in SUBNETS[: self.state.subnets]:
            netns.add_addr(u, BRIDGE, f"{subnet}.{ROUTER_HOST}/{PREFIXLEN}")
        netns.sysctl(u, "net.ipv4.ip_forward", 1)
        # Both subnets share one L2 segment; redirects would teach nodes to
        # bypass the router, hiding the cross-subnet hop the lab is there to model.
        netns.sysctl(u, "net.ipv4.conf.all.send_redirects", 0)
        netns.sysctl(u, f"net.ipv4.conf.{BRIDGE}.send_redirects", 0)

        cp = self.cp_netns
        self.create_netns(cp)
        self._attach(cp, "v-cp", f"{self.state.cp_ip}/{PREFIXLEN}",
                     f"{SUBNETS[0]}.{ROUTER_HOST}")

        for n in self.nodes:
            self.create_netns(n.netns)
            self._attach(n.netns, f"v-{n.name}", n.cidr, n.gateway)
            netns.sysctl(n.netns, "net.ipv4.ip_forward", 1)
            netns.sysctl(n.netns, "net.ipv4.conf.all.accept_redirects", 0)
            if n.root:
                self._start_holder(n)
            path = Path(n.config_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(node_config_text(n.name, self.etcd_endpoints, self.state.routing,
                                             self.state.policy, path.parent,
                                             [t.address for t in self.state.typhas]))

        self._start_etcd(etcd_timeout)
        for t in self.state.typhas:
            path = Path(t.config_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(typha_config_text(self.etcd_endpoints, t))
            self.start_typha(t.name)
        self.state.complete = True
        self.save()

    def _start_holder(self, n: NodeRecord, timeout: float = 10.0) -> None:
        log_path = self.state_dir / "logs" / f"root-{n.name}.log"
        pid = self.spawn(n.netns, machine.holder_argv(n.root, n.name), log_path, name=f"root-{n.name}")
        rec = next(p for p in self.processes if p.pid == pid)
        wait_ready(f"bare node {n.name}", lambda: None if machine.settled(pid) else "mounts not in place",
                   log_path, rec.alive, timeout)

    def _start_etcd(self, timeout: float) -> None:
        data_dir = self.state_dir / "etcd" / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.state_dir / "logs" / "etcd.log"
        # etcd reads ETCD_* variables as flags; the caller's must not leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        pid = self.spawn(self.cp_netns,
                         etcd.argv(f"{self.name}-cp", self.state.cp_ip, data_dir),
                         log_path, name="etcd", env=env)
        rec = next(p for p in self.processes if p.pid == pid)
        endpoint = self.etcd_endpoints[0]
        wait_ready("etcd", lambda: None if etcd.healthy(self.cp_netns, endpoint) else f"{endpoint}/health not healthy",
                   log_path, rec.alive, timeout)


def remove_stale_dir(directory: Path) -> None:
    """Remove a lab directory left by an `up` that died before its first
    state write: empty, or holding only the half-written state file."""
    if not directory.is_dir() or state_path(directory).exists():
        return
    if {p.name for p in directory.iterdir()} <= {STATE_TMP}:
        (directory / STATE_TMP).unlink(missing_ok=True)
        directory.rmdir()


def _forget_child(pid: int) -> None:
    proc = _children.pop(pid, None)
    if proc is not None:
        proc.poll()  # already reaped by terminate(): this just settles returncode


def _end_stray(ns: str, timeout: float) -> list[int]:
    """End processes found inside one of our namespaces, by pid.

    Never ourselves or our ancestors (e.g. `down` run via `calico-lab exec`).
    """
    if not netns.exists(ns):
        return []
    res = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    protected = _self_and_ancestors()
    recs = []
    for tok in res.stdout.split():
        pid = int(tok)
        ident = proc_identity(pid)
        if pid in protected or ident is None:
            continue
        recs.append(ProcessRecord(name="stray", pid=pid, start_time=ident[0],
                                  boot_id=ident[1], netns=ns, argv=[], log_path=""))
    # Not their process groups: a stray's group may extend outside the lab
    # (e.g. the shell job that ran `calico-lab exec ... &`). Not reaped either:
    # a stray's parent may want its exit status.
    return [rec.pid for rec in recs if terminate(rec, timeout, group=False, reap=False)]


def _self_and_ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids
