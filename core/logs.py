"""Logging as calico.toml's [logging] table sets it: level, text or JSON, file or stderr."""

from __future__ import annotations

import json
import logging
import sys

from pycalico.core.config import Logging


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "component": _component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


_component = "pycalico"


def setup(settings: Logging, component: str | None = None) -> None:
    """Log as ``settings`` say; ``component`` (the executable's name) is remembered, so a
    config reload can call this again with the new settings alone."""
    global _component
    component = _component = component or _component
    handler = logging.FileHandler(settings.file) if settings.file else logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s [%(levelname)s] {component} %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    # watchfiles reports every file event in calico.toml's directory at info; the loop
    # logs the reloads that matter itself.
    logging.getLogger("watchfiles").setLevel(max(root.level, logging.WARNING))
