"""One policy dataplane per node: the built-in plugin that starts in a namespace
removes what the other one left there.

A node moved from ``iptables`` to ``nftables`` (or back), by a live reload or across a
restart, would otherwise keep the old plugin's chains, sets or table, still hooked into
the kernel and still dropping packets by the old rules. Each plugin calls the other's
removal once per namespace, before its first pass there; when there is nothing to
remove, nothing is written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from pycalico.core.nsenter import netns_id


class Handover:
    """``remove`` run once per network namespace, before the plugin's first pass there;
    again after ``reset()`` (the plugin was unconfigured: the other may have run since).
    A failed removal is tried again on the next pass."""

    def __init__(self, remove: Callable[[], list[str]]):
        self._remove = remove
        self._done: set = set()
        self._lock = threading.Lock()

    def __call__(self) -> list[str]:
        key = netns_id()
        with self._lock:
            if key in self._done:
                return []
            lines = self._remove()
            self._done.add(key)
            return lines

    def reset(self) -> None:
        with self._lock:
            self._done.clear()


def remove_nftables() -> list[str]:
    """Delete the nftables plugin's table ``inet calico``, if present."""
    from pycalico.plugins.policy.nftables.kernel import Nft
    from pycalico.plugins.policy.nftables.names import FAMILY, TABLE

    return [f"table {FAMILY} {TABLE} of the nftables plugin removed"] if Nft().remove() else []


def remove_iptables() -> list[str]:
    """Remove the iptables plugin's hooks, chains and IP sets, if any."""
    from pycalico.plugins.policy.iptables.dataplane import Dataplane
    from pycalico.plugins.policy.iptables.options import Options

    return [f"iptables plugin's {line}" for line in Dataplane(Options()).cleanup()]
