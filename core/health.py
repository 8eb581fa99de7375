"""calico-node's health, as Felix serves it on ``[health]`` (default localhost:9099).

``/liveness`` and ``/readiness`` answer 200 when good and 503 when not
(``libcalico-go/lib/health/health.go``: Kubernetes reads 200..399 as good). A 503 body
says why, one reason per line; a 200 body is ``live`` or ``ready``.

The agent is live while its reconcile loop thread runs and has ticked within
``LIVENESS_TIMEOUT`` (Felix's ``DataplaneWatchdogTimeout``, 90 s: a pass stuck in the
kernel that long is a dead agent). It is ready once the first sync has been applied,
and then for as long as the last pass applied without errors, the datastore answers,
no refused calico.toml is pending and every plugin says it is ready
(``pycalico_readiness``: BGP up in bird mode, as ``calico-node -bird-ready`` checks).

``probe`` is the client side: ``calico-node --felix-ready`` and friends, the exec
probes Calico's manifests give the kubelet.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Mapping, Sequence

from pycalico.core.config import Endpoint
from pycalico.core.listener import Handler, Response
from pycalico.core.report import PassReport

LIVENESS_TIMEOUT = 90.0
TICK_SECONDS = 1.0  # the loop wakes at least this often, to show it is alive


def answer(quality: str, reasons: Sequence[str]) -> Response:
    """The response of a probe: 200 ``quality``, or 503 with one reason per line."""
    if reasons:
        return Response(503, "".join(f"{reason}\n" for reason in reasons))
    return Response(200, f"{quality}\n")


def routes(liveness: Callable[[], list[str]], readiness: Callable[[], list[str]],
           status: Callable[[], list[str]] | None = None) -> Mapping[str, Handler]:
    """The health listener's paths; ``liveness`` and ``readiness`` return the reasons
    it is not so, ``status`` the plugins' status lines (``/status``, pycalico's own)."""
    paths = {
        "/liveness": lambda: answer("live", liveness()),
        "/readiness": lambda: answer("ready", readiness()),
    }
    if status is not None:
        paths["/status"] = lambda: status_answer(readiness(), status())
    return paths


def status_answer(reasons: Sequence[str], lines: Sequence[str]) -> Response:
    """``/status``: readiness as ``/readiness`` judges it (``ready``, or one ``not ready:``
    line per reason), then the plugins' status lines; 200 when ready, else 503."""
    head = [f"not ready: {reason}" for reason in reasons] or ["ready"]
    return Response(503 if reasons else 200, "".join(f"{line}\n" for line in [*head, *lines]))


def liveness_reasons(running: bool, since_tick: float, timeout: float = LIVENESS_TIMEOUT) -> list[str]:
    """Why the agent is not live: its loop thread ended, or has not ticked for
    ``since_tick`` seconds (more than ``timeout``)."""
    if not running:
        return ["reconcile loop is not running"]
    if since_tick > timeout:
        return [f"reconcile loop has not ticked for {since_tick:.0f}s (timeout {timeout:.0f}s)"]
    return []


def readiness_reasons(
    synced: bool,
    report: PassReport | None,
    datastore_error: str | None,
    config_error: str | None,
    plugin_reasons: Sequence[str],
) -> list[str]:
    """Why the agent is not ready, in the order an operator should look at them.

    ``synced``: the first snapshot arrived; ``report``: the last pass (None before the
    first); ``datastore_error``: why the sync is failing now (None when it is
    following the datastore); ``config_error``: the refusal of the calico.toml on disk
    (``ConfigError`` text, one ``path: field: problem`` per line), None when the file
    in force is the one on disk.
    """
    reasons = []
    if datastore_error is not None:
        reasons.append(f"datastore unavailable: {datastore_error}")
    if not synced:
        reasons.append("waiting for the first datastore sync")
    elif report is None:
        reasons.append("first sync not yet applied")
    elif report.errors:
        reasons += [f"{slot} reconcile failed: {message}" for slot, message in report.errors.items()]
    if config_error:
        reasons += [f"config refused: {line}" for line in config_error.splitlines()]
    reasons += plugin_reasons
    return reasons


def get(endpoint: Endpoint, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``path`` from the health listener at ``endpoint``: its status and body;
    OSError when it does not answer."""
    connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, reply.read().decode(errors="replace").strip()
    finally:
        connection.close()


def probe(endpoint: Endpoint, path: str, timeout: float = 5.0) -> str | None:
    """GET ``path`` from the health listener at ``endpoint``; None when it answers
    200..399, else why not (the listener's reasons, joined)."""
    try:
        status, body = get(endpoint, path, timeout)
    except OSError as exc:
        return f"{exc.strerror or exc}"
    if 200 <= status < 400:
        return None
    return f"{path.lstrip('/')} probe reporting {status}" + (f": {'; '.join(body.splitlines())}" if body else "")
