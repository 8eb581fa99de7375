"""bird: Calico's BGP networking, with a real BIRD 2 daemon per node.

``[routing] type = "bird"`` in calico.toml. This plugin is what confd and BIRD are in
calico-node: each pass it computes this node's BGP configuration from the desired
state (Nodes, BGPConfigurations, BGPPeers, IP pools, this node's block affinities),
renders it as confd renders Calico's templates, and keeps one BIRD running with it in
the agent's network namespace. BIRD advertises this node's blocks (each also a
blackhole route) and the service cluster IP ranges, and programs the routes it learns
into the kernel (``proto bird``). Pools that encapsulate (vxlanMode, ipipMode) get
Felix's encapsulation managers beside BIRD, as in calico-node: tunnel addresses on the
Node, the devices, and the routes through them (BIRD's kernel filter leaves those
routes alone).

Modules:

* :mod:`.options`: ``[routing.bird]`` (``config_dir``, ``socket``, ``secrets_dir``);
* :mod:`.model`: the desired BGP configuration (peers, blocks, pools, filters' inputs);
* :mod:`.render`: that configuration as ``bird.cfg``, ``bird_aggr.cfg``, ``bird_ipam.cfg``;
* :mod:`.control`: BIRD's control socket (``configure``, ``show protocols``);
* :mod:`.nodestatus`: CalicoNodeStatus from that socket (``pycalico_bgp_status``);
* :mod:`.daemon`: BIRD supervised (restarted when it dies) and adopted by the next agent;
* :mod:`.speaker`: check, install and reload only on a real change.
"""

from __future__ import annotations

import logging
import threading
import time

from pycalico.core.nsenter import netns_id
from pycalico.hooks import hookimpl
from pycalico.plugins.routing import encap, ipip, vxlan

from . import control, model, nodestatus, render
from .options import Options
from .speaker import ConfigRejected, Speaker

NAME = "bird"

__all__ = ["NAME", "BirdRouting", "ConfigRejected", "Options", "Speaker", "plugin"]

log = logging.getLogger(__name__)

READY_THRESHOLD = 30.0  # seconds: calico-node -bird-ready's default -threshold-time


def bgp_readiness(options: Options, now: float | None = None) -> list[str]:
    """Why BGP is not ready, as ``calico-node -bird-ready`` judges it
    (``node/pkg/health/health.go``): BIRD must answer on its socket; with no peers it
    is ready; within ``READY_THRESHOLD`` of BIRD's start (its pid file's time) every
    Calico peer must be Established, later one is enough, so that a mesh does not turn
    unready because some other nodes are down."""
    from pycalico.core.ctl.node import peers

    try:
        rows = peers(control.protocols(options.socket))
    except control.BirdError as exc:
        return [f"BIRD is not ready: {exc}"]
    down = [row[0] for row in rows if not row[4].startswith("Established")]
    if not down:
        return []
    try:
        started = options.pid_file.stat().st_mtime
    except OSError:
        started = now or time.time()
    if len(down) < len(rows) and (now or time.time()) - started >= READY_THRESHOLD:
        return []
    return [f"BIRD is not ready: BGP not established with {','.join(down)}"]


class BirdRouting:
    """The hook implementations; ``plugin`` below is the registered instance.

    One :class:`Speaker` per network namespace and socket, so one process can run the
    BIRDs of several namespaces (the tests do). ``pycalico_configure`` and
    ``pycalico_unconfigure`` are counted: a config reload configures the new plugin set
    before it unconfigures the old one, and BIRD keeps running (and its sessions up)
    through it; the last unconfigure stops BIRD.
    """

    def __init__(self) -> None:
        self._speakers: dict[tuple[tuple[int, int], str], Speaker] = {}
        self._lock = threading.Lock()
        self._users = 0

    def speaker(self, options: Options) -> Speaker:
        """The speaker of the calling thread's network namespace. One there with
        another socket or config_dir (calico.toml moved them) is stopped; a change of
        ``secrets_dir`` alone keeps BIRD running."""
        ns = netns_id()
        with self._lock:
            sp = self._speakers.get((ns, options.socket))
            if sp is not None and sp.options.config_dir == options.config_dir:
                sp.options = options
                return sp
            for key in [k for k in self._speakers if k[0] == ns]:
                self._speakers.pop(key).stop()
            sp = self._speakers[(ns, options.socket)] = Speaker(options)
            return sp

    def reconcile(self, state, options: Options | None = None) -> list[str]:
        """Converge this namespace's BIRD on ``state``; one line per change."""
        options = options or Options()
        cfg = model.build(state, options.secrets_dir)
        for problem in cfg.problems:
            log.warning("%s", problem)
        return self.speaker(options).apply(render.render(cfg), cfg.problems)

    def stop_all(self) -> None:
        with self._lock:
            speakers, self._speakers = list(self._speakers.values()), {}
        for sp in speakers:
            sp.stop()

    @hookimpl
    def pycalico_config_schema(self, slot: str, name: str) -> type | None:
        return Options if (slot, name) == ("routing", NAME) else None

    @hookimpl
    def pycalico_configure(self, config) -> None:
        with self._lock:
            self._users += 1

    @hookimpl
    def pycalico_unconfigure(self, config) -> None:
        with self._lock:
            self._users -= 1
            last = self._users <= 0
        if last:
            self.stop_all()

    @hookimpl
    def pycalico_reconcile_node(self, state, config, datastore, ipam) -> list[str]:
        return vxlan.reconcile_node(state, datastore, ipam) + ipip.reconcile_node(state, datastore, ipam)

    @hookimpl
    def pycalico_reconcile_routing(self, state, config) -> list[str]:
        options = _options(config)
        # The tunnels do not depend on BIRD: a BIRD failure must not hold them back.
        try:
            lines = self.reconcile(state, options)
        finally:
            tunnels = encap.reconcile(state, [(vxlan.ENCAP, None), (ipip.ENCAP, None)])
        return lines + tunnels

    @hookimpl
    def pycalico_readiness(self, config) -> list[str]:
        return bgp_readiness(_options(config))

    @hookimpl
    def pycalico_bgp_status(self, config, classes) -> nodestatus.CalicoNodeStatusStatus:
        return nodestatus.read(_options(config).socket, classes)

    @hookimpl
    def pycalico_node_status(self, state) -> list[tuple[str, str]] | None:
        ns = netns_id()
        with self._lock:
            speakers = [sp for (key_ns, _), sp in self._speakers.items() if key_ns == ns]
        lines = []
        for sp in speakers:
            pid = sp.daemon.pid
            if pid is None:
                lines.append((NAME, f"BIRD is not running{': ' + sp.daemon.failure if sp.daemon.failure else ''}"))
            else:
                try:
                    sessions = sp.sessions()
                    up = sum(1 for s in sessions if s.info.startswith("Established"))
                    lines.append((NAME, f"BIRD pid {pid}: {up} of {len(sessions)} BGP sessions Established"))
                except control.BirdError as exc:
                    lines.append((NAME, f"BIRD pid {pid}: {exc}"))
            if sp.rejected:
                lines.append((NAME, f"rendered configuration refused, BIRD keeps the last good one: {sp.rejected}"))
            lines += [(NAME, problem) for problem in sp.problems]
        return lines or None


def _options(config) -> Options:
    return config.routing.options if isinstance(config.routing.options, Options) else Options()


plugin = BirdRouting()
