"""The hook contract: ``hookimpl`` marks a plugin's implementations, ``spec`` holds
the specifications (their docstrings are the contract)."""

import pluggy

hookimpl = pluggy.HookimplMarker("pycalico")

__all__ = ["hookimpl"]
