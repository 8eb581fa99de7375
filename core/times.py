"""Timestamps as Calico and Kubernetes write them: RFC 3339, UTC, whole seconds
(Go's ``time.RFC3339`` of a UTC time)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def rfc3339(moment: float | None = None) -> str:
    """``moment`` (Unix seconds, now by default) as ``2026-11-28T22:02:30Z``; a
    fraction of a second is dropped."""
    return datetime.fromtimestamp(time.time() if moment is None else moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
