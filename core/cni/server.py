"""The node agent's side of the CNI fast path: a unix socket that serves the requests
the ``calico`` executable hands over.

``serve(config, datastore, socket_path, stop_event)`` runs until ``stop_event`` is set;
calico-node runs it in a thread, next to its reconcile loop, in the node's network
namespace (the host side of every veth is made there; the container's namespace is
joined per request from the CNI_NETNS path the runtime gave). Each connection is one
request, served in its own thread:

    client -> b"PYCALICO-CNI 1 <plugin> <n>\n" + <environment, n bytes> + <netconf>
              (then shuts down its sending side)
    server -> b"<exit code> <n>\n" + <stdout, n bytes> + <stderr>

(see ``main`` for the encoding).

Requests whose netconf names this node's datastore (``calico_config`` pointing at the
same ``[datastore]``, or the same Calico datastore keys) use the agent's open
connection; others get their own, kept for later requests.

For tests and for running beside a lab node: ``python -m pycalico.core.cni.server
--config calico.toml --socket PATH``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from .handler import Handler, Stores
from .main import decode_request, encode_reply, unix_path
from .spec import GENERIC, CniError

log = logging.getLogger("pycalico.cni.server")

MAX_REQUEST = 16 * 1024 * 1024
MAX_IN_FLIGHT = 256
CACHE_SECONDS = 2.0  # how long the agent trusts what rarely changes (readiness, Profile, pools)


def _read_all(conn: socket.socket) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_REQUEST:
            raise ValueError(f"request larger than {MAX_REQUEST} bytes")
        chunks.append(chunk)


class Server:
    """The listening socket and its worker threads (``serve`` is the usual way in)."""

    def __init__(self, handler: Handler, socket_path: str | os.PathLike):
        self.handler = handler
        self.path = str(socket_path)
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self.sock = self._listen()

    def _listen(self) -> socket.socket:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        address, fd = unix_path(self.path)
        try:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(address)
                raise OSError(f"another agent is already listening on {self.path}")
            except (FileNotFoundError, ConnectionRefusedError):
                pass  # nobody there: a stale file from an agent that died is replaced
            finally:
                probe.close()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(address)
        finally:
            if fd is not None:
                os.close(fd)
        os.chmod(self.path, 0o600)
        sock.listen(512)
        sock.settimeout(0.2)
        return sock

    def run(self, stop: threading.Event) -> None:
        log.info("CNI agent listening on %s", self.path)
        try:
            while not stop.is_set():
                try:
                    conn, _ = self.sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if stop.is_set():
                        break
                    raise
                self._slots.acquire()
                t = threading.Thread(target=self._serve_one, args=(conn,), name="cni-request", daemon=True)
                with self._lock:
                    self._threads.add(t)
                t.start()
        finally:
            self.close()

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30.0)
            try:
                plugin, env, stdin = decode_request(_read_all(conn))
                if plugin not in ("calico", "calico-ipam"):
                    raise ValueError(f"unknown plugin {plugin!r}")
            except (ValueError, OSError) as exc:
                reply = encode_reply(1, json.dumps(CniError(GENERIC, f"bad request to the agent: {exc}").to_dict())
                                     + "\n", "")
            else:
                conn.settimeout(None)
                answer = self.handler.handle(plugin, env, stdin)
                reply = encode_reply(answer.code, answer.stdout, answer.stderr)
            try:
                conn.sendall(reply)
            except OSError:
                pass  # the executable was killed; the work is done anyway
        finally:
            conn.close()
            with self._lock:
                self._threads.discard(threading.current_thread())
            self._slots.release()

    def close(self, wait: float = 30.0) -> None:
        try:
            self.sock.close()
        finally:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        with self._lock:
            running = list(self._threads)
        for t in running:
            t.join(wait)


def serve(config, datastore, socket_path: str | os.PathLike, stop_event: threading.Event,
          ready: threading.Event | None = None) -> None:
    """Serve CNI requests on ``socket_path`` until ``stop_event`` is set. ``config`` is
    the node's calico.toml (its datastore slot tells which requests may use
    ``datastore``); ``ready`` is set once the socket accepts connections."""
    stores = Stores()
    stores.seed(config, datastore)
    handler = Handler(stores, cache_seconds=CACHE_SECONDS)
    server = Server(handler, socket_path)
    if ready is not None:
        ready.set()
    try:
        server.run(stop_event)
    finally:
        handler.close()  # its netlink socket, and the connections it opened itself; the agent's stays open


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pycalico.core.cni.server",
                                     description="serve the calico CNI executable's requests on a unix socket")
    parser.add_argument("--config", required=True, help="the node's calico.toml")
    parser.add_argument("--socket", required=True, help="unix socket path")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s [%(levelname)s] cni-agent %(name)s: %(message)s")
    from pycalico.core import config as cfg
    from pycalico.core.plugins import Plugins

    try:
        config = cfg.read(args.config)
        plugins = Plugins.load(config, args.config, configure=False, slots=("datastore",))
        datastore = plugins.datastore()
    except Exception as exc:
        print(f"cni-agent: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve(config, datastore, args.socket, stop)
    finally:
        datastore.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
