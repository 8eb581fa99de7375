"""What a benchmark prints about the machine it ran on, beside its figures."""

from __future__ import annotations

import os


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"
