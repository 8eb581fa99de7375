"""calico-typha as one service: the cache, its upstream, the sync server, and the
health (``[typha.server.health]``, 9098) and metrics (``[typha.server.metrics]``,
9093) listeners, around one asyncio event loop.

Live while the event loop turns and the upstream thread runs; ready once the cache is
in sync with the datastore and the server listens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pycalico.core import health, metrics
from pycalico.core.config import TyphaServer
from pycalico.core.ctl.version import client_version
from pycalico.core.datastore import Datastore
from pycalico.core.listener import Listeners
from pycalico.core.metrics import Sample, summary
from pycalico.core.typha import proto
from pycalico.core.typha.cache import SnapshotCache
from pycalico.core.typha.server import Server
from pycalico.core.typha.upstream import Upstream

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
LIVENESS_TIMEOUT = 30.0  # the event loop stalled this long: a dead Typha


class Typha:
    """Serves what ``connect()``'s datastore holds, as ``settings`` say, until ``stop()``."""

    def __init__(self, settings: TyphaServer, connect: Callable[[], Datastore]):
        self.settings = settings
        self._connect = connect
        self.cache = SnapshotCache(settings.max_message_size)
        self.server = Server(settings, self.cache, client_version())
        self.upstream: Upstream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._last_tick = time.monotonic()
        self._listeners = Listeners()
        self._stopping = False  # a stop() that came before the loop ran

    async def serve(self) -> None:
        """Run until ``stop()``. OSError if the sync port cannot be bound."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.server.start()
        self.upstream = Upstream(self._connect, self.cache, self._loop)
        self.upstream.start()
        self._listeners.apply({
            "typha-health": (self.settings.health, health.routes(self.liveness, self.readiness)),
            "typha-metrics": (self.settings.metrics, {"/metrics": lambda: metrics.response(self.samples())}),
        })
        try:
            while not self._stop.is_set() and not self._stopping:
                self._last_tick = time.monotonic()
                try:
                    await asyncio.wait_for(self._stop.wait(), TICK_SECONDS)
                except asyncio.TimeoutError:
                    pass
        finally:
            self._listeners.close()
            await self._loop.run_in_executor(None, self.upstream.stop)
            await self.server.close()

    def stop(self) -> None:
        """Ask ``serve`` to return; safe from any thread or a signal handler."""
        self._stopping = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    # -- health and metrics (called from the listeners' threads) ------------------------

    def liveness(self) -> list[str]:
        reasons = []
        stalled = time.monotonic() - self._last_tick
        if stalled > LIVENESS_TIMEOUT:
            reasons.append(f"event loop has not ticked for {stalled:.0f}s (timeout {LIVENESS_TIMEOUT:.0f}s)")
        if self.upstream is not None and not self.upstream.alive():
            reasons.append("datastore sync thread has stopped")
        return reasons

    def readiness(self) -> list[str]:
        reasons = []
        if self.upstream is not None and self.upstream.error:
            reasons.append(f"datastore unavailable: {self.upstream.error}")
        if self.cache.status != proto.IN_SYNC:
            reasons.append(f"not in sync with the datastore ({self.cache.status})")
        if not self.server.listening:
            reasons.append(f"not listening on port {self.settings.port}")
        return reasons

    def samples(self) -> list[Sample]:
        c, s = self.cache.stats, self.server.stats
        return [
            Sample("typha_connections_accepted", s.accepted, "Total number of connections accepted over time.",
                   "counter"),
            Sample("typha_connections_active", len(self.server.connections), "Number of open client connections."),
            Sample("typha_connections_dropped", s.dropped,
                   "Total number of connections dropped due to rebalancing.", "counter"),
            Sample("typha_connections_grace_used", s.grace_used, "Total number of connections that made use of "
                   "the grace period to catch up after sending the initial snapshot.", "counter"),
            Sample("typha_breadcrumb_seq_number", self.cache.latest.seq,
                   "Current (server-local) sequence number; number of snapshot deltas processed."),
            Sample("typha_breadcrumb_block", c.block,
                   "Count of the number of times Typha got the next Breadcrumb after blocking.", "counter"),
            Sample("typha_breadcrumb_non_block", c.non_block,
                   "Count of the number of times Typha got the next Breadcrumb without blocking.", "counter"),
            Sample("typha_updates_total", c.updates_total, "Total number of updates received from the Syncer.",
                   "counter"),
            Sample("typha_updates_skipped", c.updates_skipped, "Total number of updates skipped as duplicates.",
                   "counter"),
            Sample("typha_snapshots_generated", c.snapshots_generated, "Number of binary snapshots generated.",
                   "counter", {"syncer": proto.FELIX}),
            Sample("typha_snapshots_reused", c.snapshots_reused,
                   "Number of binary snapshots that were cached and reused.", "counter", {"syncer": proto.FELIX}),
            Sample("typha_snapshot_raw_bytes", c.snapshot_bytes,
                   "Size of the most recently generated binary snapshot (before compression).", "gauge",
                   {"syncer": proto.FELIX}),
            *summary("typha_client_snapshot_send_secs", "How long it took to send the initial snapshot to each "
                     "client.", s.snapshot_send_secs.count, s.snapshot_send_secs.total),
            *summary("typha_kvs_per_msg", "Number of KV pairs sent in each message.", s.kvs_per_msg.count,
                     s.kvs_per_msg.total),
            *summary("typha_ping_latency", "Round-trip ping latency to client.", s.ping_latency.count,
                     s.ping_latency.total),
        ]
