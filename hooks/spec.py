"""Hook specifications: the one contract between pycalico's core and its plugins.

Every plugin, built-in or third-party, implements some of these functions, marked with
``pycalico.hooks.hookimpl``. A *slot plugin* fills one of the four slots and is
found through the entry-point group of its slot: ``pycalico.datastore``,
``pycalico.ipam``, ``pycalico.routing``, ``pycalico.policy``; only the plugin that
calico.toml names for a slot is registered. A *hook-only plugin* (an observer, an
exporter) is found through the group ``pycalico.plugins`` and is registered unless
``[plugins] disabled`` names it.

The entry point's object is registered as it is (a module or an instance); a class
is instantiated without arguments first.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pycalico.core.calc import DesiredState
    from pycalico.core.config import Config
    from pycalico.core.datastore import Datastore
    from pycalico.core.metrics import Sample
    from pycalico.core.report import PassReport
    from pycalico.core.resources.nodestatus import CalicoNodeStatusStatus

hookspec = pluggy.HookspecMarker("pycalico")

# -------------------------------------------------------------------------
# Configuration
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def pycalico_config_schema(slot: str, name: str) -> type | None:
    """Return the attrs class of the plugin's own calico.toml table.

    Called while calico.toml is read, for the plugin chosen in each slot, before
    ``pycalico_configure``. The table ``[<slot>.<name>]`` is structured into this class
    with the file's converter: keys are the class's field names, unknown keys are
    refused and errors carry TOML paths. The instance is ``config.<slot>.options``.

    :param slot: One of ``datastore``, ``ipam``, ``routing``, ``policy``.
    :param name: The plugin name calico.toml gives as ``<slot>.type``.

    Return ``None`` if the call is not about this plugin, or if it takes no options
    (a table for it is then an error). Stops at the first non-None result.
    """


@hookspec(historic=True)
def pycalico_configure(config: Config) -> None:
    """Called once the configuration is read and every plugin is registered.

    Historic: a plugin registered later still gets the call. Set up what lives as
    long as the process here, not at import time.

    :param config: The validated configuration, plugin options included.
    """


@hookspec
def pycalico_unconfigure(config: Config) -> None:
    """Called once before the process exits (or before a slot's plugin is replaced
    on a config reload). Release what ``pycalico_configure`` took: sockets, daemons
    the plugin started, threads.
    """


# -------------------------------------------------------------------------
# Slots: objects the core asks the chosen plugin for
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def pycalico_datastore(config: Config) -> Datastore | None:
    """Return a connected datastore (see ``pycalico.core.datastore.Datastore``).

    Implemented by ``datastore`` slot plugins; called once per process. Connection
    details come from ``config.datastore.options``. Raise
    ``pycalico.core.datastore.DatastoreUnavailable`` if it cannot be reached.
    Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def pycalico_ipam(config: Config, datastore: Datastore) -> Any | None:
    """Return the IP address manager for this node, bound to ``datastore``.

    Implemented by ``ipam`` slot plugins. Stops at the first non-None result.
    """


# -------------------------------------------------------------------------
# Reconcile: called on every pass of the loop, in this order
# -------------------------------------------------------------------------


@hookspec
def pycalico_reconcile_node(state: DesiredState, config: Config, datastore: Datastore, ipam: Any) -> list[str] | None:
    """Make this node's own records in the datastore match what its plugins need:
    tunnel addresses on the Node (``ipv4VXLANTunnelAddr``, ``ipv4IPIPTunnelAddr``),
    the VTEP MAC, and the IPAM allocations behind them. Calico's calico-node
    ``allocate-tunnel-addrs`` and Felix's VTEP MAC writer do this job.

    Implemented by ``routing`` plugins that need such records; called first in
    every pass, after core has registered the Node itself. Level-based: compare
    ``state`` with what is needed and write only the difference (compare-and-swap
    on the Node's resourceVersion), releasing what is no longer needed (a pool that
    stops encapsulating). A write comes back through the watch and the next pass
    sees it in ``state``; do not touch the kernel here.

    :param state: Immutable desired state of this node.
    :param config: The configuration in force.
    :param datastore: A datastore handle for writes (not the one the sync reads).
    :param ipam: This node's IPAM (``pycalico_ipam``), or None when the ipam slot
        is ``none``.

    Return one short line per write (``"Node node1 ipv4VXLANTunnelAddr 10.65.3.0"``),
    an empty list if nothing was written. Raise to fail the pass.
    """


@hookspec
def pycalico_reconcile_routing(state: DesiredState, config: Config) -> list[str] | None:
    """Make this node's routing (routes, tunnel devices, BGP daemon config) match
    ``state``.

    Implemented by the ``routing`` slot plugin. Level-based: read what the kernel
    really has, converge it to ``state``, and change nothing when they already agree,
    so that any number of calls with the same state is one change at most. A
    resource absent from ``state`` is one to remove. Called before policy.

    :param state: Immutable desired state of this node.
    :param config: The configuration in force.

    Return one short line per change made (``"route 10.65.0.0/26 via 198.51.100.12
    added"``), an empty list if nothing changed. Raise to fail the pass: the loop logs
    it and retries on the next pass.
    """


@hookspec
def pycalico_reconcile_policy(state: DesiredState, config: Config) -> list[str] | None:
    """Make this node's packet filtering (iptables/ipsets or nftables) match
    ``state``.

    Implemented by the ``policy`` slot plugin; same contract as
    ``pycalico_reconcile_routing``: level-based, idempotent, one kernel transaction
    per pass, one line per change in the return value.
    """


# -------------------------------------------------------------------------
# Observation: hook-only plugins watch the loop through these
# -------------------------------------------------------------------------


@hookspec
def pycalico_pass_done(report: PassReport) -> None:
    """Called after every reconcile pass, successful or not.

    :param report: What the pass saw and did: the revision, why it ran, the changes
        each slot reported, errors and timing.

    Must not block: observers that export elsewhere queue the report.
    """


@hookspec
def pycalico_readiness(config: Config) -> list[str] | None:
    """Return why this plugin cannot carry traffic now, one short reason per item
    (``"BGP not established with 198.51.100.12"``); an empty list or None when ready.

    Called for every ``/readiness`` request of the health listener (from its thread,
    in the agent's network namespace) and by the probe flags of ``calico-node``
    (``--bird-ready``) in another process, where the plugin is registered but was never
    configured: read what is true now from the kernel or the daemon's control socket,
    not only from memory. Must not change anything and must answer within a couple of
    seconds. Every result counts: the agent is ready only when all are empty.
    """


@hookspec
def pycalico_metrics(config: Config) -> list[Sample] | None:
    """Return Prometheus samples this plugin adds to ``[metrics]`` (``/metrics``), with
    Felix's names where Felix has the figure (``felix_iptables_restore_calls``).

    Called for every scrape, from the metrics listener's thread: return figures the
    plugin already keeps (counters bumped as it works, sizes it knows), never work per
    scrape that grows with the dataplane. A family must come from one plugin only.
    All results are exposed.
    """


@hookspec(firstresult=True)
def pycalico_bgp_status(config: Config, classes: Collection[str]) -> CalicoNodeStatusStatus | None:
    """Return what this node's BGP daemon says now, for a CalicoNodeStatus of this node.

    Implemented by the ``routing`` plugin that runs a BGP daemon. Called from the status
    reporter's thread (``core/nodestatus.py``) when a request for this node appears or
    changes and then every ``updatePeriodSeconds``: read the daemon, change nothing,
    answer within a couple of seconds.

    :param config: The configuration in force.
    :param classes: What the request asks for: ``Agent``, ``BGP`` and/or ``Routes``.

    Return a ``CalicoNodeStatusStatus`` whose part for each class (``agent``, ``bgp``,
    ``routes``) is filled; the caller takes those parts alone and stamps
    ``lastUpdated``. A daemon that accepts no connection is no error: return
    ``nodestatus.NO_BGP_DAEMON`` (daemons NotReady, no sessions, no routes), which is
    also what the status says when no plugin answers. Raise when the daemon answers
    unexpectedly: that update is skipped and the resource keeps its last status.
    Stops at the first non-None result.
    """


@hookspec
def pycalico_node_status(state: DesiredState) -> list[tuple[str, str]] | None:
    """Return status lines for the agent's ``/status`` (``calico-node --status``),
    shown after its readiness, as ``(component, text)`` pairs, e.g. ``("bird", "BIRD
    pid 42: 2 of 2 BGP sessions Established")``, about ``state``, the last pass's. Called
    from the health listener's thread, so it must only read. All results are shown.
    """
