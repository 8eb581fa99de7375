"""calico-typha against real etcd: the real executable in its own process, agents
(``TyphaClient``, as calico-node's sync uses it) in this one.

Covered: snapshot then stream, failover to a second Typha, a datastore outage ridden
out without agent resyncs, the Kubernetes datastore (API stand-in), TLS with Calico's
peer-name checks, handshake and pong timeouts and the connection limit, a slow agent
cut off without holding back the others, 500 agents on one datastore watch, and
calico-node's reconcile loop reading through Typha.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import attrs
import pytest
import requests

from doubles import LoopThread, Recorder
from etcd_fixtures import _die_with_parent, free_ports, gns, relabel, wep
from pycalico.core import config as cfg
from pycalico.core.calc import key_of
from pycalico.core.datastore import DatastoreUnavailable
from pycalico.core.loop import Loop
from pycalico.core.plugins import Registry
from pycalico.core.typha import proto
from pycalico.core.typha.client import TyphaClient
from waiting import wait_for

TYPHA = Path(sys.executable).parent / "calico-typha"
HOST = "127.0.0.1"


class TyphaProcess:
    """One ``calico-typha`` on free loopback ports (sync, health, metrics)."""

    def __init__(self, directory: Path, datastore: str, **server: object):
        self.port, self.health_port, self.metrics_port = free_ports(3)
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "calico.toml"
        self.log = directory / "typha.log"
        options = "".join(f"{key} = {_toml(value)}\n" for key, value in server.items())
        self.config.write_text(
            f'{datastore}[typha.server]\nhost = "{HOST}"\nport = {self.port}\n{options}'
            f'[typha.server.health]\nhost = "{HOST}"\nport = {self.health_port}\n'
            f'[typha.server.metrics]\nenabled = true\nhost = "{HOST}"\nport = {self.metrics_port}\n'
        )
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> TyphaProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(TYPHA), "--config", str(self.config)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        wait_for(lambda: self.probe("readiness")[0] == 200 or self.proc.poll() is not None, 20,
                 "calico-typha ready")
        assert self.proc.poll() is None, f"calico-typha exited:\n{self.log.read_text()[-3000:]}"
        return self

    def probe(self, what: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.health_port}/{what}", timeout=2) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def metric(self, name: str) -> float:
        text = requests.get(f"http://{HOST}:{self.metrics_port}/metrics", timeout=5).text
        values = [line.split()[-1] for line in text.splitlines() if line.split(" ")[0] == name]
        assert values, f"no metric {name}"
        return float(values[0])

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode if self.proc else None


def _toml(value: object) -> str:
    return f'"{value}"' if isinstance(value, (str, Path)) else str(value).lower() if isinstance(value, bool) \
        else str(value)


@pytest.fixture
def start_typha(tmp_path):
    """``start_typha(datastore_toml, **server_options)`` -> a started calico-typha; all
    stopped (by pid) when the test ends."""
    assert TYPHA.exists(), f"{TYPHA} is not installed: make venv (pip install -e .) installs it"
    started: list[TyphaProcess] = []

    def start(datastore: str, **server: object) -> TyphaProcess:
        typha = TyphaProcess(tmp_path / f"typha{len(started)}", datastore, **server)
        started.append(typha)
        return typha.start()

    try:
        yield start
    finally:
        for typha in started:
            typha.stop(signal.SIGKILL)


@pytest.fixture
def typhas(start_typha, etcd_server):
    """``typhas(**server_options)`` -> a started calico-typha on the test's etcd."""

    def start(etcd_timeout: float = 5, **server: object) -> TyphaProcess:
        datastore = (f'[datastore]\ntype = "etcd"\n[datastore.etcd]\nendpoints = ["{etcd_server.endpoint}"]\n'
                     f"timeout_seconds = {etcd_timeout}\n")
        return start_typha(datastore, **server)

    return start


class Agent:
    """What calico-node's sync thread does with a Typha client: snapshot, then follow;
    on failure, a new snapshot. ``state``: (kind, namespace, name) -> resourceVersion."""

    def __init__(self, settings: cfg.Typha, name: str = "node1"):
        self.client = TyphaClient(settings, name)
        self.state: dict = {}
        self.snapshots = 0
        self.error: str | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"agent-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                snapshot = self.client.snapshot()
                self.state = {key_of(r): r.metadata.resource_version for r in snapshot.resources}
                self.snapshots += 1
                for event in self.client.watch(snapshot.revision, self.stop):
                    if event.type == "deleted":
                        self.state.pop(key_of(event.resource), None)
                    else:
                        self.state[key_of(event.resource)] = event.resource.metadata.resource_version
            except DatastoreUnavailable as exc:
                self.error = str(exc)
                self.stop.wait(0.2)

    def close(self) -> None:
        self.stop.set()
        self.client.close()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def agents():
    """``agents(settings, name)`` -> a following Agent, closed when the test ends."""
    made: list[Agent] = []

    def make(settings: cfg.Typha, name: str = "node1") -> Agent:
        made.append(Agent(settings, name))
        return made[-1]

    try:
        yield make
    finally:
        for agent in made:
            agent.close()


def datastore_state(store) -> dict:
    return {key_of(r): r.metadata.resource_version for r in store.snapshot().resources}


def etcd_watchers(etcd_server) -> int:
    text = requests.get(f"{etcd_server.endpoint}/metrics", timeout=5).text
    return int(float(next(line.split()[1] for line in text.splitlines()
                          if line.startswith("etcd_debugging_mvcc_watcher_total "))))


def churn(store, prefix: str, count: int) -> None:
    """Creates, updates and deletes: what an agent must end up agreeing with."""
    for i in range(count):
        store.create(gns(f"{prefix}{i}", n=str(i)))
    for i in range(0, count, 2):
        store.update(relabel(store.get("GlobalNetworkSet", f"{prefix}{i}"), changed="yes"))
    for i in range(0, count, 3):
        store.delete("GlobalNetworkSet", f"{prefix}{i}")


# --- snapshot and stream --------------------------------------------------------------


def test_agents_get_the_snapshot_then_every_change(etcd_datastore, typhas, agents, etcd_server):
    for i in range(5):
        etcd_datastore.create(gns(f"pre{i}"))
    etcd_datastore.create(wep("pod1", "ns1", app="web"))
    typha = typhas()
    assert typha.probe("liveness") == (200, "live\n") and typha.probe("readiness") == (200, "ready\n")

    client = TyphaClient(cfg.Typha(addresses=(typha.address,)), "node1")
    try:
        snapshot = client.snapshot()
        stored = etcd_datastore.snapshot()
        assert snapshot.revision == stored.revision
        assert sorted(snapshot.resources, key=key_of) == sorted(stored.resources, key=key_of)  # typed, whole
        stop = threading.Event()
        events = []
        follower = threading.Thread(target=lambda: events.extend(client.watch(snapshot.revision, stop)))
        follower.start()
        created = etcd_datastore.create(gns("new", a="1"))
        updated = etcd_datastore.update(relabel(created, a="2"))
        deleted = etcd_datastore.delete("GlobalNetworkSet", "pre0")
        wait_for(lambda: len(events) >= 3, 10, "three events")
        stop.set()
        follower.join(5)
        assert [(e.type, e.resource.metadata.name, e.revision) for e in events] == [
            ("added", "new", int(created.metadata.resource_version)),
            ("modified", "new", int(updated.metadata.resource_version)),
            ("deleted", "pre0", int(updated.metadata.resource_version) + 1),
        ]
        assert events[1].resource == updated and events[2].resource == deleted
    finally:
        client.close()
    assert typha.metric("typha_connections_accepted") == 1
    wait_for(lambda: typha.metric("typha_connections_active") == 0, 5, "the connection closed")

    agent = agents(cfg.Typha(addresses=(typha.address,)))
    churn(etcd_datastore, "c", 12)
    wait_for(lambda: agent.state == datastore_state(etcd_datastore), 10, "the agent converged")
    assert agent.snapshots == 1 and etcd_watchers(etcd_server) == 1


def test_an_agent_moves_to_the_next_typha_and_misses_nothing(etcd_datastore, typhas, agents):
    first, second = typhas(), typhas()
    agent = agents(cfg.Typha(addresses=(first.address, second.address)))
    wait_for(lambda: agent.snapshots == 1, 10, "the first sync")
    used = first if agent.client.address == first.address else second
    other = second if used is first else first
    churn(etcd_datastore, "a", 6)
    wait_for(lambda: agent.state == datastore_state(etcd_datastore), 10, "converged before the kill")

    used.stop(signal.SIGKILL)
    churn(etcd_datastore, "b", 9)  # written while the agent is between Typhas
    wait_for(lambda: agent.snapshots == 2, 15, "a resync from the other Typha")
    assert agent.client.address == other.address
    wait_for(lambda: agent.state == datastore_state(etcd_datastore), 10, "converged after the failover")
    assert "Typha closed the connection" in (agent.error or "")


def test_typha_rides_out_a_datastore_outage_without_agent_resyncs(etcd_server, etcd_datastore, typhas, agents):
    typha = typhas(etcd_timeout=1)
    agent = agents(cfg.Typha(addresses=(typha.address,)))
    churn(etcd_datastore, "a", 6)
    wait_for(lambda: agent.state == datastore_state(etcd_datastore), 10, "converged")
    held = dict(agent.state)

    etcd_server.stop()
    wait_for(lambda: typha.probe("readiness")[0] == 503, 15, "Typha not ready without its datastore")
    status, why = typha.probe("readiness")
    assert "datastore unavailable" in why and "not in sync with the datastore (ResyncInProgress)" in why
    assert typha.probe("liveness")[0] == 200 and agent.state == held  # agents keep what they have

    etcd_server.start()
    wait_for(lambda: typha.probe("readiness")[0] == 200, 20, "Typha ready again")
    churn(etcd_datastore, "b", 6)
    wait_for(lambda: agent.state == datastore_state(etcd_datastore), 10, "converged after the outage")
    assert agent.snapshots == 1 and typha.metric("typha_connections_accepted") == 1


def test_typha_serves_the_kubernetes_datastore(start_typha, kdd_datastore, kdd_kubeconfig, agents):
    from kdd_fixtures import kdd_config_text

    churn(kdd_datastore, "a", 6)
    typha = start_typha(kdd_config_text(kdd_kubeconfig) + "timeout_seconds = 5\n")
    agent = agents(cfg.Typha(addresses=(typha.address,)))
    wait_for(lambda: agent.snapshots == 1, 10, "the first sync")
    assert agent.state == datastore_state(kdd_datastore)
    churn(kdd_datastore, "b", 6)
    wait_for(lambda: agent.state == datastore_state(kdd_datastore), 10, "converged")
    client = TyphaClient(cfg.Typha(addresses=(typha.address,)), "node2")
    try:
        assert isinstance(client.snapshot().revision, str)  # KDD's revision, in its text form
    finally:
        client.close()


# --- TLS ----------------------------------------------------------------------------


class Pki:
    """Certificates made with openssl for the test: one CA per name, peers signed by it."""

    def __init__(self, directory: Path):
        self.openssl = shutil.which("openssl")
        assert self.openssl, "the TLS tests need the openssl command: make deps installs it (Debian package openssl)"
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _run(self, *args: str) -> None:
        subprocess.run([self.openssl, *args], cwd=self.dir, check=True, capture_output=True, timeout=60)

    def ca(self, name: str) -> Path:
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days",
                  "2", "-subj", f"/CN={name}", "-keyout", f"{name}-key.pem", "-out", f"{name}.pem")
        return self.dir / f"{name}.pem"

    def peer(self, name: str, ca: str, cn: str, uri: str = "") -> tuple[str, str]:
        """(cert, key) for ``cn`` (and a URI SAN), signed by ``ca``."""
        sans = f"subjectAltName=URI:{uri}\n" if uri else ""
        (self.dir / f"{name}.ext").write_text(f"{sans}extendedKeyUsage=serverAuth,clientAuth\n")
        self._run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj",
                  f"/CN={cn}", "-keyout", f"{name}-key.pem", "-out", f"{name}.csr")
        self._run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}-key.pem",
                  "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
        return str(self.dir / f"{name}.pem"), str(self.dir / f"{name}-key.pem")


def test_tls_with_calicos_peer_name_checks(tmp_path, etcd_datastore, typhas):
    pki = Pki(tmp_path / "pki")
    ca = str(pki.ca("ca"))
    pki.ca("rogue-ca")
    server_cert, server_key = pki.peer("typha", "ca", "calico-typha")
    node_uri = "spiffe://cluster.local/ns/calico-system/sa/calico-node"
    etcd_datastore.create(gns("a"))
    typha = typhas(cert_file=server_cert, key_file=server_key, ca_file=ca, client_cn="calico-node",
                   client_uri_san=node_uri)

    def sync(cert_key: tuple[str, str], cn: str = "calico-typha", uri: str = "") -> str:
        settings = cfg.Typha(addresses=(typha.address,), ca_file=ca, cert_file=cert_key[0], key_file=cert_key[1],
                             cn=cn, uri_san=uri)
        client = TyphaClient(settings, "node1")
        try:
            return ",".join(r.metadata.name for r in client.snapshot().resources)
        except DatastoreUnavailable as exc:
            return f"refused: {exc}"
        finally:
            client.close()

    assert sync(pki.peer("node", "ca", "calico-node")) == "a"
    assert sync(pki.peer("by-uri", "ca", "some-node", node_uri)) == "a"  # the URI SAN will do
    intruder = sync(pki.peer("intruder", "ca", "intruder"))
    assert intruder.startswith("refused") and "Typha closed the connection" in intruder
    assert sync(pki.peer("rogue", "rogue-ca", "calico-node")).startswith("refused")
    wrong_typha = sync(pki.peer("node2", "ca", "calico-node"), cn="other-typha")
    assert wrong_typha.startswith("refused") and "peer certificate does not have required CN" in wrong_typha

    plain = TyphaClient(cfg.Typha(addresses=(typha.address,)), "node1")
    with pytest.raises(DatastoreUnavailable):
        plain.snapshot()
    plain.close()
    assert "refused: peer certificate does not have required CN or URI SAN" in typha.log.read_text()
    # Typha counts a connection gone once its handler has finished, a moment after the
    # client closed it.
    wait_for(lambda: typha.metric("typha_connections_active") == 0, 10, "no connections left on Typha")


# --- slow agents ------------------------------------------------------------------------


def test_a_slow_agent_is_cut_off_without_holding_back_the_others(etcd_datastore, typhas, agents):
    typha = typhas(ping_interval_seconds=0.2, pong_timeout_seconds=120, max_fall_behind_seconds=1.0,
                   new_client_fall_behind_grace_seconds=0.5)
    fast = agents(cfg.Typha(addresses=(typha.address,)), "fast")
    slow = socket.create_connection((HOST, typha.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(proto.encode(proto.ClientHello("slow")))  # then never reads again
    wait_for(lambda: typha.metric("typha_connections_active") == 2 and fast.snapshots == 1, 10, "both connected")

    big = attrs.evolve(gns("big"), metadata=attrs.evolve(gns("big").metadata, annotations={"pad": "x" * 16000}))
    current = etcd_datastore.create(big)
    lags = []
    for i in range(1000):  # about 16 MB in all, far more than the socket buffers hold
        current = etcd_datastore.update(relabel(current, n=str(i)))
        if i % 25 == 0:
            began = time.monotonic()
            wait_for(lambda: fast.state.get(key_of(current)) == current.metadata.resource_version, 5,
                     "the fast agent has the write", interval=0.005)
            lags.append(time.monotonic() - began)
        if typha.metric("typha_connections_active") == 1:
            break
    else:
        pytest.fail("the slow agent was never disconnected")
    assert max(lags) < 1.0, f"the fast agent was held back: {lags}"
    assert "client fell behind by" in typha.log.read_text()
    slow.settimeout(5)
    with pytest.raises(ConnectionResetError):  # cut off with a reset: nothing left queued for it
        while slow.recv(1 << 20):
            pass
    slow.close()
    assert fast.snapshots == 1


def read_until_closed(sock: socket.socket) -> tuple[list, str]:
    """Every message until the server closes; and how it closed."""
    decoder, messages = proto.Decoder(), []
    sock.settimeout(10)
    try:
        while data := sock.recv(65536):
            messages += decoder.feed(data)
    except ConnectionResetError:
        return messages, "reset"
    return messages, "closed"


def test_handshake_timeout_pong_timeout_and_the_connection_limit(etcd_datastore, typhas, agents):
    etcd_datastore.create(gns("a"))
    typha = typhas(handshake_timeout_seconds=0.5, ping_interval_seconds=0.2, pong_timeout_seconds=1.0)
    silent = socket.create_connection((HOST, typha.port))
    began = time.monotonic()
    assert read_until_closed(silent) == ([], "closed")
    assert 0.4 < time.monotonic() - began < 5
    silent.close()

    # Reads everything, never answers a ping.
    deaf = socket.create_connection((HOST, typha.port))
    deaf.sendall(proto.encode(proto.ClientHello("deaf", syncer_type="bgp")))
    assert read_until_closed(deaf) == ([], "closed")  # a syncer Typha does not serve
    deaf.close()
    deaf = socket.create_connection((HOST, typha.port))
    deaf.sendall(proto.encode(proto.ClientHello("deaf")))
    good = agents(cfg.Typha(addresses=(typha.address,)), "good")  # answers pings
    began = time.monotonic()
    messages, how = read_until_closed(deaf)
    deaf.close()
    assert how == "reset" and 1.0 < time.monotonic() - began < 5
    kinds = [type(m).__name__ for m in messages]
    assert kinds[:3] == ["ServerHello", "KVs", "SyncStatus"] and kinds.count("Ping") >= 4
    time.sleep(1.5)  # past the pong timeout: the agent that answers stays
    assert typha.metric("typha_connections_active") == 1 and good.snapshots == 1
    assert "no pong for" in typha.log.read_text()

    crowded = typhas(max_connections=2, drop_interval_seconds=0.2)
    fleet = [agents(cfg.Typha(addresses=(crowded.address,)), f"n{i}") for i in range(3)]
    wait_for(lambda: crowded.metric("typha_connections_dropped") >= 1, 10, "one dropped at random")
    churn(etcd_datastore, "c", 6)
    expected = datastore_state(etcd_datastore)
    wait_for(lambda: all(a.state == expected for a in fleet), 10, "dropped agents resync and converge")
    assert sum(a.snapshots for a in fleet) > 3


# --- scale ----------------------------------------------------------------------------


def test_500_agents_on_one_typha_hold_one_datastore_watch(etcd_server, etcd_datastore, typhas):
    for i in range(40):
        etcd_datastore.create(gns(f"pre{i}"))
        etcd_datastore.create(wep(f"pod{i}", "ns1", app=str(i)))
    typha = typhas()
    settings = cfg.Typha(addresses=(typha.address,))
    fleet = [Agent(settings, f"node{i}") for i in range(500)]
    try:
        wait_for(lambda: all(a.snapshots for a in fleet), 30, "500 agents in sync")
        assert typha.metric("typha_connections_active") == 500
        assert etcd_watchers(etcd_server) == 1, "etcd must see Typha's watch only"

        writers = [threading.Thread(target=churn, args=(etcd_datastore, f"w{t}-", 30)) for t in range(4)]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        expected = datastore_state(etcd_datastore)
        wait_for(lambda: all(a.state == expected for a in fleet), 30, "every agent has the datastore's state")
        assert all(a.snapshots == 1 for a in fleet) and etcd_watchers(etcd_server) == 1
    finally:
        for agent in fleet:
            agent.stop.set()
            agent.client.close()
        for agent in fleet:
            agent.thread.join(10)


# --- calico-node ----------------------------------------------------------------------


def test_calico_node_reads_through_typha_and_writes_to_the_datastore(tmp_path, etcd_server, etcd_datastore, typhas):
    etcd_datastore.create(wep("a", "default"))
    typha = typhas()
    config = tmp_path / "calico.toml"
    config.write_text(
        f'node_name = "node1"\n[datastore]\ntype = "etcd"\n[datastore.etcd]\nendpoints = ["{etcd_server.endpoint}"]\n'
        '[ipam]\ntype = "none"\n[routing]\ntype = "rec"\n[policy]\ntype = "rec"\n'
        '[node]\nip = "198.51.100.11/24"\n[intervals]\ncoalesce_seconds = 0.1\nresync_seconds = 600\n'
        f'[health]\nenabled = false\n[typha]\naddresses = ["{typha.address}"]\n'
    )
    routing, policy = Recorder("routing"), Recorder("policy")
    loop = Loop(config, Registry({"routing": {"rec": routing}, "policy": {"rec": policy}}), watch_config=False)
    with LoopThread(loop, join_timeout=15):
        wait_for(lambda: loop.passes >= 1, 15, "the first pass")
        assert loop.last_report.reason == "sync" and policy.kernel == {"a"}
        # Registration wrote this Node to etcd directly; it comes back through Typha.
        assert str(etcd_datastore.get("Node", "node1").spec.bgp.ipv4_address) == "198.51.100.11/24"
        wait_for(lambda: any(n.metadata.name == "node1" for n in loop.cache.by_kind().get("Node", ())), 10,
                 "the Node back through Typha")
        etcd_datastore.create(wep("b", "default"))
        wait_for(lambda: policy.kernel == {"a", "b"}, 10, "the new endpoint reconciled")
        assert typha.metric("typha_connections_active") == 1 and etcd_watchers(etcd_server) == 1
