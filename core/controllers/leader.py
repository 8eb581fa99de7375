"""Leader election: of several calico-kube-controllers replicas, one acts.

The lock is client-go's leader election on the datastore in use:

* Kubernetes datastore: a ``coordination.k8s.io/v1`` Lease (``kube-system/
  calico-kube-controllers``): ``holderIdentity``, ``leaseDurationSeconds``,
  ``acquireTime``, ``renewTime``, ``leaseTransitions``, written with compare-and-swap
  on its resourceVersion. A candidate takes the lease only after seeing it unchanged
  for ``leaseDurationSeconds`` by its own clock, so the clocks of the replicas need
  not agree.
* etcd: a key created only if absent (``create_revision == 0``) and bound to an etcd
  lease of ``lease_duration`` seconds that the holder keeps alive; etcd deletes the
  key when the lease runs out. The key lives outside ``/calico/`` so that agents
  watching Calico's keys never see it.

The holder acts until ``renew_deadline`` after it *sent* its last successful renewal,
shorter than the lease, so it has stopped before any other replica can take over, also
when the datastore cannot be reached. ``Fenced`` enforces that on every write.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import attrs

from pycalico.core.datastore import DatastoreError
from pycalico.core.schema import FieldError

log = logging.getLogger(__name__)

LEASE_NAMESPACE, LEASE_NAME = "kube-system", "calico-kube-controllers"
ETCD_KEY = "/pycalico/kube-controllers/leader"


class NotLeader(DatastoreError):
    """A write refused because this replica does not hold the lease (any more)."""


def default_identity() -> str:
    """client-go's choice: the hostname and a unique suffix."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@attrs.frozen
class Timing:
    """client-go's leader election periods, in seconds (the kube-controller-manager
    defaults)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __attrs_post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline:
            raise FieldError("retry_period", f"must be above 0 and below renew_deadline, got {self.retry_period:g}")
        if not self.renew_deadline < self.lease_duration:
            raise FieldError("renew_deadline",
                             f"must be below lease_duration ({self.lease_duration:g}), got {self.renew_deadline:g}")


class Lock(Protocol):
    identity: str

    def acquire_or_renew(self) -> bool:
        """Take or keep the lock; whether this replica holds it now. Raises
        DatastoreError (or the API's errors) when the datastore does not answer."""

    def release(self) -> None:
        """Give the lock up, if held, so that another replica need not wait."""


class Elector:
    """Runs a Lock every ``retry_period``; ``acting()`` says whether to act now.

    ``on_change(leading)`` is called from the elector's thread when this replica
    starts or stops leading.
    """

    def __init__(self, lock: Lock, timing: Timing = Timing(), on_change: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.lock, self.timing, self.clock = lock, timing, clock
        self.on_change = on_change or (lambda leading: None)
        self._deadline = 0.0
        self._leading = False

    @property
    def identity(self) -> str:
        return self.lock.identity

    def acting(self) -> bool:
        return self.clock() < self._deadline

    def can_finish(self, seconds: float) -> bool:
        """Whether an action that may take ``seconds`` (a write and its request timeout)
        started now ends before any other replica can take the lock: acting, and done
        by ``lease_duration`` after the last renewal was sent."""
        now = self.clock()
        margin = self.timing.lease_duration - self.timing.renew_deadline
        return now < self._deadline and now + seconds <= self._deadline + margin

    def step(self) -> None:
        """One attempt to take or renew the lock."""
        began = self.clock()
        try:
            held = self.lock.acquire_or_renew()
        except Exception as exc:  # noqa: BLE001 - unreachable, refused: the deadline runs out on its own
            log.warning("leader election: %s could not reach the lock: %s", self.identity, exc)
            held = None
        if held:
            self._deadline = began + self.timing.renew_deadline
        elif held is False:
            self._deadline = 0.0
        self._note()

    def _note(self) -> None:
        leading = self.acting()
        if leading != self._leading:
            self._leading = leading
            log.info("leader election: %s %s", self.identity, "is now the leader" if leading else "stopped leading")
            self.on_change(leading)

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``; then the lock is released if held."""
        try:
            while not stop.is_set():
                self.step()
                # Wake at the deadline too, so that losing the lease is noticed on time.
                wait = self.timing.retry_period
                if self._leading:
                    wait = max(0.0, min(wait, self._deadline - self.clock()))
                stop.wait(wait)
                self._note()
        finally:
            held = self.acting()
            self._deadline = 0.0
            self._note()
            if held:
                try:
                    self.lock.release()
                except Exception as exc:  # noqa: BLE001 - the lease then runs out by itself
                    log.warning("leader election: releasing the lock failed: %s", exc)


class Fenced:
    """A datastore whose writes go through only while ``elector`` acts and a write
    started now (``write_seconds``: the datastore's request timeout) must land before
    another replica can lead (NotLeader otherwise); everything else is the datastore's
    own."""

    def __init__(self, datastore: Any, elector: Elector, write_seconds: float = 0.0):
        self._ds, self._elector, self._write_seconds = datastore, elector, write_seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ds, name)

    def __repr__(self) -> str:
        return f"Fenced({self._ds!r})"

    def _check(self) -> None:
        if not self._elector.can_finish(self._write_seconds):
            raise NotLeader(f"{self._elector.identity} is not the leader (or not for {self._write_seconds:g}s "
                            "more): write refused")

    def create(self, resource: Any) -> Any:
        self._check()
        return self._ds.create(resource)

    def update(self, resource: Any) -> Any:
        self._check()
        return self._ds.update(resource)

    def delete(self, kind: str, name: str, namespace: str | None = None, resource_version: str | None = None) -> Any:
        self._check()
        return self._ds.delete(kind, name, namespace, resource_version=resource_version)


# --- etcd --------------------------------------------------------------------------------------


class EtcdLock:
    """A key created only if absent, bound to an etcd lease kept alive by the holder."""

    def __init__(self, store: Any, identity: str, ttl: float, key: str = ETCD_KEY):
        from pycalico.plugins.datastore.etcd.store import b64

        self.conn, self.identity = store.conn, identity
        self.ttl = max(1, round(ttl))
        self._key = b64(key)
        self.lease_id: str | None = None

    def _holder(self) -> tuple[str | None, str | None]:
        """(holder, its etcd lease id) of the key, (None, None) if nobody holds it."""
        from pycalico.plugins.datastore.etcd.store import unb64

        kvs = self.conn.request("/kv/range", {"key": self._key}).get("kvs") or []
        if not kvs:
            return None, None
        return unb64(kvs[0].get("value")).decode(errors="replace"), str(kvs[0].get("lease") or "")

    def acquire_or_renew(self) -> bool:
        if self.lease_id is not None:
            alive = int((self.conn.request("/lease/keepalive", {"ID": self.lease_id}).get("result") or {})
                        .get("TTL") or 0)
            holder, lease = self._holder()
            if alive > 0 and holder == self.identity and lease == self.lease_id:
                return True
            self.lease_id = None
            if holder is not None:
                return False
        elif self._holder()[0] is not None:
            return False
        from pycalico.plugins.datastore.etcd.store import b64

        lease_id = str(self.conn.request("/lease/grant", {"TTL": self.ttl}, write=True)["ID"])
        reply = self.conn.request("/kv/txn", {
            "compare": [{"key": self._key, "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
            "success": [{"request_put": {"key": self._key, "value": b64(self.identity), "lease": lease_id}}],
            "failure": [],
        }, write=True)
        if reply.get("succeeded"):
            self.lease_id = lease_id
            return True
        self.conn.request("/kv/lease/revoke", {"ID": lease_id}, write=True)
        return False

    def release(self) -> None:
        if self.lease_id is not None:
            lease_id, self.lease_id = self.lease_id, None
            self.conn.request("/kv/lease/revoke", {"ID": lease_id}, write=True)


# --- Kubernetes ----------------------------------------------------------------------------------


def _micro_time(now: float) -> str:
    """metav1.MicroTime as the API server writes it."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeLease:
    """A coordination.k8s.io/v1 Lease, as client-go's LeaseLock keeps it."""

    def __init__(self, api: Any, identity: str, duration: float, namespace: str = LEASE_NAMESPACE,
                 name: str = LEASE_NAME, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        from pycalico.plugins.datastore.kubernetes.api import path_of

        self.api, self.identity = api, identity
        self.duration = max(1, round(duration))
        self.namespace, self.name = namespace, name
        self.clock, self.wall = clock, wall
        self.path = path_of("coordination.k8s.io", "v1", "leases", namespace, name)
        self.collection = path_of("coordination.k8s.io", "v1", "leases", namespace)
        self._seen: tuple[str, float] | None = None  # (resourceVersion, when it was first seen)

    def _spec(self, transitions: int, acquired: str | None) -> dict:
        now = _micro_time(self.wall())
        return {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                "acquireTime": acquired or now, "renewTime": now, "leaseTransitions": transitions}

    def acquire_or_renew(self) -> bool:
        from pycalico.plugins.datastore.kubernetes.api import ApiError

        try:
            lease = self.api.request("GET", self.path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": self._spec(0, None)}
            try:
                self._remember(self.api.request("POST", self.collection, body=body))
            except ApiError as exc2:
                if exc2.status == 409:
                    return False
                raise
            return True
        spec, meta = lease.get("spec") or {}, lease.get("metadata") or {}
        rv = meta.get("resourceVersion", "")
        if self._seen is None or self._seen[0] != rv:
            self._seen = (rv, self.clock())
        holder = spec.get("holderIdentity") or ""
        mine = holder == self.identity
        # Another's lease is judged by how long *we* have seen it unchanged: no clock skew.
        if holder and not mine and self.clock() < self._seen[1] + float(spec.get("leaseDurationSeconds")
                                                                         or self.duration):
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        body = {**lease, "spec": self._spec(transitions, spec.get("acquireTime") if mine else None)}
        try:
            self._remember(self.api.request("PUT", self.path, body=body))
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def _remember(self, lease: dict) -> None:
        self._seen = ((lease.get("metadata") or {}).get("resourceVersion", ""), self.clock())

    def release(self) -> None:
        lease = self.api.request("GET", self.path)
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        # As client-go releases: no holder, so the next candidate need not wait.
        spec = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _micro_time(self.wall())}
        self.api.request("PUT", self.path, body={**lease, "spec": spec})
