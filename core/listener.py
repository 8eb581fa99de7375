"""A small HTTP listener for the daemons' probe and metrics endpoints.

Each listener serves a fixed set of GET paths from its own thread; a path's handler
is called per request and returns the whole response, so what it reports is read at
request time. No new dependency: the standard library's threading HTTP server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attrs

from pycalico.core.config import Endpoint

log = logging.getLogger(__name__)


@attrs.frozen
class Response:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[], Response]


class Listener:
    """``routes`` (path -> handler) served on ``host:port`` until ``close()``.

    Binding happens in the constructor, so a port in use fails there (OSError).
    """

    def __init__(self, endpoint: Endpoint, routes: Mapping[str, Handler], name: str):
        self.endpoint = endpoint
        self.name = name
        routes = dict(routes)

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the http.server API's name
                handler = routes.get(self.path.split("?", 1)[0])
                if handler is None:
                    reply = Response(404, f"no such path: {self.path}\n")
                else:
                    try:
                        reply = handler()
                    except Exception as exc:  # a broken handler must not kill the listener
                        log.exception("%s %s failed", name, self.path)
                        reply = Response(500, f"{type(exc).__name__}: {exc}\n")
                body = reply.body.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                # Probes arrive every few seconds: per-request lines only at debug.
                log.debug("%s: %s", name, format % args)

        self._server = ThreadingHTTPServer((endpoint.host, endpoint.port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)
        self._thread.start()
        log.info("%s listening on %s:%d", name, endpoint.host, self.port)

    @property
    def port(self) -> int:
        """The bound port (the configured one)."""
        return self._server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class Listeners:
    """The listeners one configuration asks for, by name; ``apply`` rebinds only those
    whose endpoint changed, so a config reload that leaves [health] alone keeps the
    health port answering throughout."""

    def __init__(self) -> None:
        self._running: dict[str, Listener] = {}

    def apply(self, wanted: Mapping[str, tuple[Endpoint, Mapping[str, Handler]]]) -> None:
        """``wanted``: name -> (endpoint, routes); a disabled endpoint is closed. A
        port that cannot be bound is logged and left closed: the agent's dataplane
        matters more than its probes."""
        for name in list(self._running):
            endpoint = wanted.get(name, (None, None))[0]
            if endpoint is None or not endpoint.enabled or endpoint != self._running[name].endpoint:
                self._running.pop(name).close()
        for name, (endpoint, routes) in wanted.items():
            if endpoint.enabled and name not in self._running:
                try:
                    self._running[name] = Listener(endpoint, routes, name)
                except OSError as exc:
                    log.error("%s cannot listen on %s:%d: %s", name, endpoint.host, endpoint.port, exc)

    def get(self, name: str) -> Listener | None:
        return self._running.get(name)

    def close(self) -> None:
        self.apply({})
