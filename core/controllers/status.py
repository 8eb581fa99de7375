"""calico-kube-controllers' health: Calico's status file and its ``check-status`` probe
(``kube-controllers/pkg/status/status.go``, ``cmd/check-status/main.go``).

The controllers write ``/status/status.json`` (``--status-file``) whenever a readiness
condition changes: ``{"Readiness": {"<key>": {"Ready": bool, "Reason": "..."}}}``. Keys
are Calico's ``Startup``, ``CalicoDatastore`` and ``KubeAPIServer``, plus
``KubeControllersConfiguration`` (false while the resource has a bad field, the reason
naming it). The Deployment's exec probes run ``check-status -r`` (readiness) and
``check-status -l`` (liveness): both print ``Ready`` and exit 0 when every condition is
ready, else print the reasons joined by ``; `` and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
from pathlib import Path

DEFAULT_STATUS_FILE = "/status/status.json"
STARTUP, DATASTORE, APISERVER, CONFIG = "Startup", "CalicoDatastore", "KubeAPIServer", "KubeControllersConfiguration"


class Status:
    """The readiness conditions, written to ``path`` on every change."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.readiness: dict[str, dict] = {}

    def set_ready(self, key: str, ready: bool, reason: str = "") -> None:
        with self._lock:
            entry = {"Ready": ready, "Reason": reason}
            if self.readiness.get(key) == entry:
                return
            self.readiness[key] = entry
            self._write()

    def ready(self) -> bool:
        """Every condition ready (none set yet: not ready)."""
        with self._lock:
            return is_ready(self.readiness)

    def _write(self) -> None:
        # Written whole and renamed into place, so a probe never reads half a file.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".status-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"Readiness": self.readiness}, f, separators=(",", ":"))
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def is_ready(readiness: dict) -> bool:
    return bool(readiness) and all(c.get("Ready") for c in readiness.values())


def not_ready_reasons(readiness: dict) -> str:
    return "; ".join(c.get("Reason", "") for c in readiness.values() if not c.get("Ready"))


def check_main(argv: list[str] | None = None) -> int:
    """``check-status``: the exec probe of the status file."""
    from pycalico.core.ctl.version import client_version

    parser = argparse.ArgumentParser(prog="check-status", add_help=True)
    parser.add_argument("-v", "--version", action="store_true", help="Display version")
    parser.add_argument("-f", "--file", default=DEFAULT_STATUS_FILE, help="File to read with status information")
    parser.add_argument("-r", "--ready", action="store_true", help="Check readiness")
    parser.add_argument("-l", "--live", action="store_true", help="Check liveness")
    args = parser.parse_args(argv)
    if args.version:
        print(client_version())
        return 0
    if not (args.ready or args.live):
        print("No command specified to check-status")
        return 1
    try:
        readiness = json.loads(Path(args.file).read_text()).get("Readiness") or {}
    except (OSError, ValueError) as exc:
        print(f"Failed to read status file {args.file}: {exc}")
        return 1
    if is_ready(readiness):
        print("Ready")
        return 0
    print(not_ready_reasons(readiness))
    return 1
