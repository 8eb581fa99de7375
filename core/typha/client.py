"""The agent's side of Typha (Felix's ``typha/pkg/syncclient``): the reading half of
the Datastore protocol, served by a Typha connection instead of the datastore.

``snapshot()`` connects to the next Typha of ``[typha] addresses`` (the first one
tried is picked at random, as agents spread over replicas), does the handshake and
reads until Typha says InSync. ``watch()`` then turns the rest of that connection's
stream into events, answering pings. When the connection fails, ``watch`` raises
DatastoreUnavailable and the agent's sync takes a new snapshot, from the next Typha
if this one is gone: the snapshot is complete, so nothing written meanwhile is lost.
Writes (the Node's registration) still go to the datastore directly.
"""

from __future__ import annotations

import collections
import logging
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Collection, Iterator
from typing import Any

from pycalico.core import config as cfg
from pycalico.core.ctl.version import client_version
from pycalico.core.datastore import DatastoreUnavailable, Event, Snapshot
from pycalico.core.resources.codec import from_dict, kind_info
from pycalico.core.typha import proto, tls

log = logging.getLogger(__name__)

POLL = 0.5  # how often a waiting read looks at its stop event (seconds)


class Connection:
    """One connection to one Typha: framed messages in and out, a read timeout."""

    def __init__(self, address: str, settings: cfg.Typha, context: ssl.SSLContext | None):
        self.address = address
        self.read_timeout = settings.read_timeout_seconds
        host, port = cfg.split_address(address)
        sock = socket.create_connection((host, port), timeout=settings.write_timeout_seconds)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                sock = context.wrap_socket(sock)
                problem = tls.peer_problem(sock.getpeercert(), settings.cn, settings.uri_san)
                if problem:
                    raise ssl.SSLError(problem)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._decoder = proto.Decoder()
        self._inbox: collections.deque = collections.deque()
        self._poll = select.poll()  # not select(): hundreds of agents in one process pass fd 1024
        self._poll.register(sock, select.POLLIN)
        self._last_read = time.monotonic()

    def send(self, message: Any) -> None:
        self.sock.sendall(proto.encode(message))

    def receive(self, stop: threading.Event | None = None) -> Any:
        """The next message; None once ``stop`` is set. Raises OSError (TimeoutError
        after ``read_timeout`` without a byte) or ProtocolError."""
        while not self._inbox:
            if stop is not None and stop.is_set():
                return None
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
            if pending or self._poll.poll(POLL * 1000):
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("Typha closed the connection")
                self._last_read = time.monotonic()
                self._inbox.extend(self._decoder.feed(data))
            elif time.monotonic() - self._last_read > self.read_timeout:
                raise TimeoutError(f"nothing read for {self.read_timeout:g}s (read timeout)")
        return self._inbox.popleft()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in another thread
        except OSError:
            pass
        self.sock.close()


class TyphaClient:
    """Reads the datastore through Typha; ``hostname`` and ``info`` go in ClientHello."""

    def __init__(self, settings: cfg.Typha, hostname: str, info: str = "calico-node"):
        if not settings.addresses:
            raise ValueError("typha.addresses: no Typha to connect to")
        self.settings = settings
        self.hostname = hostname
        self.info = info
        self._context = tls.client_context(settings.cert_file, settings.key_file, settings.ca_file) \
            if settings.tls else None
        self._next = random.randrange(len(settings.addresses))
        self._conn: Connection | None = None
        self._state: dict[str, Any] = {}  # key -> resource, as this connection's stream has it
        self._revision: Any = None
        self._closed = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TyphaClient({', '.join(self.settings.addresses)})"

    @property
    def address(self) -> str | None:
        """The Typha in use."""
        conn = self._conn
        return conn.address if conn is not None else None

    # -- the Datastore reading protocol ------------------------------------------------

    def snapshot(self, kinds: Collection[str] | None = None) -> Snapshot:
        """Everything, from a new connection to the next Typha that answers; blocks
        until that Typha is in sync with the datastore."""
        wanted = _kinds(kinds)
        problems = []
        addresses = self.settings.addresses
        for _ in addresses:
            address = addresses[self._next]
            self._next = (self._next + 1) % len(addresses)
            try:
                self._connect(address)
                return Snapshot(self._revision, tuple(r for r in self._state.values() if _wanted(r, wanted)))
            except (OSError, proto.ProtocolError) as exc:
                self._disconnect()
                problems.append(f"{address}: {_describe(exc)}")
                if self._closed:
                    break
                log.warning("typha %s: %s", address, _describe(exc))
        raise DatastoreUnavailable(f"no Typha to sync from ({'; '.join(problems) or 'client closed'})")

    def watch(self, revision: Any, stop: threading.Event, kinds: Collection[str] | None = None) -> Iterator[Event]:
        """The changes after the last snapshot, from its connection, until ``stop``.
        ``revision`` must be that snapshot's: Typha cannot resume anywhere else."""
        conn = self._conn
        if conn is None or revision != self._revision:
            raise DatastoreUnavailable(f"no Typha stream at revision {revision}: take a snapshot first")
        return self._events(conn, stop, _kinds(kinds))

    def close(self) -> None:
        """Close the connection; a watch running in another thread ends."""
        self._closed = True
        self._disconnect()

    # -- internals ------------------------------------------------------------------------

    def _connect(self, address: str) -> None:
        self._disconnect()
        if self._closed:
            raise ConnectionError("client closed")
        conn = Connection(address, self.settings, self._context)
        with self._lock:
            self._conn = conn
        if self._closed:  # closed while connecting
            raise ConnectionError("client closed")
        conn.send(proto.ClientHello(self.hostname, self.info, client_version(), proto.FELIX))
        hello = conn.receive()
        if not isinstance(hello, proto.ServerHello):
            raise proto.ProtocolError(f"expected ServerHello, got {type(hello).__name__}")
        if hello.syncer_type != proto.FELIX:
            raise proto.ProtocolError(f"Typha answered for syncer {hello.syncer_type!r}, not {proto.FELIX!r}")
        self._state = {}
        status = None
        while status != proto.IN_SYNC:
            message = conn.receive()
            if isinstance(message, proto.SyncStatus):
                status, self._revision = message.sync_status, message.revision
            else:
                list(self._handle(conn, message))  # the snapshot: state only, no events
        log.info("typha %s: in sync at revision %s, %d resources", address, self._revision, len(self._state))

    def _disconnect(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _events(self, conn: Connection, stop: threading.Event, wanted: frozenset | None) -> Iterator[Event]:
        try:
            while True:
                message = conn.receive(stop)
                if message is None:
                    return
                for event in self._handle(conn, message):
                    if _wanted(event.resource, wanted):
                        yield event
        except (OSError, proto.ProtocolError) as exc:
            if self._closed or stop.is_set():
                return
            self._disconnect()
            raise DatastoreUnavailable(f"typha {conn.address}: {_describe(exc)}") from None

    def _handle(self, conn: Connection, message: Any) -> Iterator[Event]:
        if isinstance(message, proto.KVs):
            for update in message.kvs:
                event = self._apply(update)
                if event is not None:
                    yield event
        elif isinstance(message, proto.Ping):
            conn.send(proto.Pong(message.timestamp, time.time()))
        elif isinstance(message, proto.SyncStatus):
            log.info("typha %s: status %s", conn.address, message.sync_status)
        else:
            raise proto.ProtocolError(f"unexpected {type(message).__name__} from Typha")

    def _apply(self, update: proto.SerializedUpdate) -> Event | None:
        """Fold one update into the state; the event it makes, if any."""
        held = self._state.get(update.key)
        resource = None if update.value is None else _decode(update)
        if resource is None:
            if held is None:
                return None
            del self._state[update.key]
            return Event("deleted", held, update.revision)
        self._state[update.key] = resource
        return Event("added" if held is None else "modified", resource, update.revision)


def _decode(update: proto.SerializedUpdate) -> Any:
    """The resource of an update, its resourceVersion put back; None (logged) if it
    does not decode: a newer Typha may send kinds this agent does not know."""
    value = dict(update.value)
    value["metadata"] = {**value.get("metadata", {}), "resourceVersion": update.v3_resource_version or None}
    try:
        return from_dict(value, defaults=False, validate=False, source=update.key)
    except Exception as exc:  # whatever it is, it is not a resource this agent can use
        log.error("typha: skipping %s: its value does not decode: %s", update.key, " | ".join(str(exc).splitlines()))
        return None


def _kinds(kinds: Collection[str] | None) -> frozenset | None:
    return None if kinds is None else frozenset(kind_info(k).kind for k in kinds)


def _wanted(resource: Any, kinds: frozenset | None) -> bool:
    return kinds is None or type(resource).KIND in kinds


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
