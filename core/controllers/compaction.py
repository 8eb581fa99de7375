"""etcd compaction, every ``etcdV3CompactionPeriod`` (``COMPACTION_PERIOD``), as
calico-kube-controllers runs kube-apiserver's compactor in etcd mode: each time, the
history before the revision seen one period earlier is dropped, so a watcher that was
cut off can still resume from anything newer than a period (older positions relist).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Compactor:
    name = "compaction"

    def __init__(self, store: Any, period: float, clock: Callable[[], float] = time.monotonic):
        self.store, self.period, self.clock = store, period, clock
        self._last: tuple[int, float] | None = None  # (revision, when it was read)

    def watches(self) -> list:
        return []

    def reconcile(self) -> None:
        from pycalico.plugins.datastore.etcd.client import Compacted

        now = self.clock()
        # Passes also run when leadership moves: compact only a period apart.
        if self._last is not None and now - self._last[1] < 0.9 * self.period:
            return
        revision = self.store.ping()
        if self._last is not None and self._last[0] < revision:
            try:
                self.store.conn.request("/kv/compaction", {"revision": self._last[0]}, write=True)
                log.info("etcd compacted up to revision %d", self._last[0])
            except Compacted:
                pass  # someone compacted further already
        self._last = (revision, now)
