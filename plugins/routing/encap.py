"""Felix's encapsulation managers, run together over one route table.

An :class:`Encap` is one encapsulation (VXLAN, IPIP): whether the pools ask for it, how
to make its device ready, how to take it down. :func:`reconcile` runs any number of
them in one pass: each ready device gives its tunnel's next hop, the routes of every
encapsulation are computed (:mod:`.routes`) and synced in one go, since protocol 80 in
the main table belongs to one caller (:mod:`.routetable`). A device that cannot be made
ready does not stop the routes that need no tunnel; its error is raised after them.

The vxlan and ipip plugins each run their own encapsulation; a plugin that runs BGP
beside them (Felix next to BIRD) passes both, as Felix runs whichever managers the
pools call for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
from pyroute2 import IPRoute

from pycalico.core import felixconfig
from pycalico.hooks import hookimpl

from . import routes, routetable, tunnel


@attrs.frozen
class Encap:
    """One encapsulation, switched on by the pools' ``mode_field`` (``vxlan_mode``) and
    off by FelixConfiguration ``enabled_key`` (``vxlan_enabled``) set to false.

    ``prepare(state, options, ipr, data_device)`` makes its device match ``state``
    (``data_device`` is (index, name) of the interface holding this node's address, or
    None) and returns its change lines and its :data:`~.routes.TunnelHop`, or None for
    the hop while the device cannot carry traffic yet. ``teardown(state, options, ipr)``
    undoes the device when no pool asks for the encapsulation.
    """

    mode_field: str
    enabled_key: str
    prepare: Callable[..., tuple[list[str], routes.TunnelHop | None]]
    teardown: Callable[..., list[str]]

    def enabled(self, state: Any) -> bool:
        """Whether this node does it: a pool of it exists and Felix is not told otherwise."""
        off = felixconfig.setting(state, self.enabled_key, True) is False
        return not off and bool(routes.encap_pools(state, self.mode_field))


def reconcile(state: Any, encaps: Sequence[tuple[Encap, Any]]) -> list[str]:
    """Devices and routes of every (encapsulation, its options) for this node, in the
    calling thread's network namespace; one line per change."""
    lines: list[str] = []
    wanted: list[routetable.Route] = []
    failure: Exception | None = None
    with IPRoute() as ipr:
        address = routes.node_address(state.node)
        parent = tunnel.data_device(ipr, address.ip) if address is not None else None
        for encap, options in encaps:
            if not encap.enabled(state):
                lines += encap.teardown(state, options, ipr)
                continue
            hop = None
            try:
                changed, hop = encap.prepare(state, options, ipr, parent)
                lines += changed
            except Exception as exc:  # routes that need no tunnel still go in
                failure = failure or exc
            wanted += routes.routes(state, encap.mode_field, hop, parent[1] if parent else None)
    lines += routetable.sync(wanted)
    if failure is not None:
        raise failure
    return lines


class EncapPlugin:
    """The hooks of routing plugin ``name``, for one encapsulation: its calico.toml
    table ``options_class``, its tunnel address (``reconcile_node(state, datastore,
    ipam)``), and its device and routes."""

    def __init__(self, name: str, options_class: type, encap: Encap, reconcile_node: Callable):
        self.name = name
        self.options_class = options_class
        self.encap = encap
        self._reconcile_node = reconcile_node

    @hookimpl
    def pycalico_config_schema(self, slot: str, name: str) -> type | None:
        return self.options_class if (slot, name) == ("routing", self.name) else None

    @hookimpl
    def pycalico_reconcile_node(self, state: Any, config: Any, datastore: Any, ipam: Any) -> list[str]:
        return self._reconcile_node(state, datastore, ipam)

    @hookimpl
    def pycalico_reconcile_routing(self, state: Any, config: Any) -> list[str]:
        options = config.routing.options
        return reconcile(state, [(self.encap, options if isinstance(options, self.options_class) else None)])
