"""What one reconcile pass saw and did, for logs, observers and metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

Reason = Literal["sync", "update", "resync", "config"]


@attrs.frozen
class PassReport:
    number: int
    reason: Reason
    revision: Any
    started: float  # time.time() when the pass began
    duration: float  # seconds
    changes: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)  # slot -> lines
    errors: Mapping[str, str] = attrs.field(factory=dict)  # slot -> message
    timings: Mapping[str, float] = attrs.field(factory=dict)  # slot -> seconds its step took

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> int:
        return sum(len(lines) for lines in self.changes.values())

    def summary(self) -> str:
        parts = [f"pass {self.number} ({self.reason}) at revision {self.revision}: {self.changed} change(s)"]
        parts += [f"{slot} failed: {msg}" for slot, msg in self.errors.items()]
        return "; ".join(parts) + f" in {self.duration * 1000:.1f} ms"
