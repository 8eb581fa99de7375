"""HTTP front end: routing of kube-apiserver paths to the registry, JSON in and
out, chunked watch streams, optional bearer-token auth, and the test controls
(outage, compaction, request counters)."""

from __future__ import annotations

import collections
import json
import select
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from . import discovery
from . import errors as e
from .params import parse_bool, parse_int
from .registry import Registry, Target
from .resources import TypeTable, builtin_types
from .store import Store

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
FAIL_MODES = ("503", "close")
# Readable without credentials (RBAC's system:public-info-viewer).
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")


class KubeAPIServer:
    """A kube-apiserver stand-in on ``http://host:port`` (port 0 picks a free one).

    ``bookmark_interval`` is how often a watch with allowWatchBookmarks gets a
    BOOKMARK (the real server: about a minute); ``rv_wait`` is how long a request
    for a resourceVersion the server has not reached waits before the real
    server's 504 "Too large resource version" (the real server: ~3 s)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        bookmark_interval: float = 1.0,
        rv_wait: float = 1.0,
        namespaces: tuple[str, ...] = DEFAULT_NAMESPACES,
    ):
        self.host, self.port, self.token = host, port, token
        self.store = Store()
        self.types = TypeTable(builtin_types())
        self.registry = Registry(self.store, self.types, rv_wait, bookmark_interval)
        self.requests: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._failing: str | None = None
        self._stopping = False
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        namespace_type = Target(self.types.get("namespaces"), "v1")
        for name in namespaces:  # what a fresh cluster already has
            self.registry.create(namespace_type, json.dumps({"metadata": {"name": name}}).encode(), {})

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> KubeAPIServer:
        self._httpd = _HTTPServer((self.host, self.port), _Handler)
        self._httpd.api = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"kubeapi:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping = True
        self.store.close()
        self._httpd.shutdown()
        threads = self._abort_connections()
        for thread in threads:
            thread.join(timeout=5)
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def write_kubeconfig(self, path, namespace: str = "default") -> Path:
        """A kubeconfig for kubernetes.config.load_kube_config(config_file=path)."""
        path = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeapi", "cluster": {"server": self.url}}],
            "users": [{"name": "kubeapi", "user": {"token": self.token} if self.token else {}}],
            "contexts": [{"name": "kubeapi", "context": {"cluster": "kubeapi", "user": "kubeapi", "namespace": namespace}}],
            "current-context": "kubeapi",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # -- test controls -------------------------------------------------------

    def compact(self) -> int:
        """Drop all history up to now (etcd compaction): lists and watches from an
        older resourceVersion, and continue tokens taken before, now get 410."""
        return self.store.compact()

    def fail(self, on: bool = True, mode: str = "503") -> None:
        """Simulate an outage: every request gets a 503 Status (mode "503") or has
        its connection closed unanswered (mode "close"); open connections,
        watches included, are cut either way. ``fail(False)`` recovers."""
        if mode not in FAIL_MODES:
            raise ValueError(f"mode must be one of {FAIL_MODES}")
        self._failing = mode if on else None
        if on:
            self._abort_connections()

    @property
    def watches_open(self) -> int:
        return self.requests["watches_open"]

    @property
    def resource_version(self) -> str:
        """The current global revision, as a resourceVersion string."""
        return str(self.store.revision)

    def wait_until(self, predicate, timeout: float = 5.0) -> bool:
        """Poll ``predicate()`` (e.g. on ``requests``) until true or timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # -- bookkeeping used by the handler -------------------------------------

    def _count(self, *keys) -> None:
        with self._lock:
            for key in keys:
                self.requests[key] += 1

    def _watch_gauge(self, delta: int) -> None:
        with self._lock:
            self.requests["watches_open"] += delta

    def _track(self, conn: socket.socket, thread: threading.Thread | None) -> None:
        with self._lock:
            if thread is None:
                self._connections.pop(conn, None)
            else:
                self._connections[conn] = thread

    def _abort_connections(self) -> list[threading.Thread]:
        with self._lock:
            conns = dict(self._connections)
        for conn in conns:
            _abort(conn)
        return list(conns.values())


def _abort(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # stop() joins the threads it knows; none may block exit
    allow_reuse_address = True
    request_queue_size = 128
    api: KubeAPIServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked watch streams
    server_version = "kubeapi-standin"
    server: _HTTPServer

    def setup(self):
        super().setup()
        # Small request/response pairs on a kept-alive connection otherwise stall
        # on Nagle + delayed ACK (~40 ms each).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.api._track(self.connection, threading.current_thread())

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.api._track(self.connection, None)

    def handle(self):
        if self.server.api._failing == "close":
            _abort(self.connection)
            return
        try:
            super().handle()
        except (ConnectionError, OSError):
            pass  # the client went away or the server cut the connection

    def log_message(self, format, *args):  # noqa: A002 - quiet test output
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- plumbing ------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        api = self.server.api
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        api._count("total")
        if api._failing == "close":
            self.close_connection = True
            _abort(self.connection)
            return
        try:
            if api._failing == "503":
                api._count("failed")
                raise e.unavailable()
            url = urlsplit(self.path)
            public = url.path.rstrip("/") in PUBLIC_PATHS
            if api.token is not None and not public and self.headers.get("Authorization") != f"Bearer {api.token}":
                raise e.unauthorized()
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            result = self._route(method, url.path, query, body)
            if result is not None:
                self._send(*result)
        except e.ApiError as err:
            self._send(err.code, err.status())
        except (ConnectionError, OSError):
            self.close_connection = True
        except Exception as exc:  # a bug in the stand-in: say so loudly
            traceback.print_exc(file=sys.stderr)
            self._send(500, e.ApiError(500, "InternalError", f"Internal error occurred: {exc!r}").status())

    def _send(self, code: int, obj, content_type: str = "application/json") -> None:
        data = e.encode(obj) if content_type == "application/json" else obj.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self._headers_buffer.append(b"\r\n" + data)  # headers and body in one write
        self.flush_headers()

    def _route(self, method: str, path: str, q: dict, body: bytes):
        api = self.server.api
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if parts in (["healthz"], ["livez"], ["readyz"]):
            return 200, "ok", "text/plain; charset=utf-8"
        if method == "GET" and (parts == ["version"] or parts[:1] in (["api"], ["apis"]) and len(parts) <= 3):
            doc = self._discovery(parts)
            if doc is not None:
                api._count("discovery")
                return 200, doc
        if len(parts) < 3 or parts[0] not in ("api", "apis") or (parts[0] == "apis" and len(parts) < 4):
            raise e.no_route()
        group, version, rest = ("", parts[1], parts[2:]) if parts[0] == "api" else (parts[1], parts[2], parts[3:])
        watch_path = rest[0] == "watch"
        target = self._target(group, version, rest[1:] if watch_path else rest)
        verb = self._verb(method, target, q, watch_path)
        resource = target.rt.id + (f"/{target.subresource}" if target.subresource else "")
        api._count(verb, (verb, resource))
        reg = api.registry
        if verb == "watch":
            timeout = parse_int(q, "timeoutSeconds")
            self._stream(reg.watch(target, q), timeout)
            return None
        if verb == "get":
            return reg.get(target, q)
        if verb == "list":
            return reg.list(target, q)
        if verb == "create":
            return reg.create(target, body, q)
        if verb == "update":
            return reg.update(target, body, q)
        if verb == "patch":
            return reg.patch(target, self.headers.get("Content-Type", ""), body, q)
        if verb == "delete":
            return reg.delete(target, body, q)
        return reg.delete_collection(target, body, q)

    def _discovery(self, parts: list[str]):
        api = self.server.api
        if parts == ["version"]:
            return discovery.VERSION_INFO
        if parts == ["api"]:
            return discovery.api_versions(f"{api.host}:{api.port}")
        if parts == ["apis"]:
            return discovery.group_list(api.types)
        if parts[0] == "apis" and len(parts) == 2:
            return discovery.group(api.types, parts[1]) or _raise(e.no_route())
        if parts[0] == "api" and len(parts) == 2:
            return discovery.resource_list(api.types, "", parts[1]) or _raise(e.no_route())
        if parts[0] == "apis" and len(parts) == 3:
            return discovery.resource_list(api.types, parts[1], parts[2]) or _raise(e.no_route())
        return None

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        types = self.server.api.types
        if len(rest) >= 3 and rest[0] == "namespaces":
            rt = types.lookup(group, version, rest[2])
            if rt is not None and rt.namespaced and len(rest) <= 5:
                return self._checked(Target(rt, version, rest[1], *rest[3:]))
        rt = types.lookup(group, version, rest[0]) if rest else None
        if rt is None or len(rest) > 3 or (rt.namespaced and len(rest) > 1):
            raise e.no_route()
        return self._checked(Target(rt, version, None, *rest[1:]))

    @staticmethod
    def _checked(t: Target) -> Target:
        if t.subresource is not None and not (t.subresource == "status" and t.rt.status_subresource):
            raise e.no_route()
        if t.name == "":
            raise e.no_route()
        return t

    @staticmethod
    def _verb(method: str, t: Target, q: dict, watch_path: bool) -> str:
        scoped = t.namespace is not None or not t.rt.namespaced  # not the all-namespaces path
        if watch_path or (method == "GET" and parse_bool(q, "watch") and t.subresource is None):
            if method != "GET" or t.subresource is not None:
                raise e.method_not_allowed()
            return "watch"
        if t.name is None:
            verbs = {"GET": "list", "POST": "create", "DELETE": "deletecollection"}
            if method not in verbs or (method != "GET" and not scoped):
                raise e.method_not_allowed()
            return verbs[method]
        verbs = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
        if method not in verbs or (method == "DELETE" and t.subresource):
            raise e.method_not_allowed()
        return verbs[method]

    # -- watch streaming -----------------------------------------------------

    def _stream(self, session, timeout: int | None) -> None:
        api = self.server.api
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        deadline = time.monotonic() + timeout if timeout and timeout > 0 else None
        api._watch_gauge(+1)
        events = session.events()
        clean = True
        try:
            for event in events:
                if api._stopping or api._failing:
                    clean = False
                    break
                if event is not None:
                    self._chunk(e.encode(event))
                elif not self._client_alive():
                    clean = False
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break  # timeoutSeconds: the server ends the stream cleanly
            if clean:
                self._chunk(b"")
        except OSError:
            clean = False
        finally:
            events.close()
            session.close()
            api._watch_gauge(-1)
            if not clean:
                self.close_connection = True
                _abort(self.connection)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _client_alive(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return not readable or self.connection.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False


def _raise(err: Exception):
    raise err
