"""HTTP to the Kubernetes API server, with the official ``kubernetes`` client's
configuration: kubeconfig files (contexts, client certificates, tokens, exec
plugins) or the in-cluster service account.

Requests go through the client's own urllib3 pool with its TLS and auth settings,
but bodies are JSON dicts in and out (no generated model classes), and failures are
typed: ``ApiError`` for an answer with a failure ``Status``, DatastoreUnavailable
(naming the server) when the server cannot be reached, times out, or answers 5xx
or 429.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client as kclient
from kubernetes import config as kconfig

from pycalico.core.datastore import DatastoreUnavailable

from .options import Options


JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
POOL_SIZE = 32
AUTH_REFRESH = 1.0  # seconds the auth headers of one refresh are reused
# Connection failures are retried; a request that may have reached the server only
# when it cannot have changed anything (GET).
_RETRIES = urllib3.Retry(
    total=2, connect=2, read=2, status=0, other=0, redirect=0,
    allowed_methods=frozenset({"GET", "HEAD"}), raise_on_status=False,
)
_NO_RETRIES = urllib3.Retry(total=0, connect=0, read=0, status=0, other=0, redirect=0, raise_on_status=False)


class ApiError(Exception):
    """The API server answered with a failure Status (4xx)."""

    def __init__(self, status: int, body: Any, method: str, path: str):
        self.status = status
        self.body = body if isinstance(body, dict) else {}
        self.reason = self.body.get("reason", "")
        self.details = self.body.get("details")
        text = self.body.get("message") or (body if isinstance(body, str) else "") or f"HTTP {status}"
        self.message = str(text).strip()
        super().__init__(f"{method} {path}: {status} {self.reason or ''} {self.message}".replace("  ", " "))

    @property
    def route_missing(self) -> bool:
        """A 404 for the path itself (a CRD not installed), not for a named object."""
        return self.status == 404 and not (isinstance(self.details, dict) and self.details.get("name"))


def path_of(group: str, version: str, plural: str, namespace: str | None = None, name: str | None = None,
            subresource: str | None = None) -> str:
    """``/api/v1/...`` or ``/apis/<group>/<version>/...``, with names escaped."""
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace:
        base += f"/namespaces/{quote(namespace, safe='')}"
    base += f"/{plural}"
    if name is not None:
        base += f"/{quote(name, safe='')}"
    if subresource:
        base += f"/{subresource}"
    return base


def load_configuration(options: Options) -> kclient.Configuration:
    """The client configuration ``options`` name: the kubeconfig file (and context)
    if given, else in-cluster, else the client's default kubeconfig
    (``$KUBECONFIG`` or ``~/.kube/config``)."""
    cfg = kclient.Configuration()
    context = options.context or None
    try:
        if options.kubeconfig:
            kconfig.load_kube_config(config_file=os.path.expanduser(options.kubeconfig), context=context,
                                     client_configuration=cfg, persist_config=False)
        else:
            try:
                kconfig.load_incluster_config(client_configuration=cfg)
            except kconfig.ConfigException:
                kconfig.load_kube_config(context=context, client_configuration=cfg, persist_config=False)
    except (kconfig.ConfigException, OSError, ValueError, TypeError) as exc:
        where = options.kubeconfig or "in-cluster config or ~/.kube/config"
        raise DatastoreUnavailable(f"Kubernetes API server: no usable configuration ({where}): {exc}") from None
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, POOL_SIZE)
    return cfg


class WatchStream:
    """One open watch response: ``events()`` yields its decoded lines; ``shutdown()``
    (from any thread) unblocks a read in progress."""

    def __init__(self, response: urllib3.BaseHTTPResponse):
        self.response = response
        self.closed = False

    def _chunks(self) -> Iterator[bytes]:
        # A chunk (or, unchunked, whatever has arrived) as soon as it is there: a
        # watch event must not wait for the next one to fill a buffer.
        if self.response.chunked:
            yield from self.response.read_chunked(decode_content=True)
            return
        while True:
            data = self.response.read1(65536)
            if not data:
                return
            yield data

    def events(self) -> Iterator[dict]:
        buffer = b""
        for chunk in self._chunks():
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
        if buffer.strip():
            yield json.loads(buffer)

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.response.shutdown()
        except Exception:  # noqa: BLE001 - best effort: the socket may be gone already
            pass
        try:
            self.response.close()
            self.response.release_conn()
        except Exception:  # noqa: BLE001
            pass


class KubeAPI:
    """A connection to one API server."""

    def __init__(self, options: Options | None = None, configuration: kclient.Configuration | None = None):
        self.options = options or Options()
        self.configuration = configuration or load_configuration(self.options)
        self.client = kclient.ApiClient(self.configuration)
        self.client.user_agent = "pycalico-kdd"
        self.timeout = float(self.options.timeout_seconds)
        self.closed = False
        self._auth: tuple[float, dict] | None = None

    @property
    def where(self) -> str:
        return self.configuration.host

    def __repr__(self) -> str:
        return f"KubeAPI({self.where})"

    def close(self) -> None:
        self.closed = True
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing twice, or a pool already gone
            pass

    # -- requests ---------------------------------------------------------------------

    def _prepare(self, method: str, path: str, query: Mapping[str, Any] | None, content_type: str | None):
        params = [(k, _param(v)) for k, v in (query or {}).items() if v is not None and v != ""]
        url = self.configuration.host + path + ("?" + urlencode(params) if params else "")
        headers = {**self._auth_headers(), "Accept": JSON}
        if content_type:
            headers["Content-Type"] = content_type
        return url, headers

    def _auth_headers(self) -> dict:
        """The client's default and auth headers. Computing them runs the kubeconfig's
        refresh hook (exec plugins, expiring tokens), so it is done at most once per
        AUTH_REFRESH seconds rather than for every request of a burst."""
        now = time.monotonic()
        cached = self._auth
        if cached is None or now - cached[0] > AUTH_REFRESH:
            _, _, headers, _, _ = self.client.param_serialize(
                method="GET", resource_path="/", header_params={}, auth_settings=["BearerToken"])
            cached = self._auth = (now, dict(headers))
        return cached[1]

    def request(self, method: str, path: str, query: Mapping[str, Any] | None = None, body: Any = None,
                content_type: str = JSON, timeout: float | None = None) -> dict:
        """The decoded JSON answer; raises ApiError for a 4xx, DatastoreUnavailable
        for an unreachable server, a timeout, a 5xx or a 429."""
        if self.closed:
            raise DatastoreUnavailable(f"Kubernetes API server {self.where}: the datastore is closed")
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        url, headers = self._prepare(method, path, query, content_type if data is not None else None)
        wait = timeout or self.timeout
        try:
            resp = self.client.rest_client.pool_manager.request(
                method, url, body=data, headers=headers, timeout=urllib3.Timeout(connect=wait, read=wait),
                retries=_RETRIES, preload_content=True,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise DatastoreUnavailable(f"Kubernetes API server {self.where} unreachable ({method} {path}): {exc}") from None
        return self._decode(resp.status, resp.data, method, path)

    def _decode(self, status: int, raw: bytes, method: str, path: str) -> dict:
        try:
            body: Any = json.loads(raw) if raw else {}
        except ValueError:
            body = raw.decode(errors="replace")
        if 200 <= status < 300:
            return body if isinstance(body, dict) else {}
        if status >= 500 or status == 429:
            message = body.get("message") if isinstance(body, dict) else body
            raise DatastoreUnavailable(
                f"Kubernetes API server {self.where} answered {status} to {method} {path}: {str(message).strip()}"
            )
        raise ApiError(status, body, method, path)

    def open_watch(self, path: str, query: Mapping[str, Any], read_timeout: float) -> WatchStream:
        """Start a watch (``?watch=true&...``) and check its status; the events are read
        from the returned stream, each read waiting at most ``read_timeout`` (the server
        sends bookmarks, or ends the watch at ``timeoutSeconds``, well before)."""
        url, headers = self._prepare("GET", path, {**query, "watch": "true"}, None)
        try:
            resp = self.client.rest_client.pool_manager.request(
                "GET", url, headers=headers, timeout=urllib3.Timeout(connect=self.timeout, read=read_timeout),
                retries=_NO_RETRIES, preload_content=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise DatastoreUnavailable(f"Kubernetes API server {self.where} unreachable (watch {path}): {exc}") from None
        if resp.status != 200:
            raw = resp.data
            resp.release_conn()
            self._decode(resp.status, raw, "GET", path)  # raises
            raise DatastoreUnavailable(f"Kubernetes API server {self.where}: watch {path} answered {resp.status}")
        return WatchStream(resp)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
