"""The etcd Datastore: typed CRUD with compare-and-swap, pages, snapshot and watch.

Every write is one etcd transaction, as in ``libcalico-go/lib/backend/etcdv3/etcdv3.go``:
create is ``version == 0 -> put``; update ``mod_revision == resourceVersion -> put``
(else read the key to tell Conflict from NotFound); delete likewise with a
``delete_range``. A resource's ``resourceVersion`` is its key's ``mod_revision``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator
from typing import Any

import attrs

from pycalico.core import selector as selectors
from pycalico.core.datastore import AlreadyExists, Conflict, Event, NotFound, Page, Snapshot, check_identity
from pycalico.core.resources.base import deferred_checks
from pycalico.core.resources.meta import Resource
from pycalico.core.times import rfc3339

from . import keys
from .client import Compacted, Connection
from .options import Options

log = logging.getLogger(__name__)

SCAN_BATCH = 1000  # keys per range request: well below the gateway's message size limit
REMEMBERED_STATES = 4
WRITE_RETRIES = 5


def b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: str) -> str:
    """The first key after every key that starts with ``prefix`` (etcd's range_end)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@attrs.frozen
class KV:
    """One key as read: its resource (or None if it did not decode) and revisions."""

    key: str
    mod_revision: int
    create_revision: int
    resource: Any


class EtcdDatastore:
    """pycalico's Datastore over etcd v3, with Calico's key layout."""

    def __init__(self, options: Options | None = None, connection: Connection | None = None):
        self.options = options or Options()
        self.conn = connection or Connection(self.options)
        # What each recent snapshot (or ended watch) held: (revision, kinds) -> {key:
        # (mod_revision, resource)}, so that a watch started from it can relist after a
        # compaction and yield only the differences.
        self._states: OrderedDict[tuple[int, frozenset | None], dict] = OrderedDict()
        self._states_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EtcdDatastore({self.conn.where})"

    # -- connection -----------------------------------------------------------------

    def ping(self) -> int:
        """The cluster's current revision; raises DatastoreUnavailable if unreachable."""
        reply = self.conn.request("/kv/range", {"key": b64(keys.ROOT), "limit": 1, "keys_only": True})
        return _revision(reply)

    def close(self) -> None:
        self.conn.close()

    # -- status ---------------------------------------------------------------------

    def report_agent_status(self, hostname: str, report: Any, ttl: float) -> None:
        """Felix's status report (``report.to_json()``) under this host's status key,
        leased for ``ttl`` seconds, and as its last reported status, in one
        transaction; as Felix writes them, with a fresh lease each time."""
        status, last = keys.felix_status_keys(hostname)
        value = b64(json.dumps(report.to_json(), separators=(",", ":")))
        lease = self.conn.request("/lease/grant", {"TTL": max(1, round(ttl))}, write=True)["ID"]
        self._txn([], [{"request_put": {"key": b64(status), "value": value, "lease": lease}},
                       {"request_put": {"key": b64(last), "value": value}}], [])

    # -- raw requests ---------------------------------------------------------------

    def _range(self, start: str, end: str | None = None, *, revision: int | None = None,
               limit: int = 0, keys_only: bool = False) -> dict:
        payload: dict[str, Any] = {"key": b64(start)}
        if end is not None:
            payload["range_end"] = b64(end)
        if revision:
            payload["revision"] = revision
        if limit:
            payload["limit"] = limit
        if keys_only:
            payload["keys_only"] = True
        return self.conn.request("/kv/range", payload)

    def _txn(self, compare: list, success: list, failure: list) -> dict:
        body = {"compare": compare, "success": success, "failure": failure}
        return self.conn.request("/kv/txn", body, write=True)

    def _scan(self, start: str, end: str, revision: int | None) -> tuple[int, list[dict]]:
        """Every key in [start, end) at ``revision`` (the current one if None), in
        batches; returns the revision read and the raw key-values."""
        out: list[dict] = []
        while True:
            reply = self._range(start, end, revision=revision, limit=SCAN_BATCH)
            revision = revision or _revision(reply)
            kvs = reply.get("kvs", [])
            out.extend(kvs)
            if not reply.get("more") or not kvs:
                return revision, out
            start = unb64(kvs[-1]["key"]).decode(errors="replace") + "\0"

    def _read(self, raw: dict) -> KV:
        """A raw key-value decoded; a value that does not decode is logged, naming its
        key, and read as None (a bad value never stops a sync)."""
        key = unb64(raw["key"]).decode(errors="replace")
        rev = int(raw.get("mod_revision", 0))
        try:
            res = keys.decode(key, unb64(raw.get("value")), rev)
        except Exception as exc:  # whatever is stored there, it is not a resource
            log.warning("etcd: skipping key %s (mod_revision %d): its value does not decode: %s",
                        key, rev, _one_line(exc))
            res = None
        return KV(key, rev, int(raw.get("create_revision", 0)), res)

    # -- typed CRUD -----------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        kind = keys.info(kind).kind
        raw = self._find(kind, name, namespace)
        if raw is None:
            raise NotFound(kind, name, namespace)
        kv = self._read(raw)
        if kv.resource is None:
            raise NotFound(kind, name, namespace, detail=f"the value at {kv.key} does not decode (see the log)")
        return kv.resource

    def _find(self, kind: str, name: str, namespace: str | None) -> dict | None:
        """The raw key-value of one resource, or None."""
        if kind == "BlockAffinity":
            candidates = keys.affinity_keys(name)
        else:
            key = keys.resource_key(kind, name, namespace)
            candidates = (key,) if key else ()
        for key in candidates:
            kvs = self._range(key).get("kvs")
            if kvs:
                return kvs[0]
        if candidates and kind != "BlockAffinity":
            return None
        # An IPAM record whose name does not spell out its key: scan its kind.
        for prefix in keys.prefixes(kind):
            _, raws = self._scan(prefix, prefix_end(prefix), None)
            for raw in raws:
                kv = self._read(raw)
                if kv.resource is not None and kv.resource.kind == kind and kv.resource.name == name:
                    return raw
        return None

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None,
             limit: int = 0, continue_token: str | None = None) -> Page:
        """Resources of ``kind`` in etcd's key order: by (namespace, name), except that
        a namespace sorts after names that extend it with ``-`` (``a-b/x`` before
        ``a/x``), as in Kubernetes. Pages all read the first page's revision."""
        info = keys.info(kind)
        kind = info.kind
        ns = namespace if info.namespaced else None
        match = selectors.parse(selector).evaluate if selector else None
        revision, after = None, None
        if continue_token:
            revision, after = _read_token(continue_token, kind, ns)
        items: list[Any] = []
        last: str | None = after
        more = False
        for prefix in keys.prefixes(kind, ns):
            end = prefix_end(prefix)
            start = prefix if after is None or after < prefix else after + "\0"
            if start >= end:
                continue
            while not more:
                if limit and match is None:
                    batch = limit - len(items) + 1  # one more tells whether a next page exists
                else:
                    batch = min(max(2 * limit, 100), SCAN_BATCH) if limit else SCAN_BATCH
                try:
                    reply = self._range(start, end, revision=revision, limit=batch)
                except Compacted as exc:
                    if continue_token:
                        raise Compacted(
                            f"continue token expired: revision {revision} has been compacted; list again ({exc})"
                        ) from None
                    raise
                revision = revision or _revision(reply)
                raws = reply.get("kvs", [])
                for raw in raws:
                    if limit and len(items) == limit:
                        more = True
                        break
                    kv = self._read(raw)
                    last = kv.key
                    res = kv.resource
                    if res is None or keys.parse(kv.key)[0] != kind:
                        continue
                    if match is None or match(res.metadata.labels or {}):
                        items.append(res)
                if more or not reply.get("more") or not raws:
                    break
                start = unb64(raws[-1]["key"]).decode(errors="replace") + "\0"
                if limit and len(items) == limit:
                    more = True
            if more:
                break
        if revision is None:  # nothing was read at all
            revision = self.ping()
        token = _write_token(revision, last, kind, ns) if more and last else None
        return Page(items=tuple(items), revision=revision, continue_token=token)

    def create(self, resource: Any) -> Any:
        info = keys.info(resource.kind)
        check_identity(info, resource)
        resource = _set_meta(resource, resource_version=None, **_new_identity(resource, info))
        key, value = keys.encode(resource)
        reply = self._txn(
            [{"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": 0}],
            [{"request_put": {"key": b64(key), "value": b64(value)}}],
            [],
        )
        if not reply.get("succeeded"):
            raise AlreadyExists(info.kind, resource.name, resource.metadata.namespace)
        return _set_meta(resource, resource_version=str(_revision(reply)))

    def update(self, resource: Any) -> Any:
        info = keys.info(resource.kind)
        check_identity(info, resource)
        name, ns = resource.name, resource.metadata.namespace
        wanted = resource.metadata.resource_version
        needs_identity = not keys.is_ipam(info.kind) and not (
            resource.metadata.uid and resource.metadata.creation_timestamp
        )
        for _ in range(WRITE_RETRIES):
            rv = wanted
            res = resource
            if needs_identity:
                # Keep the stored uid and creationTimestamp (Calico requires them on
                # update; a manifest being applied does not carry them).
                current = self._find(info.kind, name, ns)
                if current is None:
                    raise NotFound(info.kind, name, ns)
                stored_rv = str(current.get("mod_revision"))
                if wanted and wanted != stored_rv:
                    raise Conflict(info.kind, name, ns)
                rv = stored_rv
                stored = self._read(current).resource
                if stored is not None:
                    res = _set_meta(
                        res,
                        uid=res.metadata.uid or stored.metadata.uid,
                        creation_timestamp=res.metadata.creation_timestamp or stored.metadata.creation_timestamp,
                    )
            key, value = keys.encode(_set_meta(res, resource_version=None))
            if rv:
                compare = {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": _int(rv)}
            else:
                compare = {"key": b64(key), "target": "VERSION", "result": "GREATER", "version": 0}
            reply = self._txn(
                [compare],
                [{"request_put": {"key": b64(key), "value": b64(value)}}],
                [{"request_range": {"key": b64(key), "keys_only": True}}],
            )
            if reply.get("succeeded"):
                return _set_meta(res, resource_version=str(_revision(reply)))
            existing = reply.get("responses", [{}])[0].get("response_range", {}).get("kvs")
            if not existing:
                raise NotFound(info.kind, name, ns)
            if wanted or not needs_identity:
                raise Conflict(info.kind, name, ns)
            # Changed between our read and our write, and the caller gave no version: again.
        raise Conflict(info.kind, name, ns, detail=f"changed {WRITE_RETRIES} times while being updated")

    def delete(self, kind: str, name: str, namespace: str | None = None, resource_version: str | None = None) -> Any:
        info = keys.info(kind)
        kind = info.kind
        ns = namespace if info.namespaced else None
        if info.namespaced and not ns:
            raise ValueError(f"{kind} is namespaced: a namespace is required")
        key = keys.resource_key(kind, name, ns)
        if key is None:
            raw = self._find(kind, name, ns)
            if raw is None:
                raise NotFound(kind, name, ns)
            key = unb64(raw["key"]).decode(errors="replace")
        compare = []
        if resource_version:
            compare = [{"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": _int(resource_version)}]
        reply = self._txn(
            compare,
            [{"request_delete_range": {"key": b64(key), "prev_kv": True}}],
            [{"request_range": {"key": b64(key), "keys_only": True}}],
        )
        response = reply.get("responses", [{}])[0]
        if not reply.get("succeeded"):
            if not response.get("response_range", {}).get("kvs"):
                raise NotFound(kind, name, ns)
            raise Conflict(kind, name, ns)
        deleted = response.get("response_delete_range", {})
        if not int(deleted.get("deleted", 0)):
            raise NotFound(kind, name, ns)
        return self._read(deleted["prev_kvs"][0]).resource

    # -- sync -----------------------------------------------------------------------

    def snapshot(self, kinds: Collection[str] | None = None) -> Snapshot:
        wanted = self._kinds(kinds)
        revision, entries = self.read_all(wanted)
        self.remember(revision, wanted, {k: (e.mod_revision, e.resource) for k, e in entries.items()})
        return Snapshot(revision=revision, resources=tuple(e.resource for e in entries.values()))

    def read_all(self, kinds: frozenset | None) -> tuple[int, dict[str, KV]]:
        """Every decodable resource of ``kinds`` at one revision: key -> KV, in key order.

        The first range fixes the revision; every later one reads at it.
        """
        for attempt in range(3):
            try:
                return self._read_all(kinds)
            except Compacted:  # compacted between two batches: read again
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _read_all(self, kinds: frozenset | None) -> tuple[int, dict[str, KV]]:
        if kinds is None:
            ranges: Iterable[str] = keys.SYNC_PREFIXES
        else:
            ranges = sorted({p for k in kinds for p in keys.prefixes(k)})
        revision: int | None = None
        entries: dict[str, KV] = {}
        for prefix in ranges:
            revision, raws = self._scan(prefix, prefix_end(prefix), revision)
            for raw in raws:
                key = unb64(raw["key"]).decode(errors="replace")
                found = keys.parse(key)
                if found is None or (kinds is not None and found[0] not in kinds):
                    continue  # not a synced kind (e.g. a kind pycalico does not model)
                kv = self._read(raw)
                if kv.resource is not None:
                    entries[key] = kv
        assert revision is not None
        return revision, entries

    def watch(self, revision: Any, stop: threading.Event, kinds: Collection[str] | None = None) -> Iterator[Event]:
        from .watch import Watcher

        return Watcher(self, int(revision), stop, self._kinds(kinds)).events()

    # -- remembered states (for relist-and-diff) ------------------------------------

    def _kinds(self, kinds: Collection[str] | None) -> frozenset | None:
        return None if kinds is None else frozenset(keys.info(k).kind for k in kinds)

    def remember(self, revision: int, kinds: frozenset | None, state: dict) -> None:
        with self._states_lock:
            self._states[(revision, kinds)] = state
            self._states.move_to_end((revision, kinds))
            while len(self._states) > REMEMBERED_STATES:
                self._states.popitem(last=False)

    def recall(self, revision: int, kinds: frozenset | None) -> dict | None:
        """A copy of what a consumer held at ``revision``, if this store knows it."""
        with self._states_lock:
            state = self._states.get((revision, kinds))
            return dict(state) if state is not None else None


# --- helpers ----------------------------------------------------------------------------


def _revision(reply: dict) -> int:
    return int(reply.get("header", {}).get("revision", 0))


def _int(rv: Any) -> int:
    try:
        return int(rv)
    except (TypeError, ValueError):
        raise ValueError(f"resourceVersion {rv!r} is not an etcd revision") from None


def _one_line(exc: BaseException) -> str:
    return " | ".join(str(exc).splitlines())


def _new_identity(resource: Resource, info: Any) -> dict:
    """uid and creationTimestamp as Calico's clientv3 sets them on create (v3 resources
    only: the IPAM records keep no metadata in etcd)."""
    if keys.is_ipam(info.kind):
        return {}
    now = rfc3339()
    return {
        "uid": resource.metadata.uid or str(uuid.uuid4()),
        "creation_timestamp": resource.metadata.creation_timestamp or now,
    }


def _set_meta(resource: Any, **changes: Any) -> Any:
    with deferred_checks():
        return attrs.evolve(resource, metadata=attrs.evolve(resource.metadata, **changes))


def _write_token(revision: int, last_key: str, kind: str, namespace: str | None) -> str:
    body = json.dumps({"r": revision, "k": last_key, "kind": kind, "ns": namespace}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode()


def _read_token(token: str, kind: str, namespace: str | None) -> tuple[int, str]:
    try:
        body = json.loads(base64.urlsafe_b64decode(token.encode()))
        revision, last_key = int(body["r"]), str(body["k"])
        same = body["kind"] == kind and body["ns"] == namespace
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(f"invalid continue token {token!r}") from None
    if not same:
        raise ValueError(f"continue token is for a list of {body['kind']} in {body['ns'] or 'all namespaces'}")
    return revision, last_key
