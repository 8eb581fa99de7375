"""The connection to etcd: endpoints, TLS, user/password, failover, retries and errors.

Requests go through ``etcd3gw`` (etcd's gRPC-JSON gateway at ``/v3/``): its ``post`` for
unary calls (range, txn, auth) and its session and URLs for watch streams. One
``Etcd3Client`` per endpoint; a request goes to the endpoint that last answered and
fails over to the next one when it cannot be reached.

Retries: a request that certainly did not reach etcd (connection refused, no leader,
an expired auth token: it logs in again) is retried on the next endpoint until
``timeout_seconds`` have passed, but only for ``REFUSED_GRACE`` when every endpoint
refuses connections: nothing listens, so the caller learns it at once and retries on
its own terms (a running watch keeps trying for the whole timeout). A request whose
fate is unknown (connection lost after sending, a read timeout, "request timed out")
is retried only if it is a read; for a write it raises ``DatastoreUnavailable`` saying
that the write may have been applied, because a blind retry of a compare-and-swap
would report a conflict with itself.

TLS: ``ca_cert_file`` verifies the servers, ``cert_file``/``key_file`` is the client
certificate; a TLS failure is an ``EtcdError`` at once (it does not fix itself). With
``username``, the client logs in through ``/v3/auth/authenticate`` and sends the token
in the ``Authorization`` header, which the gateway hands to etcd. Environment proxies
are never used.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from urllib.parse import urlsplit

import etcd3gw
import requests
from etcd3gw import exceptions as gw

from pycalico.core.datastore import DatastoreError, DatastoreUnavailable

from .options import Options

log = logging.getLogger(__name__)

# gRPC status codes as the gateway reports them in {"code": N, "message": ...}.
OUT_OF_RANGE, PERMISSION_DENIED, UNAVAILABLE, UNAUTHENTICATED = 11, 7, 14, 16
CONNECT_TIMEOUT = 3.0
REFUSED_GRACE = 1.0  # seconds of refused connections on every endpoint before giving up


class EtcdError(DatastoreError):
    """etcd refused a request for a reason that retrying will not change (bad
    credentials, permission denied, a malformed request)."""


class Compacted(DatastoreError):
    """The revision asked for has been compacted away (a list's continue token that
    has expired)."""


class Transient(Exception):
    """One attempt failed in a way another attempt may not; ``sent`` says whether
    etcd may have acted on it."""

    def __init__(self, reason: str, sent: bool, refused: bool = False):
        super().__init__(reason)
        self.sent = sent
        self.refused = refused  # nothing listens at the endpoint


class Connection:
    """Every endpoint of one etcd cluster, with failover and typed errors."""

    def __init__(self, options: Options):
        self.options = options
        self.timeout = float(options.timeout_seconds)
        self.urls = [e.rstrip("/") for e in options.endpoints]
        self._clients = [self._client(url) for url in self.urls]
        self._current = 0
        self._token: str | None = None
        self._auth_lock = threading.Lock()
        self._closed = threading.Event()
        self._streams: set[WatchStream] = set()
        self._streams_lock = threading.Lock()

    # -- construction ---------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # etcd is never reached through an environment proxy
        if self.options.ca_cert_file:
            session.verify = self.options.ca_cert_file
        if self.options.cert_file:
            session.cert = (self.options.cert_file, self.options.key_file)
        return session

    def _client(self, url: str, session: requests.Session | None = None) -> etcd3gw.Etcd3Client:
        parts = urlsplit(url)
        default_port = 443 if parts.scheme == "https" else 2379
        return etcd3gw.Etcd3Client(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or default_port,
            protocol=parts.scheme,
            timeout=(min(CONNECT_TIMEOUT, self.timeout), self.timeout),
            session=session or self._session(),
        )

    @property
    def where(self) -> str:
        return ", ".join(self.urls)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        self._closed.set()
        with self._streams_lock:
            streams = list(self._streams)
        for stream in streams:
            stream.close()
        for client in self._clients:
            client.session.close()

    # -- unary requests -------------------------------------------------------------

    def request(self, path: str, payload: dict, *, write: bool = False) -> dict:
        """POST ``payload`` to ``/v3/<path>`` and return the JSON reply.

        Raises DatastoreUnavailable when no endpoint answers within the timeout (after
        ``REFUSED_GRACE`` already when every endpoint refuses connections: nothing is
        listening, so waiting longer only delays the caller's own retry), when a
        write's outcome is unknown, or once closed; Compacted; EtcdError.
        """
        began = time.monotonic()
        deadline = began + self.timeout
        failures = 0
        refused_only = True
        while True:
            if self.closed:
                raise DatastoreUnavailable(f"etcd at {self.where}: the datastore connection is closed")
            index = self._current
            client = self._clients[index]
            try:
                return self._post(client, path, payload)
            except Transient as retry:
                failures += 1
                where = self.urls[index]
                if retry.sent and write:
                    raise DatastoreUnavailable(
                        f"etcd at {where}: {retry}; the write may or may not have been applied"
                    ) from None
                refused_only = refused_only and retry.refused
                self._failover(index)
                now = time.monotonic()
                grace = min(REFUSED_GRACE, self.timeout)
                if now >= deadline or (refused_only and failures >= len(self._clients) and now - began >= grace):
                    raise DatastoreUnavailable(
                        f"etcd unreachable at {self.where} (tried for {now - began:.1f}s): {where}: {retry}"
                    ) from None
                if failures % len(self._clients) == 0:
                    pause = min(0.05 * 2 ** (failures // len(self._clients)), 0.5)
                    time.sleep(min(pause, max(0.0, deadline - time.monotonic())))

    def _failover(self, index: int) -> None:
        if self._current == index and len(self._clients) > 1:
            self._current = (index + 1) % len(self._clients)
            log.info("etcd: %s failed, trying %s", self.urls[index], self.urls[self._current])

    def _post(self, client: etcd3gw.Etcd3Client, path: str, payload: dict) -> dict:
        token = self._token
        if self.options.username and token is None:
            token = self._authenticate(client)
        headers = {"Authorization": token} if token else None
        try:
            return client.post(client.get_url(path), json=payload, headers=headers)
        except gw.Etcd3Exception as exc:
            kind, message = classify(exc)
            if kind == "auth-expired":
                self.token_expired(token)
                raise Transient(message, sent=False) from None
            if kind == "compacted":
                raise Compacted(f"etcd at {client.base_url}: {message}") from None
            if kind in ("unsent", "ambiguous"):
                raise Transient(message, sent=kind == "ambiguous", refused=_refused(exc.__context__)) from None
            raise EtcdError(f"etcd at {client.base_url}: {message}") from None

    def _authenticate(self, client: etcd3gw.Etcd3Client) -> str:
        with self._auth_lock:
            if self._token is not None:
                return self._token
            body = {"name": self.options.username, "password": self.options.password}
            try:
                reply = client.post(client.get_url("/auth/authenticate"), json=body)
            except gw.Etcd3Exception as exc:
                kind, message = classify(exc)
                if kind in ("unsent", "ambiguous"):
                    raise Transient(message, sent=False, refused=_refused(exc.__context__)) from None
                raise EtcdError(
                    f"etcd at {client.base_url}: cannot log in as {self.options.username!r}: {message}"
                ) from None
            self._token = reply.get("token") or ""
            return self._token

    # -- watch streams --------------------------------------------------------------

    def open_watch(self, create_request: dict, index: int) -> WatchStream:
        """Start a watch stream on endpoint ``index``, read by a thread: connection
        errors arrive as the stream's ``end`` item, never raised here."""
        stream = WatchStream(self, index, create_request)
        with self._streams_lock:
            self._streams.add(stream)
        if self.closed:
            stream.close()
        return stream

    def _forget(self, stream: WatchStream) -> None:
        with self._streams_lock:
            self._streams.discard(stream)

    def stream_post(self, index: int, create_request: dict) -> requests.Response:
        """The streaming POST of a watch (own session, so that closing it is private)."""
        url = self.urls[index]
        client = self._client(url, self._session())
        token = self._token
        if self.options.username and token is None:
            token = self._authenticate(self._clients[index])
        headers = {"Grpc-Metadata-hasleader": "true"}  # canceled if the member loses its leader
        if token:
            headers["Authorization"] = token
        try:
            resp = client.session.post(
                client.get_url("/watch"),
                json={"create_request": create_request},
                headers=headers,
                stream=True,
                timeout=(min(CONNECT_TIMEOUT, self.timeout), None),
            )
        except requests.RequestException as exc:
            client.session.close()
            raise Transient(_short(exc), sent=False) from None
        if resp.status_code != 200:
            text = resp.text
            client.session.close()
            raise Transient(f"HTTP {resp.status_code}: {text[:200]}", sent=False)
        resp._pycalico_session = client.session  # closed with the response
        return resp

    def token_expired(self, token_used: str | None) -> None:
        """Forget the auth token (if it is still the one that failed): log in again."""
        with self._auth_lock:
            if self._token == token_used:
                self._token = None


class WatchStream:
    """One watch HTTP stream, read line by line by a daemon thread into a queue as
    ``("message", dict)`` items and, last, one ``("end", error)`` (an exception)."""

    def __init__(self, conn: Connection, index: int, create_request: dict):
        self.conn = conn
        self.index = index
        self.url = conn.urls[index]
        self.messages: queue.Queue = queue.Queue(maxsize=256)
        self._resp: requests.Response | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(create_request,), name=f"etcd-watch {self.url}", daemon=True
        )
        self._thread.start()

    def _put(self, item: tuple) -> bool:
        while not self._closed.is_set():
            try:
                self.messages.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, create_request: dict) -> None:
        error: Exception = Transient("the watch stream ended", sent=False)
        try:
            self._resp = self.conn.stream_post(self.index, create_request)
            if self._closed.is_set():
                return
            buffer = b""
            for chunk in self._resp.iter_content(chunk_size=None):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip() and not self._put(("message", json.loads(line))):
                        return
        except (Transient, DatastoreError) as exc:
            error = exc
        except Exception as exc:  # the connection broke, or close() cut it
            error = Transient(_short(exc), sent=False)
        finally:
            self._put(("end", error))
            resp = self._resp
            if resp is not None:
                resp.close()
                resp._pycalico_session.close()
            self.conn._forget(self)

    def close(self) -> None:
        """Cut the stream: the reader thread ends at once (it closes the response)."""
        self._closed.set()
        resp = self._resp
        if resp is None:
            return
        try:
            sock = socket.fromfd(resp.raw._fp.fileno(), socket.AF_INET, socket.SOCK_STREAM)
        except Exception:  # noqa: S110 - already closed
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()


def classify(exc: gw.Etcd3Exception) -> tuple[str, str]:
    """What an etcd3gw error means: (kind, message), kind one of ``unsent`` (safe to
    retry elsewhere), ``ambiguous`` (may have been applied), ``auth-expired``,
    ``compacted`` or ``fatal``."""
    detail = _detail(exc)
    message = detail.get("message") or detail.get("error") or _short(exc.__context__ or exc)
    code = detail.get("code")
    if code == UNAUTHENTICATED and "invalid auth token" in message:
        return "auth-expired", message
    if code == OUT_OF_RANGE and "compacted" in message:
        return "compacted", message
    if isinstance(exc, (gw.ConnectionFailedError, gw.ConnectionTimeoutError, gw.InternalServerError)):
        cause = exc.__context__
        if isinstance(cause, requests.exceptions.SSLError):
            return "fatal", _short(cause)  # a certificate problem does not fix itself
        if isinstance(cause, requests.exceptions.ConnectTimeout):
            return "unsent", message
        if _refused(cause):
            return "unsent", message
        if "no leader" in message or "not capable" in message:
            return "unsent", message
        return "ambiguous", message
    if code == UNAVAILABLE:
        return ("unsent" if "no leader" in message else "ambiguous"), message
    return "fatal", message


def _detail(exc: gw.Etcd3Exception) -> dict:
    text = exc.detail_text
    if not text:
        return {}
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return {"message": str(text)[:300]}
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        data = data["error"]
    return data if isinstance(data, dict) else {}


def _refused(exc: BaseException | None) -> bool:
    """Whether the connection itself could not be made (nothing was sent)."""
    if not isinstance(exc, requests.exceptions.ConnectionError) or isinstance(exc, requests.exceptions.SSLError):
        return False
    text = str(exc)
    return any(s in text for s in ("Connection refused", "NewConnectionError", "Failed to establish a new connection"))


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "timed out waiting for a reply"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error: {text[:200]}"
    return text[:300] or type(exc).__name__
