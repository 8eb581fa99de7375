"""pytest fixtures that run real etcd servers on loopback: one member, or three.

Loaded as a plugin (``pytest_plugins = ["etcd_fixtures"]`` or ``-p etcd_fixtures``).
Every etcd is started by this module, tracked by its pid and killed by that pid when
its fixture ends, also when the test failed; anything still running when the test
session ends is killed then, and each etcd also gets SIGKILL from the kernel if the
test process itself dies (``PR_SET_PDEATHSIG``). Data directories live in the test's
tmp_path.

Fixtures:

* ``etcd_server``: a single member on free ports (``.endpoints``, ``.stop()``,
  ``.start()`` on the same data dir, ``.kill()``, ``.compact(rev)``, ``.etcdctl(...)``).
* ``etcd_cluster``: three members (``.members``, ``.endpoints``, ``.leader()``).
* ``etcd_datastore``: the etcd plugin's Datastore, connected to a fresh ``etcd_server``.
* ``etcd_tls``: CA, server and client certificates made with openssl.
* ``etcd_connect``: a factory of connected Datastores (``etcd_connect(endpoints, **options)``),
  every one closed when the test ends.

Helpers for the tests: ``WatchRecorder`` (a watch consumed by a thread) and
resources to write: ``gns``, ``wep``, ``handle``, ``relabel``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import requests

from pycalico.core.resources import IPAMHandle, load_resources
from pycalico.core.resources.ipam import IPAMHandleSpec
from pycalico.core.resources.meta import ObjectMeta
from waiting import wait_for

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
HOST = "127.0.0.1"

_running: dict[int, subprocess.Popen] = {}  # pid -> process, every etcd this module started
_running_lock = threading.Lock()


def require_etcd() -> None:
    missing = [p for p in (ETCD, ETCDCTL) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"etcd tests need {' and '.join(missing)} (Debian packages etcd-server, etcd-client)")


def free_ports(count: int) -> list[int]:
    """Ports free on loopback right now (held open together so that they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class TLSFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (``root``)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.ca = directory / "ca.pem"
        self.server_cert, self.server_key = directory / "server.pem", directory / "server-key.pem"
        self.client_cert, self.client_key = directory / "client.pem", directory / "client-key.pem"

    @classmethod
    def make(cls, directory: Path) -> TLSFiles:
        openssl = shutil.which("openssl")
        assert openssl, "the TLS tests need the openssl command: make deps installs it (Debian package openssl)"
        directory.mkdir(parents=True, exist_ok=True)
        files = cls(directory)
        d = str(directory)

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pycalico-test-ca",
            "-keyout", "ca-key.pem", "-out", "ca.pem")
        (directory / "server.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
        )
        (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
        for who, cn in (("server", "127.0.0.1"), ("client", "root")):
            run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                "-keyout", f"{who}-key.pem", "-out", f"{who}.csr")
            run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                "-days", "2", "-extfile", f"{who}.ext", "-out", f"{who}.pem")
        return files


class EtcdMember:
    """One etcd process on loopback; restartable on its data dir."""

    def __init__(self, name: str, data_dir: Path, client_port: int, peer_port: int,
                 initial_cluster: str | None = None, tls: TLSFiles | None = None,
                 fast: bool = True, extra: tuple[str, ...] = ()):
        self.name = name
        self.data_dir = data_dir
        self.client_port, self.peer_port = client_port, peer_port
        self.tls = tls
        scheme = "https" if tls else "http"
        self.endpoint = f"{scheme}://{HOST}:{client_port}"
        self.peer_url = f"http://{HOST}:{peer_port}"
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.fast = fast
        self.extra = extra
        self.log_path = data_dir.parent / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def argv(self) -> list[str]:
        args = [
            ETCD,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"pycalico-{os.getpid()}",
            "--logger", "zap", "--log-outputs", "stderr",
        ]
        # Loopback: short raft timers make elections (and so startup) quick.
        args += ["--heartbeat-interval", "10", "--election-timeout", "100"] if self.fast else \
                ["--heartbeat-interval", "50", "--election-timeout", "500"]
        if self.tls:
            args += [
                "--cert-file", str(self.tls.server_cert), "--key-file", str(self.tls.server_key),
                "--trusted-ca-file", str(self.tls.ca), "--client-cert-auth",
            ]
        return args + list(self.extra)

    def start(self, wait: bool = True) -> None:
        """Start (or restart, on the same data dir); wait until it serves requests."""
        if self.running():
            return
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()
        with _running_lock:
            _running[proc.pid] = proc
        self.proc = proc
        if wait:
            self.wait_ready()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        if self.tls:
            s.verify = str(self.tls.ca)
            s.cert = (str(self.tls.client_cert), str(self.tls.client_key))
        return s

    def status(self, timeout: float = 1.0) -> dict:
        """``/v3/maintenance/status`` of this member (raises if it does not answer)."""
        with self._session() as s:
            r = s.post(f"{self.endpoint}/v3/maintenance/status", json={}, timeout=timeout)
            r.raise_for_status()
            return r.json()

    def wait_ready(self, timeout: float = 20.0, leader: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"etcd {self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                status = self.status(timeout=0.5)
                if not leader or int(status.get("leader", 0)):
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"etcd {self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the process by its pid (SIGTERM, then SIGKILL); the data dir stays."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        with _running_lock:
            _running.pop(proc.pid, None)

    def kill(self) -> None:
        """SIGKILL: the member dies without a word to its peers or clients."""
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class EtcdServer(EtcdMember):
    """A single-member etcd with helpers for tests."""

    def etcdctl(self, *args: str, check: bool = True, user: str | None = None, timeout: float = 20) -> str:
        cmd = [ETCDCTL, f"--endpoints={self.endpoint}", "--command-timeout=10s"]
        if self.tls:
            cmd += [f"--cacert={self.tls.ca}", f"--cert={self.tls.client_cert}", f"--key={self.tls.client_key}"]
        if user:
            cmd += [f"--user={user}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        env["ETCDCTL_API"] = "3"
        done = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout)
        if check and done.returncode:
            raise RuntimeError(f"etcdctl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def revision(self) -> int:
        return int(self.status()["header"]["revision"])

    def compact(self, revision: int | None = None) -> int:
        """Compact history before ``revision`` (default: the current revision)."""
        revision = revision or self.revision()
        self.etcdctl("compaction", "--physical", str(revision))
        return revision


class EtcdCluster:
    """Three members on loopback."""

    def __init__(self, directory: Path, size: int = 3):
        ports = free_ports(2 * size)
        names = [f"m{i}" for i in range(size)]
        initial = ",".join(f"{n}=http://{HOST}:{ports[2 * i + 1]}" for i, n in enumerate(names))
        self.members = [
            EtcdServer(n, directory / n, ports[2 * i], ports[2 * i + 1], initial_cluster=initial, fast=False)
            for i, n in enumerate(names)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self) -> None:
        for m in self.members:
            m.start(wait=False)
        for m in self.members:
            m.wait_ready()

    def leader(self, timeout: float = 10.0) -> EtcdServer:
        """The member that is leader now (as its own status says)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.members:
                if not m.running():
                    continue
                try:
                    status = m.status(timeout=0.5)
                except (requests.RequestException, ValueError):
                    continue
                if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                    return m
            time.sleep(0.05)
        raise RuntimeError("no etcd leader")

    def stop(self) -> None:
        for m in self.members:
            m.stop(signal.SIGKILL)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the test process dies (even by SIGKILL)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def kill_all() -> None:
    """Kill every etcd this module started that is still running (by pid)."""
    with _running_lock:
        procs = list(_running.values())
        _running.clear()
    for proc in procs:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


def pytest_sessionfinish(session, exitstatus) -> None:
    kill_all()


# --- fixtures -----------------------------------------------------------------------


def start_server(directory: Path, tls: TLSFiles | None = None, extra: tuple[str, ...] = ()) -> EtcdServer:
    require_etcd()
    client_port, peer_port = free_ports(2)
    server = EtcdServer("default", directory / "data", client_port, peer_port, tls=tls, extra=extra)
    try:
        server.start()
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    """A fresh single-member etcd on free loopback ports, killed when the test ends."""
    server = start_server(tmp_path / "etcd")
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


@pytest.fixture
def etcd_tls(tmp_path: Path) -> TLSFiles:
    return TLSFiles.make(tmp_path / "pki")


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """Three etcd members on loopback (``.leader()`` finds the leader to kill)."""
    require_etcd()
    cluster = EtcdCluster(tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def etcd_datastore(etcd_server: EtcdServer) -> Iterator[object]:
    """The etcd plugin's Datastore on a fresh etcd (closed when the test ends)."""
    from pycalico.plugins.datastore.etcd import Options, connect

    store = connect(Options(endpoints=tuple(etcd_server.endpoints), timeout_seconds=5))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def etcd_connect() -> Iterator[object]:
    """``connect(endpoints, **options)`` -> a connected etcd Datastore, closed afterwards."""
    from pycalico.plugins.datastore.etcd import Options, connect

    stores = []

    def make(endpoints, **options):
        store = connect(Options(endpoints=tuple(endpoints), **options))
        stores.append(store)
        return store

    try:
        yield make
    finally:
        for store in stores:
            store.close()


# --- helpers --------------------------------------------------------------------------


def wep(name: str, namespace: str, **labels: str):
    """A WorkloadEndpoint as the CNI plugin writes one (a few fields)."""
    (resource,) = load_resources(
        f"""
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{node: node1, orchestrator: k8s, pod: {name}, endpoint: eth0, interfaceName: cali{abs(hash(name)) % 10**11:011d},
        ipNetworks: [10.65.0.1/32]}}
"""
    )
    return relabel(resource, **labels)


def gns(name: str, **labels: str):
    """A GlobalNetworkSet: the smallest cluster-wide resource."""
    (resource,) = load_resources(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\n"
        f"metadata: {{name: {name}}}\nspec: {{nets: [198.51.100.0/28]}}\n"
    )
    return relabel(resource, **labels)


def relabel(resource, **labels: str):
    merged = {**(resource.metadata.labels or {}), **labels}
    return attrs.evolve(resource, metadata=attrs.evolve(resource.metadata, labels=merged or None))


def handle(name: str) -> IPAMHandle:
    """An IPAM handle holding one address of 10.65.0.0/26."""
    return IPAMHandle(metadata=ObjectMeta(name=name), spec=IPAMHandleSpec(handle_id=name, block={"10.65.0.0/26": 1}))


class WatchRecorder:
    """A datastore watch consumed by a thread: ``.events``, ``.error``, ``.close()``."""

    def __init__(self, store, revision, kinds=None):
        self.stop = threading.Event()
        self.events: list = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(store, revision, kinds), daemon=True)
        self.thread.start()

    def _run(self, store, revision, kinds) -> None:
        try:
            for event in store.watch(revision, self.stop, kinds=kinds):
                self.events.append(event)
        except BaseException as exc:  # recorded for the test to assert on
            self.error = exc

    def wait(self, count: int, timeout: float = 15.0) -> list:
        wait_for(lambda: len(self.events) >= count or self.error is not None, timeout,
                 f"{count} watch events (have {len(self.events)})")
        if self.error is not None and len(self.events) < count:
            raise AssertionError(f"watch failed after {len(self.events)} events: {self.error!r}")
        return self.events

    def summary(self) -> list[tuple[str, str, str]]:
        return [(e.type, e.resource.kind, e.resource.metadata.name) for e in self.events]

    def close(self, timeout: float = 5.0) -> float:
        """Stop the watch; returns how long it took to end."""
        began = time.monotonic()
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the watch did not end"
        return time.monotonic() - began
