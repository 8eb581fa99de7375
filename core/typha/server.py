"""The sync server: Typha's listener and one handler per connected agent
(``typha/pkg/syncserver/sync_server.go``).

One asyncio event loop serves every connection. Each has four tasks: the sender
(the snapshot, then every crumb as the cache appends it), the pinger, the reader
(pongs) and the watchdog. A slow agent only stalls its own sender, waiting for its
socket to drain; the watchdog disconnects it once the oldest change it has not yet
been sent is older than ``max_fall_behind_seconds`` (after a grace period for the
snapshot), or when no pong came for ``pong_timeout_seconds``. Disconnected agents
reconnect and start over with a snapshot. Above ``max_connections`` the governor
drops one connection at random every ``drop_interval_seconds``, as Calico's does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import socket
import struct
import time

import attrs

from pycalico.core.config import TyphaServer
from pycalico.core.typha import proto, tls
from pycalico.core.typha.cache import Crumb, SnapshotCache

log = logging.getLogger(__name__)


@attrs.define
class Summary:
    """A Prometheus summary without quantiles: how many, and their sum."""

    count: int = 0
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value


@attrs.define
class ServerStats:
    accepted: int = 0
    dropped: int = 0
    grace_used: int = 0
    snapshot_send_secs: Summary = attrs.field(factory=Summary)
    kvs_per_msg: Summary = attrs.field(factory=Summary)
    ping_latency: Summary = attrs.field(factory=Summary)


class Server:
    """Serves ``cache`` to agents as ``settings`` say; ``version`` goes in ServerHello."""

    def __init__(self, settings: TyphaServer, cache: SnapshotCache, version: str):
        self.settings = settings
        self.cache = cache
        self.version = version
        self.connections: dict[int, Connection] = {}
        self.stats = ServerStats()
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._governor: asyncio.Task | None = None

    async def start(self) -> None:
        """Listen (OSError if the port is taken)."""
        s = self.settings
        context = tls.server_context(s.cert_file, s.key_file, s.ca_file) if s.tls else None
        self._server = await asyncio.start_server(
            self._handle, s.host, s.port, ssl=context, backlog=1024,
            ssl_handshake_timeout=s.handshake_timeout_seconds if context else None,
        )
        self._governor = asyncio.create_task(self._govern())
        log.info("listening on %s:%d%s", s.host, s.port, " (TLS, client certificates required)" if context else "")

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def close(self) -> None:
        if self._governor is not None:
            self._governor.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections.values()):
            conn.drop("server shutting down")
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = next(self._ids)
        peer = writer.get_extra_info("peername")
        self.stats.accepted += 1
        if self.settings.tls:
            problem = tls.peer_problem(writer.get_extra_info("peercert"), self.settings.client_cn,
                                       self.settings.client_uri_san)
            if problem:
                log.warning("connection %d from %s refused: %s", conn_id, peer, problem)
                writer.close()
                return
        conn = Connection(self, conn_id, reader, writer)
        self.connections[conn_id] = conn
        try:
            await conn.run()
        finally:
            del self.connections[conn_id]
            writer.close()

    async def _govern(self) -> None:
        while True:
            await asyncio.sleep(self.settings.drop_interval_seconds)
            if len(self.connections) > self.settings.max_connections:
                conn = random.choice(list(self.connections.values()))
                log.warning("currently have too many connections (%d, max %d), terminating one at random",
                            len(self.connections), self.settings.max_connections)
                conn.drop("too many connections")
                self.stats.dropped += 1


class Connection:
    """One agent: handshake, then the sender, pinger, reader and watchdog tasks until
    one of them ends (an error, EOF, a timeout, ``drop``)."""

    def __init__(self, server: Server, conn_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.settings = server.settings
        self.id = conn_id
        self.reader, self.writer = reader, writer
        self.peer = writer.get_extra_info("peername")
        self.hostname = ""
        self.position: Crumb | None = None  # everything up to here has been handed to the socket
        self.last_pong = time.monotonic()
        self.grace_until: float | None = None  # set once the snapshot is sent
        self.behind_logged = False
        self.ended: str | None = None

    def drop(self, reason: str) -> None:
        """Cut the connection off: every task then ends on its I/O. A reset, not a
        close, so that the kernel drops what was queued for this agent instead of
        still trickling it out."""
        self.ended = self.ended or reason
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def run(self) -> None:
        try:
            await self._handshake()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, proto.ProtocolError) as exc:
            log.warning("connection %d from %s: handshake failed: %s", self.id, self.peer,
                        "timed out" if isinstance(exc, asyncio.TimeoutError) else exc)
            return
        if self.ended:
            log.warning("connection %d from %s refused: %s", self.id, self.peer, self.ended)
            return
        tasks = [asyncio.create_task(c) for c in (self._send(), self._ping(), self._read(), self._watch())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None and not self.ended:
                    self.ended = _describe(task.exception())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        log.info("connection %d (%s, %s) closed: %s", self.id, self.hostname, self.peer, self.ended or "ended")

    async def _handshake(self) -> None:
        hello = await asyncio.wait_for(proto.read_message(self.reader), self.settings.handshake_timeout_seconds)
        if not isinstance(hello, proto.ClientHello):
            self.ended = f"unexpected {type(hello).__name__} before ClientHello"
            return
        self.hostname = hello.hostname
        syncer = hello.syncer_type or proto.FELIX  # an old client says nothing: Felix
        if syncer not in proto.SYNCER_TYPES:
            self.ended = f"client requested unknown SyncerType {syncer!r}"
            return
        self.writer.write(proto.encode(proto.ServerHello(self.server.version, syncer, self.id)))
        await self.writer.drain()
        log.info("connection %d from %s: %s (%s %s) syncing %s", self.id, self.peer, hello.hostname,
                 hello.info, hello.version, syncer)

    async def _send(self) -> None:
        cache, stats = self.server.cache, self.server.stats
        started = time.monotonic()
        self.position, frames = cache.snapshot()
        self.writer.write(frames)
        await self.writer.drain()
        stats.snapshot_send_secs.observe(time.monotonic() - started)
        self.grace_until = time.monotonic() + self.settings.new_client_fall_behind_grace_seconds
        while True:
            crumb = await cache.after(self.position)
            chunks = []
            while crumb is not None:  # everything already there goes out in one write
                chunks.append(crumb.frames)
                if crumb.size:
                    stats.kvs_per_msg.observe(crumb.size)
                self.position, crumb = crumb, crumb.next
            self.writer.write(b"".join(chunks))
            await self.writer.drain()

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ping_interval_seconds)
            self.writer.write(proto.encode(proto.Ping(time.time())))

    async def _read(self) -> None:
        while True:
            message = await proto.read_message(self.reader)
            if not isinstance(message, proto.Pong):
                self.ended = f"unexpected {type(message).__name__} from client"
                return
            self.last_pong = time.monotonic()
            self.server.stats.ping_latency.observe(max(0.0, time.time() - message.ping_timestamp))

    async def _watch(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.ping_interval_seconds / 2)
            now = time.monotonic()
            if now - self.last_pong > s.pong_timeout_seconds:
                self.drop(f"no pong for {now - self.last_pong:.1f}s (timeout {s.pong_timeout_seconds:g}s)")
                return
            oldest = self.position.next if self.position is not None else None
            if self.grace_until is None or oldest is None or now - oldest.created <= s.max_fall_behind_seconds:
                continue
            if now >= self.grace_until:
                self.drop(f"client fell behind by {now - oldest.created:.1f}s (max {s.max_fall_behind_seconds:g}s)")
                log.warning("connection %d (%s): %s; disconnecting", self.id, self.hostname, self.ended)
                return
            if not self.behind_logged:
                self.behind_logged = True
                self.server.stats.grace_used += 1
                log.warning("connection %d (%s) is %.1fs behind after its snapshot; grace period until it "
                            "catches up", self.id, self.hostname, now - oldest.created)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "client closed the connection"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
