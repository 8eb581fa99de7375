"""``calico-kube-controllers``: Calico's cluster-wide controllers.

Configured as Calico's: the datastore from ``DATASTORE_TYPE`` (etcdv3 | kubernetes),
``ETCD_ENDPOINTS``... and ``KUBECONFIG`` (or ``--config calico.toml``, as the other
tools take it); the controllers from KubeControllersConfiguration ``default`` and the
variables ``ENABLED_CONTROLLERS``, ``LOG_LEVEL``, ``RECONCILER_PERIOD``,
``COMPACTION_PERIOD``, ``HEALTH_ENABLED``, ``SYNC_NODE_LABELS``,
``AUTO_HOST_ENDPOINTS`` (``config``). A change of the resource restarts the
controllers with the new configuration (Calico restarts the process); a bad one is
refused and reported, and the running configuration stays.

Replicas elect a leader (``leader``); only the leader's controllers act and write.
Readiness goes to the status file that ``check-status -r`` reads (``status``), and
with ``prometheusMetricsPort`` (9094 in Calico's manifests) IPAM GC figures are served
on ``/metrics``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import attrs

from pycalico.core.config import ConfigError, Endpoint, Logging
from pycalico.core.datastore import AlreadyExists, Conflict, DatastoreError, NotFound
from pycalico.core.resources.cluster import KubeControllersConfiguration
from pycalico.core.resources.codec import to_dict
from pycalico.core.schema import FieldError

from . import config as kc
from . import kube as k
from . import status as st
from .leader import (
    ETCD_KEY,
    LEASE_NAME,
    LEASE_NAMESPACE,
    Elector,
    EtcdLock,
    Fenced,
    KubeLease,
    NotLeader,
    Timing,
    default_identity,
)
from .runner import Runner, Watch, follow

log = logging.getLogger(__name__)

PROG = "calico-kube-controllers"
STARTUP_TIMEOUT = 60.0  # Calico gives up initialising the datastore after a minute
HEALTH_PERIOD, HEALTH_RETRY = 10.0, 2.0
IPAM_NODE = PROG  # the IPAM client's own node name; every release names its node


def _is_kdd(datastore: Any) -> bool:
    from pycalico.plugins.datastore.kubernetes import KubernetesDatastore

    return isinstance(datastore, KubernetesDatastore)


def _is_etcd(datastore: Any) -> bool:
    from pycalico.plugins.datastore.etcd.store import EtcdDatastore

    return isinstance(datastore, EtcdDatastore)


class Unlocked:
    """No leader election (``--leader-elect=false``): this replica always acts."""

    def __init__(self, identity: str):
        self.identity = identity

    def acquire_or_renew(self) -> bool:
        return True

    def release(self) -> None:
        pass


def calico_watch(datastore: Any, kdd: bool):
    """``events(kinds, stop)``: every later change of the Calico datastore's kinds."""

    def events(kinds: list[str], stop: threading.Event):
        revision = None if kdd else datastore.snapshot(kinds).revision
        return datastore.watch(revision, stop, kinds)

    return events


def _write_budget(datastore: Any, timing: Timing | None) -> float:
    """How long a fenced write may take: the store's request timeout, so that a write
    still lands before another replica can lead. When the lease leaves too little time
    for that (the leader would renew yet never write), the fence checks leadership only,
    and says so."""
    if timing is None:
        return 0.0
    timeout = float(getattr(getattr(datastore, "options", None), "timeout_seconds", 10.0))
    margin = timing.lease_duration - timing.renew_deadline
    if timeout > margin + timing.renew_deadline - timing.retry_period:
        log.warning("leader election: the datastore's request timeout (%gs) is longer than the lease leaves for a "
                    "write (%gs): a write sent just before losing the lease may land after another replica leads; "
                    "lengthen --leader-elect-lease-duration or shorten the timeout",
                    timeout, margin + timing.renew_deadline - timing.retry_period)
        return 0.0
    return timeout


class Service:
    """The controllers of one process: configuration, leader election, runners, health."""

    def __init__(self, datastore: Any, kube: k.KubeView, elector_timing: Timing | None, identity: str,
                 status: st.Status, env: Mapping[str, str], metrics_host: str = ""):
        self.raw, self.kube, self.status, self.env = datastore, kube, status, env
        self.kdd = _is_kdd(datastore)
        self.datastore_type = "kubernetes" if self.kdd else "etcdv3"
        self.metrics_host = metrics_host
        self._reload = threading.Event()
        self.stop = threading.Event()
        self.etcd = _is_etcd(datastore)
        if elector_timing is None:
            lock: Any = Unlocked(identity)
            timing, self.lock_name = Timing(), "off"
        elif self.etcd:
            lock, timing = EtcdLock(datastore, identity, elector_timing.lease_duration), elector_timing
            self.lock_name = f"on etcd key {ETCD_KEY}"
        else:
            lock, timing = KubeLease(kube.api, identity, elector_timing.lease_duration), elector_timing
            self.lock_name = f"on Lease {LEASE_NAMESPACE}/{LEASE_NAME}"
        self.elector = Elector(lock, timing, on_change=self._leading)
        self.ds = Fenced(datastore, self.elector, _write_budget(datastore, elector_timing))
        self.running: kc.RunConfig | None = None
        self.runners: list[Runner] = []
        self._generation = threading.Event()
        self._threads: list[threading.Thread] = []
        self.gc = None
        self.node_controller = None
        self._listener = None

    # -- configuration -------------------------------------------------------------------------

    def load_config(self) -> kc.RunConfig | None:
        """KubeControllersConfiguration ``default`` merged with the environment; None
        when it has a bad field (logged and reported on readiness, naming it). Raises
        ConfigError for a bad variable, DatastoreError when the datastore fails."""
        kind = KubeControllersConfiguration.KIND
        try:
            kcc = self.raw.get(kind, kc.NAME)
        except NotFound:
            kcc = kc.default_configuration()
            if self.elector.acting():
                try:
                    kcc = self.ds.create(kcc)
                    log.info("created %s %s with Calico's defaults", kind, kc.NAME)
                except (AlreadyExists, NotLeader):
                    kcc = self.raw.get(kind, kc.NAME)
        bad = kc.spec_problems(kcc)
        if bad:
            for line in bad:
                log.error("%s (configuration refused; the running one stays)", line)
            self.status.set_ready(st.CONFIG, False, "; ".join(bad))
            return None
        run, status = kc.merge(self.env, self.datastore_type, kcc.spec)
        self.status.set_ready(st.CONFIG, True)
        reported = attrs.evolve(kcc, status=status)
        if kcc.metadata.resource_version and to_dict(reported).get("status") != to_dict(kcc).get("status"):
            try:
                self.ds.update(reported)
            except (Conflict, NotFound, NotLeader) as exc:
                log.debug("status of %s %s not written: %s", kind, kc.NAME, exc)
        return run

    def _leading(self, leading: bool) -> None:
        if leading:
            self._reload.set()  # the leader writes the resource's status
            for r in self.runners:
                r.kick()

    # -- controllers ---------------------------------------------------------------------------

    def controllers(self, run: kc.RunConfig) -> list:
        from pycalico.plugins.ipam.calico_ipam import IPAM

        from .compaction import Compactor
        from .ipamgc import IPAMGC
        from .ksync import (
            EndpointLabels,
            namespace_sync,
            policy_sync,
            service_account_sync,
        )
        from .node import NodeController

        out: list = []
        self.gc = self.node_controller = None
        if run.node is not None:
            if run.node.auto_host_endpoints:
                log.warning("node controller: automatic host endpoints are not implemented; none are created")
            self.gc = IPAMGC(IPAM(self.ds, node=IPAM_NODE), self.kube, run.node.leak_grace_period)
            self.node_controller = NodeController(self.ds, self.kube, run.node, self.gc,
                                                  calico_watch(self.raw, self.kdd))
            out.append(self.node_controller)
        syncs = {"policy": policy_sync, "namespace": namespace_sync, "service_account": service_account_sync}
        for field, make in syncs.items():
            settings = getattr(run, field)
            if settings is not None and not self.kdd:
                out.append(make(self.ds, self.kube, settings.reconciler_period))
        if run.workload_endpoint is not None and not self.kdd:
            out.append(EndpointLabels(self.ds, self.kube, run.workload_endpoint.reconciler_period))
        if self.kdd and any(getattr(run, f) is not None for f in (*syncs, "workload_endpoint")):
            log.info("the policy, namespace, serviceaccount and workloadendpoint controllers have nothing to do "
                     "with the Kubernetes datastore (it reads those objects itself)")
        if run.load_balancer is not None:
            log.warning("the loadbalancer controller is not implemented; Services get no LoadBalancer addresses")
        if self.etcd and run.compaction_period > 0:
            out.append(Compactor(self.raw, run.compaction_period))
        return out

    def _start(self, run: kc.RunConfig) -> None:
        self._stop_runners()
        logging.getLogger().setLevel(kc.LOG_LEVELS[run.log_level])
        self._generation = threading.Event()
        self.runners = [Runner(c, self.elector.acting, self._generation).start() for c in self.controllers(run)]
        self.running = run
        self._serve_metrics(run.prometheus_port)
        log.info("running controllers: %s", ", ".join(r.controller.name for r in self.runners) or "none")

    def _stop_runners(self) -> None:
        self._generation.set()
        for r in self.runners:
            r.join()
        self.runners = []

    # -- health and metrics --------------------------------------------------------------------

    def check_health(self) -> bool:
        """Calico's runHealthChecks, one round: the datastore and the API server."""
        try:
            self.raw.get("ClusterInformation", "default")
            self.status.set_ready(st.DATASTORE, True)
        except NotFound:
            self.status.set_ready(st.DATASTORE, True)
        except DatastoreError as exc:
            self.status.set_ready(st.DATASTORE, False, f"Error verifying datastore: {exc}")
        problem = self.kube.healthz()
        self.status.set_ready(st.APISERVER, not problem, problem)
        return self.status.ready()

    def _health_loop(self) -> None:
        self.status.set_ready(st.DATASTORE, False, "initialized to false")
        self.status.set_ready(st.APISERVER, False, "initialized to false")
        while not self.stop.is_set():
            ok = self.check_health()
            self.stop.wait(HEALTH_PERIOD if ok else HEALTH_RETRY)

    def metrics(self) -> list:
        """The IPAM GC's figures, as Calico's node controller exports them."""
        from pycalico.core.metrics import Sample

        out = [Sample("pycalico_kube_controllers_leader", 1.0 if self.elector.acting() else 0.0,
                      "1 while this replica is the leader")]
        last = self.node_controller.last if self.node_controller is not None else None
        if self.gc is not None:
            out.append(Sample("ipam_allocations_gc_reclamations", float(self.gc.reclaimed),
                              "Leaked IP addresses released by the IPAM GC", kind="counter"))
        if last is not None:
            out.append(Sample("ipam_allocations_gc_candidates", float(len(last.candidates)),
                              "IP addresses waiting out the leak grace period"))
        return out

    def _serve_metrics(self, port: int) -> None:
        from pycalico.core import metrics
        from pycalico.core.listener import Listener

        if self._listener is not None and (not port or self._listener.port != port):
            self._listener.close()
            self._listener = None
        if port and self._listener is None:
            try:
                self._listener = Listener(Endpoint(host=self.metrics_host, port=port),
                                          {"/metrics": lambda: metrics.response(self.metrics())}, "metrics")
            except OSError as exc:
                log.error("metrics on port %d not served: %s", port, exc)

    # -- the whole ----------------------------------------------------------------------------

    def _config_watch(self) -> None:
        events = calico_watch(self.raw, self.kdd)
        follow(Watch("config", lambda stop: events([KubeControllersConfiguration.KIND], stop)), self.stop,
               self._reload.set, "configuration")

    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def run(self) -> None:
        """Until ``stop`` is set. Raises ConfigError for a bad environment variable."""
        self._spawn(lambda: self.elector.run(self.stop), "leader-election")
        self._spawn(self._config_watch, "config-watch")
        self._reload.set()
        try:
            while not self.stop.is_set():
                if not self._reload.wait(0.5):
                    continue
                self._reload.clear()
                try:
                    new = self.load_config()
                except DatastoreError as exc:
                    log.warning("KubeControllersConfiguration %s not read: %s", kc.NAME, exc)
                    self._reload.set()
                    self.stop.wait(HEALTH_RETRY)
                    continue
                if new is None or new == self.running:
                    continue
                if self.running is None:
                    if new.health_enabled:
                        self._spawn(self._health_loop, "health")
                else:
                    log.info("configuration changed: restarting the controllers")
                self._start(new)
        finally:
            self.stop.set()
            self._stop_runners()
            for t in self._threads:
                t.join(5)
            if self._listener is not None:
                self._listener.close()


def _connect(args: argparse.Namespace, env: Mapping[str, str], status: st.Status) -> tuple[Any, Any]:
    """(Calico datastore, Kubernetes store), retried for STARTUP_TIMEOUT while they do
    not answer."""
    from pycalico.core.client import open_datastore
    from pycalico.core.datastore import DatastoreUnavailable

    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            ds = open_datastore(args.config, env)
            if _is_kdd(ds):
                return ds, ds
            try:
                return ds, k.connect(args.kubeconfig or env.get("KUBECONFIG", ""))
            except BaseException:
                ds.close()
                raise
        except DatastoreUnavailable as exc:
            status.set_ready(st.STARTUP, False, f"Error initializing datastore: {exc}")
            if time.monotonic() >= deadline:
                raise
            log.info("datastore not ready (%s); trying again in 5s", exc)
            time.sleep(5)


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog=PROG, description="Calico's cluster-wide controllers")
    parser.add_argument("--version", action="store_true", help="Display version")
    parser.add_argument("--config", default=None, help="calico.toml naming the datastore (default: Calico's "
                                                       "environment variables, or $CALICO_CONFIG)")
    parser.add_argument("--kubeconfig", default="", help="the Kubernetes API (default: $KUBECONFIG, then in-cluster)")
    parser.add_argument("--status-file", default=st.DEFAULT_STATUS_FILE, help="File to write status information to")
    parser.add_argument("--metrics-host", default="", help="address the metrics port binds (default: all)")
    le = parser.add_argument_group("leader election")
    le.add_argument("--leader-elect", default="true", choices=("true", "false"),
                    help="elect a leader among replicas (default true)")
    default = Timing()
    le.add_argument("--leader-elect-lease-duration", type=float, default=default.lease_duration, metavar="SECONDS")
    le.add_argument("--leader-elect-renew-deadline", type=float, default=default.renew_deadline, metavar="SECONDS")
    le.add_argument("--leader-elect-retry-period", type=float, default=default.retry_period, metavar="SECONDS")
    le.add_argument("--leader-elect-identity", default="", help="this replica's name (default: hostname_uuid)")
    args = parser.parse_args(argv)
    if args.version:
        from pycalico.core.ctl.version import client_version

        print(client_version())
        return 0

    from pycalico.core import logs
    from pycalico.core.plugins import PluginError

    logs.setup(Logging(), PROG)
    level = (env.get(kc.ENV_LOG_LEVEL) or "info").lower()
    logging.getLogger().setLevel(kc.LOG_LEVELS.get(level, "INFO"))
    try:
        timing = Timing(args.leader_elect_lease_duration, args.leader_elect_renew_deadline,
                        args.leader_elect_retry_period) if args.leader_elect == "true" else None
    except FieldError as exc:
        print(f"{PROG}: --leader-elect-{exc.field.replace('_', '-')}: {exc}", file=sys.stderr)
        return 2
    status = st.Status(args.status_file)
    status.set_ready(st.STARTUP, False, "initialized to false")
    try:
        ds, kube_store = _connect(args, env, status)
    except (ConfigError, PluginError, DatastoreError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    status.set_ready(st.STARTUP, True)
    service = Service(ds, k.KubeView(kube_store), timing, args.leader_elect_identity or default_identity(), status,
                      env, args.metrics_host)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop.set())
    log.info("%s starting as %s (datastore %s, Kubernetes %s; leader election %s)", PROG,
             service.elector.identity, service.datastore_type, kube_store.api.where, service.lock_name)
    try:
        service.run()
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    finally:
        ds.close()
        if kube_store is not ds:
            kube_store.close()
    return 0
